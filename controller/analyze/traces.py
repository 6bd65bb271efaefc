"""Entries -> Trace: classify, key and fold log entries into one trace.

Lines of one trace arrive in any order, from several files, and late (after
the end line, after their neighbours were garbage-collected from the journal).
So a trace is not computed from a list of entries but from a
`TraceAccumulator`, a commutative monoid: `add` and `merge` in any order and
grouping give the same accumulator, and `to_dict`/`from_dict` let the journal
keep it as a compact snapshot instead of the raw lines. It keeps only what
`reduce_trace` needs: per trace kind the earliest (by `Entry.sort_key`)
candidate for each derived value, plus counts and flags.

Which entry wins is decided by `sort_key` alone (ties on an identical key fall
back to the candidate's canonical JSON), never by arrival order; Foyle's
unstable sort made its results depend on it (foyle-logs.md section 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.analyze.blocks import cell_to_block, exit_code_from_outputs
from controller.api import functions
from controller.api.entry import EVENT_KEY_PREFIX, Entry
from controller.api.resource import get_path, rfc3339

GENERATE, EXECUTE, RUNME, LOG_EVENT = "Generate", "Execute", "RunMe", "LogEvent"
CONTEXT = "Context"  # StreamGenerate's "Received full context": a session's notebook
CONTEXT_KEY_PREFIX = "context/"

# Foyle's prefix matchers (controller.api.functions); the first that matches decides.
# Sessions (issue 11): the token usage of a completion is logged with the Generate
# trace's id; a stream's full context with the stream's trace id.
_KINDS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (functions.is_generate, GENERATE),
    (functions.is_executor_execute, EXECUTE),
    (functions.is_runme_execute, RUNME),
    (functions.is_log_event, LOG_EVENT),
    (functions.is_llm_usage, GENERATE),
    (functions.is_stream_generate, CONTEXT),
)
END_MESSAGES = {
    GENERATE: "Agent.Generate returning response",
    EXECUTE: "Executed instructions",
    RUNME: "sending the final response with exit code",
}

SortKey = tuple[float, int, int]
# Lines of one trace further apart than this belong to two traces that share an id
# (a trace takes seconds to minutes; --abandon-after defaults to 10 minutes).
REUSED_ID_GAP_SECONDS = 3600.0
# An unfinished trace with no line for this long is Abandoned (--abandon-after).
ABANDON_AFTER_SECONDS = 600.0
Pick = tuple[SortKey, Any]  # (sort key of the entry, the value it offers)


def classify(function: str) -> str | None:
    """The trace kind of a Go function name; None for anything unknown.

    StreamGenerate classifies as Context, but only its lines that carry a full
    context count (`TraceAccumulator.add`); the rest of a stream is noise.
    """
    for matches, kind in _KINDS:
        if matches(function):
            return kind
    return None


def trace_key(entry: Entry) -> str | None:
    """The id of the trace an entry belongs to; None when it carries no trace data."""
    if entry.trace_id:
        return entry.trace_id
    if entry.context is not None and entry.context_id:  # a full context logged without a trace
        return f"{CONTEXT_KEY_PREFIX}{entry.context_id}/{entry.time!r}-{entry.digest:08x}"
    if entry.event is None:
        return None
    event_id = entry.event.get("eventId")
    if isinstance(event_id, str) and event_id:
        return EVENT_KEY_PREFIX + event_id
    return f"{EVENT_KEY_PREFIX}{entry.time!r}-{entry.digest:08x}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _earlier(a: Pick, b: Pick) -> Pick:
    if a[0] != b[0]:
        return a if a[0] < b[0] else b
    return a if _canonical(a[1]) <= _canonical(b[1]) else b


def _min_key(a: SortKey | None, b: SortKey | None) -> SortKey | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _max_key(a: SortKey | None, b: SortKey | None) -> SortKey | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def _event_view(event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A LogEvent's request and the block ids it names.

    `cells` keeps every cell of the event, as Foyle's Session keeps the whole
    LogEvent (its learner looks the executed cell up among them); `block` is the
    selected one, what a BlockLog reads.
    """
    payload = event.get("event")
    payload = payload if isinstance(payload, dict) else {}
    cells = payload.get("cells")
    blocks = (
        [cell_to_block(c) for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []
    )
    selected = event.get("selectedCellId")
    selected = selected if isinstance(selected, str) else ""
    event_type = event.get("eventType")
    request: dict[str, Any] = {
        "eventType": event_type if isinstance(event_type, str) else "",
        "selectedCellId": selected,
    }
    request.update(_session_fields(payload))
    chosen = next((b for b in blocks if selected and b["id"] == selected), None)
    if chosen is not None:
        request["block"] = chosen
    if blocks:
        request["cells"] = blocks
    return request, [selected] if selected else [b["id"] for b in blocks]


def _session_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """What a Session needs of a LogEvent, read from the event itself as Foyle reads it.

    Foyle's session builder keys on `event.contextId` and de-duplicates on
    `event.eventId`; the line's top-level keys only repeat them for humans, so
    an event without a context id of its own makes no Session.
    """
    fields = {
        "contextId": payload.get("contextId"),
        "eventId": payload.get("eventId"),
        "selectedIndex": payload.get("selectedIndex"),
        "executeStatus": payload.get("executeStatus"),
    }
    kept: dict[str, Any] = {k: v for k, v in fields.items() if isinstance(v, str) and v}
    if type(fields["selectedIndex"]) is int:
        kept["selectedIndex"] = fields["selectedIndex"]
    return kept


def _ends(kind: str, entry: Entry) -> bool:
    """A LogEvent and a Context are one line; the other kinds end with a known message."""
    return kind in (LOG_EVENT, CONTEXT) or entry.message == END_MESSAGES[kind]


def _offers(kind: str, entry: Entry, ended: bool) -> dict[str, Any]:
    """What one entry of `kind` offers to each slot of the trace (None: nothing)."""
    if kind == LOG_EVENT:
        request, block_ids = _event_view(entry.event or {})
        return {"request": request, "blockIds": block_ids}
    if kind == CONTEXT:
        return {"request": {"contextId": entry.context_id, "context": entry.context}}
    return {
        "contextId": entry.context_id or None,
        "usage": entry.usage,
        "request": entry.request,
        "response": entry.response,
        "exitCode": entry.exit_code,
        "endExitCode": entry.exit_code if ended else None,
        "blockIds": list(entry.block_ids) or None,
        "knownId": entry.known_id or None,
    }


@dataclass
class _KindState:
    """The earliest candidates among the entries of one trace kind."""

    first: SortKey
    ended: bool = False
    picks: dict[str, Pick] = field(default_factory=dict)

    def offer(self, slot: str, pick: Pick) -> None:
        current = self.picks.get(slot)
        self.picks[slot] = pick if current is None else _earlier(current, pick)

    def value(self, slot: str) -> Any:
        pick = self.picks.get(slot)
        return None if pick is None else pick[1]

    def merge(self, other: _KindState) -> None:
        self.first = min(self.first, other.first)
        self.ended = self.ended or other.ended
        for slot, pick in other.picks.items():
            self.offer(slot, pick)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": list(self.first),
            "ended": self.ended,
            "picks": {slot: [list(key), value] for slot, (key, value) in self.picks.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _KindState:
        return cls(
            first=_key(data["first"]),
            ended=bool(data.get("ended")),
            picks={slot: (_key(key), value) for slot, (key, value) in data["picks"].items()},
        )


def _key(raw: list[Any]) -> SortKey:
    return (float(raw[0]), int(raw[1]), int(raw[2]))


@dataclass
class TraceAccumulator:
    """Everything `reduce_trace` needs from a trace's entries; a mergeable, JSON-safe monoid."""

    count: int = 0
    eval_mode: bool = False
    first: SortKey | None = None
    last: SortKey | None = None
    kinds: dict[str, _KindState] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.count += 1
        self.eval_mode = self.eval_mode or entry.eval_mode
        self.first = _min_key(self.first, entry.sort_key)
        self.last = _max_key(self.last, entry.sort_key)
        kind = classify(entry.function)
        if kind is None or (kind == CONTEXT and entry.context is None):
            return
        state = self.kinds.setdefault(kind, _KindState(first=entry.sort_key))
        state.first = min(state.first, entry.sort_key)
        ended = _ends(kind, entry)
        state.ended = state.ended or ended
        for slot, value in _offers(kind, entry, ended).items():
            if value is not None:
                state.offer(slot, (entry.sort_key, value))

    def merge(self, other: TraceAccumulator) -> None:
        self.count += other.count
        self.eval_mode = self.eval_mode or other.eval_mode
        self.first = _min_key(self.first, other.first)
        self.last = _max_key(self.last, other.last)
        for kind, state in other.kinds.items():
            if kind in self.kinds:
                self.kinds[kind].merge(state)
            else:
                self.kinds[kind] = _KindState(state.first, state.ended, dict(state.picks))

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "evalMode": self.eval_mode,
            "first": None if self.first is None else list(self.first),
            "last": None if self.last is None else list(self.last),
            "kinds": {kind: state.to_dict() for kind, state in self.kinds.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceAccumulator:
        first, last = data.get("first"), data.get("last")
        return cls(
            count=int(data.get("count", 0)),
            eval_mode=bool(data.get("evalMode")),
            first=None if first is None else _key(first),
            last=None if last is None else _key(last),
            kinds={k: _KindState.from_dict(v) for k, v in data.get("kinds", {}).items()},
        )


def _clean_ids(ids: Any) -> list[str]:
    """Non-empty string ids, each once, in order."""
    if not isinstance(ids, list):
        return []
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def _block_ids(kind: str, state: _KindState) -> list[str]:
    request, response = state.value("request"), state.value("response")
    if kind == GENERATE:
        if response is None:
            return _clean_ids(state.value("blockIds"))
        blocks = get_path(response, "blocks")
        blocks = blocks if isinstance(blocks, list) else []
        return _clean_ids([b.get("id") for b in blocks if isinstance(b, dict)])
    if kind == EXECUTE:
        return _clean_ids([get_path(request, "block.id")])
    if kind == RUNME:
        known = (
            state.value("knownId") or get_path(request, "knownId") or get_path(request, "knownID")
        )
        return _clean_ids([known])
    return _clean_ids(state.value("blockIds"))


def _exit_code(kind: str, state: _KindState) -> int | None:
    if kind == EXECUTE:
        return exit_code_from_outputs(get_path(state.value("response"), "outputs"))
    if kind == RUNME:
        end_code = state.value("endExitCode")
        code = end_code if end_code is not None else state.value("exitCode")
        return code if isinstance(code, int) else None
    return None


def _session_spec(spec: dict[str, Any], kind: str, state: _KindState) -> None:
    """`contextId` (and a completion's `usage`) for the Session the trace belongs to."""
    context_id = state.value("contextId") or get_path(spec.get("request"), "contextId")
    if isinstance(context_id, str) and context_id:
        spec["contextId"] = context_id
    usage = state.value("usage")
    if kind == GENERATE and isinstance(usage, dict):
        spec["usage"] = {
            key: usage[key]
            for key in ("inputTokens", "outputTokens")
            if type(usage.get(key)) is int
        }


def is_abandoned(phase: str, last_entry_at: float, now: float, abandon_after: float) -> bool:
    """An unfinished trace that received no line for `abandon_after` seconds (ingest time)."""
    return phase == "InProgress" and now - last_entry_at >= abandon_after


def reduce_trace(
    trace_id: str, acc: TraceAccumulator
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The Trace (spec, status) of an accumulator; None when no entry classifies to a kind."""
    if not acc.kinds or acc.first is None:
        return None
    kind = min(acc.kinds, key=lambda k: (acc.kinds[k].first, k))
    state = acc.kinds[kind]
    request, response = state.picks.get("request"), state.picks.get("response")
    start = request[0][0] if request else acc.first[0]
    end = start if kind == LOG_EVENT else (response[0][0] if response else None)
    spec: dict[str, Any] = {"id": trace_id, "kind": kind, "startTime": rfc3339(start)}
    if end is not None:
        spec["endTime"] = rfc3339(end)
    spec["evalMode"] = acc.eval_mode
    spec["blockIds"] = _block_ids(kind, state)
    exit_code = _exit_code(kind, state)
    if exit_code is not None:
        spec["exitCode"] = exit_code
    if request is not None:
        spec["request"] = request[1]
    if response is not None:
        spec["response"] = response[1]
    _session_spec(spec, kind, state)
    status: dict[str, Any] = {
        "phase": "Complete" if state.ended else "InProgress",
        "entries": acc.count,
    }
    inconsistency = _inconsistency(acc)
    if inconsistency is not None:
        status["inconsistent"] = inconsistency
    return spec, status


def _inconsistency(acc: TraceAccumulator) -> dict[str, Any] | None:
    """Why the lines of one trace id look like two traces (a reused or injected id), if so.

    The Trace shows the earliest kind's data; the journal keeps what every kind
    offered, and this says so instead of dropping the rest silently.
    """
    assert acc.first is not None and acc.last is not None
    span = acc.last[0] - acc.first[0]
    if len(acc.kinds) > 1:
        reason = "SeveralKinds"
    elif span > REUSED_ID_GAP_SECONDS:
        reason = "FarApart"
    else:
        return None
    return {"reason": reason, "kinds": sorted(acc.kinds), "spanSeconds": round(span)}
