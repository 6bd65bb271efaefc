"""Traces -> Session: what happened in one RunMe context, as Foyle's session builder records it.

Foyle (since v0.0.37, "Learn from all executed cells") groups its logs by the
RunMe context id into `Session`s (`app/pkg/analyze/session_builder.go`,
`protos/foyle/logs/sessions.proto`): the LogEvents of the context, its full
notebook context (the first request of a StreamGenerate stream), the token
totals of its completions and the trace ids of its Generate calls. Its learner
learns from those sessions.

Here a Session is joined from Trace resources as a BlockLog is: membership
(`spec.traceIds`, the LogEvent, Generate and Context traces whose `contextId`
is the session's) is a set written under CAS by whoever reduced a trace, and
the status is a pure function of the spec and the member traces' specs, so
any order of arrival converges to the same Session. Where Foyle's result
depended on the order it read lines, the order here is the lines' time:

* a SESSION_START resets Foyle's session (to make reprocessing idempotent),
  so only members at or after the latest SESSION_START count, and it gives
  the start time; the latest SESSION_END gives the end time;
* an event whose `eventId` (the event's own, "" included) is already in the
  session is dropped, as Foyle drops it: the earliest one stays;
* a LogEvent keeps every cell of the event, as Foyle keeps the whole event;
* the full context is the latest one;
* each Generate trace id is listed once (Foyle appended it for every line of
  the trace), ordered by start time.

A member whose Trace is settled (final, and deleted from the cluster) leaves
its contribution in the spec (`settled`, by trace id): `session_contribution`
keeps what the status reads of it (an event's fields and cells, a Generate's
token counts, the latest context), so a rejoin without its Trace gives the
same status. Once the status shows a settled event or context exactly,
`compact_settled` drops its body from the spec (marked `inStatus`) and the next
status takes it from the previous one (an event by its `eventId`, unique in
`logEvents`), so etcd holds each once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.analyze.blocks import cell_to_block
from controller.analyze.traces import CONTEXT, GENERATE, LOG_EVENT
from controller.api.resource import get_path

SESSION_KINDS = (LOG_EVENT, GENERATE, CONTEXT)

Spec = dict[str, Any]


def context_of(trace_spec: Mapping[str, Any]) -> str:
    """The context id of the Session a trace belongs to ("" for none)."""
    context_id = trace_spec.get("contextId")
    if trace_spec.get("kind") in SESSION_KINDS and isinstance(context_id, str):
        return context_id
    return ""


def membership_add(
    spec: Spec | None, context_id: str, trace_id: str, contribution: Spec | None = None
) -> Spec:
    """The spec listing the trace; `contribution` (a settled trace's) is kept in it."""
    members = set((spec or {}).get("traceIds", [])) | {trace_id}
    out: Spec = {"contextId": context_id, "traceIds": sorted(members)}
    settled = dict((spec or {}).get("settled") or {})
    if contribution is not None:
        settled[trace_id] = {k: v for k, v in contribution.items() if k not in _RESTORED}
        contexts = [t for t, c in settled.items() if c["kind"] == CONTEXT]
        if len(contexts) > 1:  # only the latest context is read
            latest = max(contexts, key=lambda t: (settled[t].get("startTime", ""), t))
            settled = {t: c for t, c in settled.items() if c["kind"] != CONTEXT or t == latest}
    if settled:
        out["settled"] = settled
    return out


def settled_member(spec: Spec, trace_id: str) -> Spec | None:
    """A settled member's contribution as `session_contribution` made it: its id is its
    key and its context the Session's, so neither is stored once per member."""
    kept = (spec.get("settled") or {}).get(trace_id)
    if kept is None:
        return None
    return {**kept, "id": trace_id, "contextId": spec.get("contextId", "")}


# What a settled member's stored contribution leaves out (settled_member restores it).
_RESTORED = ("id", "contextId")


def membership_remove(spec: Spec, trace_id: str) -> Spec:
    out = dict(spec, traceIds=[t for t in spec.get("traceIds", []) if t != trace_id])
    settled = {t: c for t, c in (spec.get("settled") or {}).items() if t != trace_id}
    if settled:
        out["settled"] = settled
    else:
        out.pop("settled", None)
    return out


_CONTRIBUTED_REQUEST = {
    LOG_EVENT: (
        "eventType",
        "selectedCellId",
        "eventId",
        "executeStatus",
        "selectedIndex",
        "cells",
    ),
    CONTEXT: ("context",),
}


def session_contribution(trace_spec: Mapping[str, Any]) -> Spec:
    """What `session_status` reads of one member trace, and no more."""
    out = {k: trace_spec[k] for k in ("id", "kind", "startTime", "contextId") if k in trace_spec}
    request = trace_spec.get("request")
    if isinstance(request, dict):
        kept = {k: request[k] for k in _CONTRIBUTED_REQUEST.get(out["kind"], ()) if k in request}
        if kept:
            out["request"] = kept
    usage = trace_spec.get("usage")
    if out["kind"] == GENERATE and isinstance(usage, dict):
        out["usage"] = {k: usage[k] for k in ("inputTokens", "outputTokens") if k in usage}
    return out


# A settled member whose event or context is in the status (compact_settled).
IN_STATUS = "inStatus"


def compact_settled(spec: Spec, status: Mapping[str, Any] | None) -> Spec:
    """The spec without the bodies of the settled events and context that `status` (the
    status of this spec) shows exactly: they are stored once, in the status, and
    `session_status` takes them from it (`previous`). The spec as it is otherwise."""
    settled = spec.get("settled") or {}
    if status is None or not settled:
        return spec
    events = {e.get("eventId"): e for e in _list(status.get("logEvents"))}
    compacted = {}
    for trace_id, stored in settled.items():
        kept = {**stored, "id": trace_id, "contextId": spec.get("contextId", "")}
        if kept.get(IN_STATUS):
            continue
        if kept["kind"] == LOG_EVENT:
            shown = events.get(get_path(kept, "request.eventId") or "") == _log_event(kept)
            essentials = {"eventId", "eventType"}
        elif kept["kind"] == CONTEXT:
            shown = status.get("fullContext") == _full_context(kept)
            essentials = set()
        else:
            continue
        if shown:
            request = {k: v for k, v in (kept.get("request") or {}).items() if k in essentials}
            compacted[trace_id] = {
                **{k: v for k, v in stored.items() if k not in ("request", *_RESTORED)},
                **({"request": request} if request else {}),
                IN_STATUS: True,
            }
    if not compacted:
        return spec
    return {**spec, "settled": {**settled, **compacted}}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _order(trace: Mapping[str, Any]) -> tuple[str, str]:
    return (trace.get("startTime", ""), trace["id"])


def _event_type(trace: Mapping[str, Any]) -> str:
    value = get_path(trace, "request.eventType")
    return value if isinstance(value, str) else ""


def _log_event(trace: Mapping[str, Any]) -> dict[str, Any]:
    """Foyle's LogEvent, camelCase, with every cell of the event."""
    request = trace.get("request") or {}
    event: dict[str, Any] = {
        "type": _event_type(trace),
        "selectedId": request.get("selectedCellId", ""),
        "contextId": trace.get("contextId", ""),
        "eventId": request.get("eventId", ""),
        "executeStatus": request.get("executeStatus") or "UNKNOWN",
        "time": trace.get("startTime", ""),
    }
    if isinstance(request.get("selectedIndex"), int):
        event["selectedIndex"] = request["selectedIndex"]
    if isinstance(request.get("cells"), list):
        event["cells"] = request["cells"]
    return event


def _first_of_each_event_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Foyle's updateSessionFromEvent appends an event only when its id is new."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event["eventId"] not in seen:
            seen.add(event["eventId"])
            kept.append(event)
    return kept


def _full_context(trace: Mapping[str, Any]) -> dict[str, Any]:
    context = get_path(trace, "request.context")
    context = context if isinstance(context, dict) else {}
    cells = get_path(context, "notebook.cells")
    out: dict[str, Any] = {}
    if isinstance(context.get("notebook"), dict):
        blocks = [cell_to_block(c) for c in cells if isinstance(c, dict)]
        out["notebook"] = {"blocks": blocks} if isinstance(cells, list) else {"blocks": []}
    selected = context.get("selected")
    out["selected"] = selected if type(selected) is int else 0
    uri = context.get("notebookUri", context.get("notebook_uri"))
    if isinstance(uri, str) and uri:
        out["notebookUri"] = uri
    return out


def session_status(
    spec: Spec,
    traces: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Session status from its spec and its members' Trace specs (missing ones ignored);
    a settled member's contribution stands in for its Trace. `previous` is the stored
    status, which a compacted settled member (`compact_settled`) is read from: a
    ValueError without it, rather than a status without them."""
    settled = spec.get("settled") or {}
    if previous is None and any(c.get(IN_STATUS) for c in settled.values()):
        raise ValueError(f"session {spec.get('contextId')}: settled members are in the status")
    shown = {e.get("eventId"): e for e in _list((previous or {}).get("logEvents"))}
    found = (settled_member(spec, t) or traces.get(t) for t in spec.get("traceIds", []))
    members = sorted((m for m in found if m is not None), key=_order)
    starts = [t for t in members if t["kind"] == LOG_EVENT and _event_type(t) == "SESSION_START"]
    status: dict[str, Any] = {}
    if starts:
        status["startTime"] = starts[-1].get("startTime", "")
        members = [t for t in members if _order(t) >= _order(starts[-1])]
    events = _first_of_each_event_id(
        [_shown_event(t, shown) for t in members if t["kind"] == LOG_EVENT]
    )
    ends = [e for e in events if e["type"] == "SESSION_END"]
    if ends:
        status["endTime"] = ends[-1]["time"]
    status["logEvents"] = events
    contexts = [t for t in members if t["kind"] == CONTEXT]
    if contexts and contexts[-1].get(IN_STATUS):
        if "fullContext" in (previous or {}):
            status["fullContext"] = (previous or {})["fullContext"]
    elif contexts:
        status["fullContext"] = _full_context(contexts[-1])
    generates = [t for t in members if t["kind"] == GENERATE]
    status["totalInputTokens"] = sum(_tokens(t, "inputTokens") for t in generates)
    status["totalOutputTokens"] = sum(_tokens(t, "outputTokens") for t in generates)
    status["generateTraceIds"] = [t["id"] for t in generates]
    return status


def _shown_event(member: Mapping[str, Any], shown: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """A member's LogEvent: a compacted one's from the previous status (by its eventId and
    time), else from what the member keeps."""
    event = _log_event(member)
    if member.get(IN_STATUS):
        found = shown.get(event["eventId"])
        if found is not None and found.get("time") == event["time"]:
            return found
    return event


def _tokens(trace: Mapping[str, Any], key: str) -> int:
    value = get_path(trace, f"usage.{key}")
    return value if type(value) is int else 0


def sessions_of(trace_specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every Session (context id -> {spec, status}) the traces make: the one-shot reference."""
    by_id = {t["id"]: t for t in trace_specs}
    specs: dict[str, Spec] = {}
    for trace in trace_specs:
        context_id = context_of(trace)
        if context_id:
            specs[context_id] = membership_add(specs.get(context_id), context_id, trace["id"])
    return {c: {"spec": s, "status": session_status(s, by_id)} for c, s in specs.items()}
