"""`foylectl describe`: one readable view per resource, a BlockLog's or Session's as a timeline.

Arguments are read as `get` reads them (`KIND NAME...`, `KIND/NAME...`, what
`-o name` prints), so whatever `get` finds, `describe` finds. A name that is
not there prints kubectl's NotFound line as it is (no `foylectl: error:`
before it) after the ones found, and the command exits 1.

A block's or session's life is what people ask about ("was my fix learned,
and if not, why?"), so those two kinds end with a timeline: the suggestion,
each execution with its exit code and time, the accept/reject event, and the
learner's verdict in words, computed by the learner's own pure rule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from controller.analyze.blocklogs import member_ids, settled_member
from controller.api.kinds import KindInfo, Resource
from controller.api.resource import parse_rfc3339
from controller.cli.getargs import BadResourceArgs, Wanted, parse_resource_args
from controller.cli.getcmd import find, not_found
from controller.cli.journaltrace import NOT_HERE, SETTLED_NOTE, settled_trace
from controller.cli.output import describe, printable
from controller.learn import rule, session_rule
from controller.store.base import NotFound, Store, get_many

# The learner's reason codes (metric labels) in words, for people.
REASON_WORDS = {
    rule.LEARNABLE: "the executed cell differs from the suggestion: Foyle learns the fix",
    rule.NO_GENERATED_BLOCK: "no suggestion from Foyle for this block: nothing to learn",
    rule.NO_EXECUTED_BLOCK: "not executed yet: nothing to learn",
    rule.EVAL_MODE: "an eval-mode run: replays are never learned",
    rule.UNCHANGED: "unchanged suggestion: nothing to learn",
    session_rule.NOT_ENDED: "the session has not ended yet: Foyle learns a session once it ends",
    session_rule.NO_EXECUTION: "no successful execution: nothing to learn",
    session_rule.NO_CONTEXT: "no full context was logged: no query to learn from",
    session_rule.NO_NOTEBOOK: "the context has no notebook: no query to learn from",
    session_rule.FIRST_CELL: "the first cell was run: nothing before it to predict it from",
    session_rule.SELECTED_OUT_OF_RANGE: "the selected cell is outside the notebook",
    session_rule.NO_EXECUTED_CELL: "the executed cell is missing from the event",
    session_rule.EMPTY_BLOCK: "the executed cell is empty: nothing to learn",
}
SESSION_LEARNABLE_WORDS = "a successful execution: Foyle learns what was run"
FOYLE_SKIP_WORDS = {
    "NoEmbedding": "no embedding provider: Foyle will skip it",
    "EmbeddingLength": "its embedding is not 1536 floats: Foyle will skip it",
    "EmbeddingUnavailable": "the embedding service could not be reached: retried later",
}


def wanted_from(args: argparse.Namespace) -> list[Wanted]:
    from controller.errors import UsageError

    try:
        return parse_resource_args(args.resources)
    except BadResourceArgs as err:
        raise UsageError(str(err)) from err


def cmd_describe(args: argparse.Namespace, store: Store, journal: Path | None = None) -> int:
    """`journal`: the kube store's local journal, where a settled Trace is still found."""
    views: list[str] = []
    missing: list[str] = []
    for want in wanted_from(args):
        if want.names:
            objects = []
            for name in want.names:
                found = find(store, want.info, name)
                objects.extend(found[:1])
                if not found and journal is not None and want.info.kind == "Trace":
                    settled = settled_trace(journal, name)
                    if settled is not None:
                        views.append(describe(settled) + "\n" + SETTLED_NOTE.format(path=journal))
                        continue
                    missing.append(not_found(store, want.info, name) + NOT_HERE)
                elif not found:
                    missing.append(not_found(store, want.info, name))
        else:
            objects = store.list(want.info.kind)
        views.extend(view(store, want.info, obj) for obj in objects)
    if views:
        print("\n\n\n".join(views))
    for line in missing:
        print(line, file=sys.stderr)
    if not views and not missing:
        print("No resources found.", file=sys.stderr)
    return 1 if missing else 0


def view(store: Store, info: KindInfo, obj: Resource) -> str:
    """describe's text for one resource: its fields, then what it is made of and its life."""
    if info.kind == "BlockLog":
        spec = obj.get("spec") or {}
        traces = _traces(store, member_ids(spec), spec)
        text = describe(obj, {"Traces": traces})
        return text + "\n" + _timeline(_blocklog_events(obj, traces), _verdict(store, obj))
    if info.kind == "Session":
        return describe(obj) + "\n" + _timeline(_session_events(obj), _verdict(store, obj))
    return describe(obj)


