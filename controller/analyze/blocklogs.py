"""Traces -> BlockLog: who joins a block log (membership) and what it says (status).

The join is split in two because its halves are written by different
parties. Membership (`spec`) is a set of trace ids kept by whoever reduced a
trace, with `membership_add`/`membership_remove` applied under
resourceVersion CAS; any order of adds converges to the same spec. The status
is then a pure function of that spec and the member traces' specs, so it can
be recomputed at any time from what is stored (foyle-logs.md section 3).

Member order is (startTime, id): RFC 3339 strings of one fixed format sort
as text, and the id breaks ties, so "the latest execution" is never left to
chance (Foyle gave RunMe traces time zero and picked one at random).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.analyze.blocks import normalise_block
from controller.analyze.traces import EXECUTE, GENERATE, LOG_EVENT, RUNME
from controller.api.resource import get_path

_MEMBER_FIELDS = {EXECUTE: "execTraceIds", RUNME: "execTraceIds", LOG_EVENT: "eventIds"}
_SUGGESTION = {"ACCEPTED": "Accepted", "REJECTED": "Rejected"}


def _copy(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    out["execTraceIds"] = list(spec.get("execTraceIds", []))
    out["eventIds"] = list(spec.get("eventIds", []))
    return out


def membership_add(
    spec: dict[str, Any] | None,
    block_id: str,
    trace_spec: dict[str, Any],
    start_of: Callable[[str], str | None],
) -> dict[str, Any]:
    """The spec with the trace joined; `start_of(id)` gives another member's startTime."""
    out = _copy(spec or {"id": block_id})
    trace_id = trace_spec["id"]

    def order(member: str) -> tuple[str, str]:
        start = trace_spec.get("startTime") if member == trace_id else start_of(member)
        return (start or "", member)

    kind = trace_spec.get("kind")
    if kind == GENERATE:
        current = out.get("genTraceId")
        out["genTraceId"] = max([trace_id, current] if current else [trace_id], key=order)
    elif kind in _MEMBER_FIELDS:
        field = _MEMBER_FIELDS[kind]
        out[field] = sorted({*out[field], trace_id}, key=order)
    return out


def membership_remove(spec: dict[str, Any], trace_id: str) -> dict[str, Any]:
    """The spec without the trace (e.g. one deleted or re-keyed)."""
    out = _copy(spec)
    if out.get("genTraceId") == trace_id:
        del out["genTraceId"]
    out["execTraceIds"] = [t for t in out["execTraceIds"] if t != trace_id]
    out["eventIds"] = [t for t in out["eventIds"] if t != trace_id]
    return out


def _order(trace: Mapping[str, Any]) -> tuple[str, str]:
    return (trace.get("startTime", ""), trace["id"])


def _event_type(trace: Mapping[str, Any]) -> Any:
    return get_path(trace, "request.eventType")


def _members(
    ids: list[str], traces: Mapping[str, dict[str, Any]], kinds: tuple[str, ...]
) -> list[dict[str, Any]]:
    return [traces[t] for t in ids if t in traces and traces[t].get("kind") in kinds]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _executed_block(trace: Mapping[str, Any], block_id: str) -> dict[str, Any] | None:
    """What the user ran, as a block; None when the execution does not say."""
    kind = trace["kind"]
    if kind == RUNME:
        request = trace.get("request")
        commands = [c for c in _list(get_path(request, "commands")) if isinstance(c, str)]
        return normalise_block(
            {
                "kind": "CODE",
                "language": get_path(request, "languageId"),
                "contents": "\n".join(commands),
                "id": block_id,
            }
        )
    block = get_path(trace, "request.block")
    if kind == EXECUTE or isinstance(block, dict):
        return normalise_block(block)
    return None


def _generation(status: dict[str, Any], gen: Mapping[str, Any], block_id: str) -> None:
    doc = get_path(gen, "request.doc")
    if isinstance(doc, dict):
        status["doc"] = {"blocks": [normalise_block(b) for b in _list(doc.get("blocks"))]}
    for block in _list(get_path(gen, "response.blocks")):
        if isinstance(block, dict) and block.get("id") == block_id:
            status["generatedBlock"] = normalise_block(block)
            break


def blocklog_status(spec: dict[str, Any], traces: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The BlockLog status from its spec and its members' Trace specs (missing ones ignored)."""
    block_id = spec["id"]
    status: dict[str, Any] = {}
    gen_ids = [spec["genTraceId"]] if spec.get("genTraceId") else []
    gens = _members(gen_ids, traces, (GENERATE,))
    if gens:
        _generation(status, gens[0], block_id)
    events = _members(_list(spec.get("eventIds")), traces, (LOG_EVENT,))
    executions = _members(_list(spec.get("execTraceIds")), traces, (EXECUTE, RUNME))
    executions += [e for e in events if _event_type(e) == "EXECUTE"]
    latest = max(executions, key=_order, default=None)
    if latest is not None:
        executed = _executed_block(latest, block_id)
        if executed is not None:
            status["executedBlock"] = executed
        if isinstance(latest.get("exitCode"), int):
            status["exitCode"] = latest["exitCode"]
    status["executions"] = len(executions)
    status["evalMode"] = any(
        bool(t.get("evalMode")) for t in [*gens, *([latest] if latest else [])]
    )
    feedback = [e for e in events if _event_type(e) in _SUGGESTION]
    last_feedback = max(feedback, key=_order, default=None)
    status["suggestionStatus"] = (
        _SUGGESTION[_event_type(last_feedback)] if last_feedback is not None else "Unknown"
    )
    return status
