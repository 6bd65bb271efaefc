"""Traces -> BlockLog: who joins a block log (membership) and what it says (status).

The join is split in two because its halves are written by different
parties. Membership (`spec`) is a set of trace ids kept by whoever reduced a
trace, with `membership_add`/`membership_remove` applied under
resourceVersion CAS; any order of adds converges to the same spec. The status
is then a pure function of that spec and the member traces' specs, so it can
be recomputed at any time from what is stored (foyle-logs.md section 3).

A member whose Trace is settled (final, and deleted from the cluster: the kube
store keeps only what users look at) leaves its contribution in the spec
(`settled`, by trace id): `blocklog_contribution` keeps exactly what the status
reads of it, and only for the members that can still decide the status (the
generation, the latest execution, the latest feedback), so a rejoin without its
Trace gives the same status. The status already shows the generation's notebook
and suggestion (`doc`, `generatedBlock`), the bulk of a BlockLog: once it does,
`compact_settled` drops them from the settled generation (marked `inStatus`) and
the next status takes them from the previous one, so etcd holds them once.

Member order is (startTime, id): RFC 3339 strings of one fixed format sort
as text, and the id breaks ties, so "the latest execution" is never left to
chance (Foyle gave RunMe traces time zero and picked one at random).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.analyze.blocks import normalise_block
from controller.analyze.traces import EXECUTE, GENERATE, LOG_EVENT, RUNME
from controller.api.resource import get_path

# A block run thousands of times must stay a small object (and under the API server's
# size limit): the spec lists the latest executions and events only, and counts the rest.
MAX_LISTED = 20
_SUGGESTION = {"ACCEPTED": "Accepted", "REJECTED": "Rejected"}


def _copy(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    out["execTraceIds"] = list(spec.get("execTraceIds", []))
    out["eventIds"] = list(spec.get("eventIds", []))
    out["startTimes"] = dict(spec.get("startTimes", {}))
    out["olderExecutions"] = int(spec.get("olderExecutions", 0))
    if "settled" in spec:
        out["settled"] = dict(spec["settled"])
    return out


def _member_field(trace_spec: Mapping[str, Any]) -> str | None:
    """Where a trace is listed: an execution (Execute, RunMe, an EXECUTE event) or an event."""
    kind = trace_spec.get("kind")
    if kind in (EXECUTE, RUNME):
        return "execTraceIds"
    if kind == LOG_EVENT:
        return "execTraceIds" if _event_type(trace_spec) == "EXECUTE" else "eventIds"
    return None


def membership_add(
    spec: dict[str, Any] | None,
    block_id: str,
    trace_spec: dict[str, Any],
    *,
    listed_before: bool = False,
    settled: bool = False,
) -> dict[str, Any]:
    """The spec with the trace joined; any order of adds gives the same spec.

    Members are ordered by (startTime, id), with their start times kept in the spec
    so no other trace is read. Only the latest MAX_LISTED executions and events are
    listed; an execution pushed out is counted in `olderExecutions`. `listed_before`
    says the trace named this block already (its stored Trace did): if it is not
    listed now while the list is full and older executions are counted, it was
    pushed out and is counted, so adding it again changes nothing. (A BlockLog
    that lost its members, e.g. a store rebuilt, takes the trace back.)
    `settled`: the trace's Trace goes away, so its contribution is kept in the spec.
    """
    out = _join(spec, block_id, trace_spec, listed_before=listed_before)
    if settled:
        kept = blocklog_contribution(block_id, trace_spec)
        out.setdefault("settled", {})[trace_spec["id"]] = {
            k: v for k, v in kept.items() if k not in _RESTORED
        }
    if out.get("settled"):
        _prune_settled(out)
    return out


def _join(
    spec: dict[str, Any] | None, block_id: str, trace_spec: dict[str, Any], *, listed_before: bool
) -> dict[str, Any]:
    out = _copy(spec or {"id": block_id})
    trace_id, start = trace_spec["id"], trace_spec.get("startTime") or ""
    starts = out["startTimes"]

    def order(member: str) -> tuple[str, str]:
        return (start if member == trace_id else starts.get(member, ""), member)

    if trace_spec.get("kind") == GENERATE:
        current = out.get("genTraceId")
        winner = max([trace_id, current] if current else [trace_id], key=order)
        if current and current != winner:
            starts.pop(current, None)
        if winner == trace_id:
            out["genTraceId"], starts[trace_id] = trace_id, start
        return out
    field = _member_field(trace_spec)
    if field is None:
        return out
    members = out[field]
    pushed_out = listed_before and field == "execTraceIds" and out["olderExecutions"] > 0
    if trace_id not in members and pushed_out and len(members) >= MAX_LISTED:
        return out
    members = sorted({*members, trace_id}, key=order)
    starts[trace_id] = start
    while len(members) > MAX_LISTED:
        dropped = members.pop(0)
        starts.pop(dropped, None)
        if field == "execTraceIds":
            out["olderExecutions"] += 1
    out[field] = members
    return out


def membership_remove(spec: dict[str, Any], trace_id: str) -> dict[str, Any]:
    """The spec without a trace that no longer names the block (listed or counted)."""
    out = _copy(spec)
    if out.get("genTraceId") == trace_id:
        del out["genTraceId"]
    elif trace_id in out["execTraceIds"]:
        out["execTraceIds"].remove(trace_id)
    elif trace_id in out["eventIds"]:
        out["eventIds"].remove(trace_id)
    elif out["olderExecutions"] > 0:
        out["olderExecutions"] -= 1  # pushed out of the list, still counted
    out["startTimes"].pop(trace_id, None)
    if out.get("settled", {}).pop(trace_id, None) is not None and not out["settled"]:
        del out["settled"]
    return out


def blocklog_contribution(block_id: str, trace_spec: Mapping[str, Any]) -> dict[str, Any]:
    """What `blocklog_status` reads of one member trace for this block, and no more: a
    Generate trace's doc and this block's suggestion, an execution's block (or RunMe's
    commands), an event's type; times, exit code and eval mode."""
    out = {k: trace_spec[k] for k in _CONTRIBUTED_FIELDS if k in trace_spec}
    request = trace_spec.get("request")
    if isinstance(request, dict):
        kept = {k: request[k] for k in _CONTRIBUTED_REQUEST.get(out["kind"], ()) if k in request}
        if kept:
            out["request"] = kept
    if out["kind"] == GENERATE:
        suggested = _generation(trace_spec, {})[1].get(block_id)
        if suggested is not None:
            out["response"] = {"blocks": [suggested]}
    return out