def _traces(store: Store, ids: list[str], spec: dict[str, Any]) -> list[Resource]:
    """The members' Traces; a settled one (deleted from the cluster) by what its BlockLog
    keeps of it."""
    from controller.api.names import name_for_id
    from controller.api.resource import new_resource

    found = get_many(store, "Trace", [name_for_id(i) for i in ids])
    out = []
    for trace_id in ids:
        trace = found.get(name_for_id(trace_id))
        kept = settled_member(spec, trace_id) if trace is None else None
        if kept is not None:
            trace = new_resource("Trace", trace_id, kept)
        if trace is not None:
            out.append(trace)
    return out


Event = tuple[str, str]  # (RFC 3339 time or "", what happened)


def _blocklog_events(blocklog: Resource, traces: list[Resource]) -> list[Event]:
    spec = blocklog.get("spec") or {}
    events: list[Event] = []
    for trace in traces:
        t = trace.get("spec") or {}
        events.append(
            (t.get("startTime") or "", _trace_event(t, t["id"] == spec.get("genTraceId")))
        )
    events.sort(key=lambda e: e[0])
    older = int(spec.get("olderExecutions") or 0)
    if older:
        events.insert(0, ("", f"{older} earlier execution{'s' if older != 1 else ''} (not listed)"))
    return events


def _trace_event(trace: dict[str, Any], generated: bool) -> str:
    kind = trace.get("kind", "")
    if generated:
        return f"suggested by Foyle (Generate trace {trace['id']})"
    event_type = (trace.get("request") or {}).get("eventType")
    if kind == "LogEvent" and event_type in ("ACCEPTED", "REJECTED"):
        return f"suggestion {event_type.lower()}"
    exit_code = trace.get("exitCode")
    outcome = f"exit {exit_code}" if isinstance(exit_code, int) else "exit code not logged"
    return f"executed, {outcome} ({kind} trace {trace['id']})"


def _session_events(session: Resource) -> list[Event]:
    status = session.get("status") or {}
    events: list[Event] = []
    for event in status.get("logEvents") or []:
        kind = event.get("type", "?")
        what = kind.lower().replace("_", " ")
        if kind == "EXECUTE":
            what = f"executed cell {event.get('selectedId', '?')}: " + {
                "SUCCEEDED": "succeeded",
                "FAILED": "failed",
            }.get(event.get("executeStatus", ""), "outcome not logged")
        elif kind in ("ACCEPTED", "REJECTED"):
            what = f"suggestion {kind.lower()}"
        elif kind in ("SESSION_START", "SESSION_END"):
            what = f"session {kind[8:].lower()}ed"
        events.append((event.get("time") or "", what))
    generated = len(status.get("generateTraceIds") or [])
    if generated:
        events.append(("", f"{generated} suggestion{'s' if generated != 1 else ''} generated"))
    return events


def _verdict(store: Store, source: Resource) -> str:
    """Is it learnable, and what became of its Example, in words."""
    is_session = source["kind"] == "Session"
    learnable, reason = (
        session_rule.session_learnability(source) if is_session else rule.learnability(source)
    )
    if not learnable:
        return f"not learnable: {REASON_WORDS.get(reason, reason)}"
    words = SESSION_LEARNABLE_WORDS if is_session else REASON_WORDS[rule.LEARNABLE]
    try:
        example = store.get("Example", source["metadata"]["name"])
    except NotFound:
        return f"learnable: {words}; no Example yet (is a learner running?)"
    status = example.get("status") or {}
    skip = status.get("reason")
    if skip:
        return f"learnable: {words}; Example written, but {FOYLE_SKIP_WORDS.get(skip, skip)}"
    if status.get("foyleLoadable"):
        return f"learnable: {words}; Example written, Foyle loads it"
    return f"learnable: {words}; Example written"


def _timeline(events: Iterable[Event], verdict: str) -> str:
    """The events as a vertical line, each with its time and its offset from the first."""
    events = list(events)
    first = next((_seconds(t) for t, _ in events if _seconds(t) is not None), None)
    lines = ["Timeline:"]
    for when, what in events:
        at = _seconds(when)
        offset = _offset(at - first) if at is not None and first is not None else ""
        lines.append(f"  {when:<27}  {offset:>9}  ├─ {what}")
    lines.append(f"  {'':<27}  {'':>9}  └─ {verdict}")
    return "\n".join(printable(line) for line in lines)


def _seconds(when: str) -> float | None:
    try:
        return parse_rfc3339(when) if when else None
    except ValueError:
        return None


def _offset(seconds: float) -> str:
    """+4.7s, +12m05s, +3h20m, +135d: exact where it is short, coarse where it is long."""
    if seconds < 60:
        return f"+{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"+{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"+{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"+{whole // 86400}d"