def settled_member(spec: Mapping[str, Any], trace_id: str) -> dict[str, Any] | None:
    """A settled member's contribution as `blocklog_contribution` made it: its id is its
    key and its start time in `startTimes`, so neither is stored twice."""
    kept = (spec.get("settled") or {}).get(trace_id)
    if kept is None:
        return None
    start = (spec.get("startTimes") or {}).get(trace_id, kept.get("startTime"))
    return {**kept, "id": trace_id, **({"startTime": start} if start is not None else {})}


# What a settled member's stored contribution leaves out (settled_member restores it).
_RESTORED = ("id", "startTime")


def compact_settled(spec: dict[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec without its settled generation's notebook and suggestion when `status`
    (the status of this spec) shows exactly those: they are then stored once, in the
    status, and `blocklog_status` takes them from it (`previous`). The spec as it is
    when the status does not show them yet (a BlockLog just created)."""
    gen_id = spec.get("genTraceId")
    kept = settled_member(spec, gen_id) if isinstance(gen_id, str) else None
    if kept is None or kept.get(IN_STATUS) or status is None:
        return spec
    doc, blocks = _generation(kept, {})
    suggested = blocks.get(spec["id"])
    shown = (status.get("doc"), status.get("generatedBlock"))
    if shown != (doc, None if suggested is None else normalise_block(suggested)):
        return spec
    out = _copy(spec)
    out["settled"][gen_id] = {
        **{k: v for k, v in kept.items() if k not in ("request", "response", *_RESTORED)},
        IN_STATUS: True,
    }
    return out


# A settled generation whose notebook and suggestion are in the status (compact_settled).
IN_STATUS = "inStatus"
_FROM_STATUS = ("doc", "generatedBlock")
_CONTRIBUTED_FIELDS = ("id", "kind", "startTime", "evalMode", "exitCode")
_CONTRIBUTED_REQUEST = {
    GENERATE: ("doc",),
    EXECUTE: ("block",),
    RUNME: ("commands", "languageId"),
    LOG_EVENT: ("eventType", "block"),
}


def _prune_settled(spec: dict[str, Any]) -> None:
    """Keep the settled contributions that can still decide the status: the generation's,
    the latest listed execution's and the latest feedback event's (the rest only count)."""
    settled = spec["settled"]

    def latest(ids: list[str], wanted: Any = lambda _: True) -> list[str]:
        found = [t for t in ids if t in settled and wanted(settled[t])]
        return [max(found, key=lambda t: (spec["startTimes"].get(t, ""), t))] if found else []

    keep = {spec["genTraceId"]} if spec.get("genTraceId") in settled else set()
    keep.update(latest(spec["execTraceIds"]))
    keep.update(latest(spec["eventIds"], lambda c: _event_type(c) in _SUGGESTION))
    spec["settled"] = {t: c for t, c in settled.items() if t in keep}
    if not spec["settled"]:
        del spec["settled"]


def member_ids(spec: Mapping[str, Any]) -> list[str]:
    """Every trace a BlockLog spec lists (the traces its status is derived from)."""
    ids = [spec["genTraceId"]] if spec.get("genTraceId") else []
    return ids + list(spec.get("execTraceIds", [])) + list(spec.get("eventIds", []))


def _order(trace: Mapping[str, Any]) -> tuple[str, str]:
    return (trace.get("startTime", ""), trace["id"])


def _event_type(trace: Mapping[str, Any]) -> Any:
    return get_path(trace, "request.eventType")


def _members(
    ids: list[str],
    traces: Mapping[str, dict[str, Any]],
    kinds: tuple[str, ...],
    spec: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The members' specs: a settled contribution, else the Trace's (missing ones left out)."""
    found = (settled_member(spec, t) or traces.get(t) for t in ids)
    return [m for m in found if m is not None and m.get("kind") in kinds]


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


Generation = tuple[dict[str, Any] | None, dict[str, Any]]  # (normalised doc, blocks by id)


def _generation(gen: Mapping[str, Any], cache: dict[str, Generation]) -> Generation:
    """A Generate trace's doc and response blocks by id, worked out once per trace.

    All the blocks of one suggestion share it: without the cache, each of a
    10,000-block response would normalise the doc and scan the response again.
    """
    found = cache.get(gen["id"])
    if found is None:
        doc = get_path(gen, "request.doc")
        normalised = (
            {"blocks": [normalise_block(b) for b in _list(doc.get("blocks"))]}
            if isinstance(doc, dict)
            else None
        )
        blocks: dict[str, Any] = {}
        for block in _list(get_path(gen, "response.blocks")):
            if isinstance(block, dict) and isinstance(block.get("id"), str):
                blocks.setdefault(block["id"], block)  # the first block with the id
        found = cache[gen["id"]] = (normalised, blocks)
    return found


def blocklog_status(
    spec: dict[str, Any],
    traces: Mapping[str, dict[str, Any]],
    generations: dict[str, Generation] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The BlockLog status from its spec and its members' Trace specs (missing ones ignored).

    `generations` may be shared by the statuses of one batch (see `_generation`); a
    settled member (`spec.settled`) stands in for its Trace. `previous` is the stored
    status, which a compacted settled generation (`compact_settled`) reads its notebook
    and suggestion from: a ValueError without it, rather than a status without them.
    """
    block_id = spec["id"]
    settled = spec.get("settled") or {}
    status: dict[str, Any] = {}
    gen_ids = [spec["genTraceId"]] if spec.get("genTraceId") else []
    gens = _members(gen_ids, traces, (GENERATE,), spec)
    if gens and gens[0].get(IN_STATUS):
        if previous is None:
            raise ValueError(f"block log {block_id}: its settled generation is in the status")
        status.update((k, previous[k]) for k in _FROM_STATUS if k in previous)
    elif gens:
        # a contribution holds this block's suggestion only: not one for the batch to share
        shared = generations if generations is not None and gens[0]["id"] not in settled else {}
        doc, blocks = _generation(gens[0], shared)
        if doc is not None:
            status["doc"] = doc
        if block_id in blocks:
            status["generatedBlock"] = normalise_block(blocks[block_id])
    events = _members(_list(spec.get("eventIds")), traces, (LOG_EVENT,), spec)
    executions = _members(
        _list(spec.get("execTraceIds")), traces, (EXECUTE, RUNME, LOG_EVENT), spec
    )
    latest = max(executions, key=_order, default=None)
    if latest is not None:
        executed = _executed_block(latest, block_id)
        if executed is not None:
            status["executedBlock"] = executed
        if isinstance(latest.get("exitCode"), int):
            status["exitCode"] = latest["exitCode"]
    status["executions"] = len(_list(spec.get("execTraceIds"))) + int(
        spec.get("olderExecutions", 0)
    )
    status["evalMode"] = any(
        bool(t.get("evalMode")) for t in [*gens, *([latest] if latest else [])]
    )
    feedback = [e for e in events if _event_type(e) in _SUGGESTION]
    last_feedback = max(feedback, key=_order, default=None)
    status["suggestionStatus"] = (
        _SUGGESTION[_event_type(last_feedback)] if last_feedback is not None else "Unknown"
    )
    return status
