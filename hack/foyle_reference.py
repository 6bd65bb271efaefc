"""Foyle v0.0.45's session builder and session learner, transliterated from its Go, over raw lines.

An independent reference for `hack/foyle_compat.py` (issue 20): it reads the
log lines themselves, in file and line order as Foyle's analyzer does, and
follows Foyle's code statement by statement, sharing nothing with
`controller.analyze` but the block conversions (CellToBlock, CreateQuery),
which tests/test_foyle_blocks.py checks against Foyle separately:

* `app/pkg/analyze/session_builder.go` `processLogEntry`: Foyle's prefix
  matchers; a LogEvent updates the session of `event.contextId` (none without
  one); SESSION_START resets it; an event whose `eventId` is already in the
  session is dropped; StreamGenerate's `context` replaces the full context;
  on SESSION_END the session is handed to the learner;
* `app/pkg/learn/learner.go`: `Enqueue` keeps a session only if `isLearnable`
  at that moment; `Reconcile` (after every line is read, like a learner that
  runs after the backfill) reads the stored session, takes the last
  successful EXECUTE event, the last of its cells whose id is the selected id,
  trims it (an empty block is an error), and the query is CreateQuery of the
  notebook cut before the selected cell. The Example's id is the context id.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from controller.analyze.blocks import cell_to_block  # noqa: E402
from controller.learn.query import create_query  # noqa: E402

PKG = "github.com/jlewi/foyle/app/pkg"
IS_LOG_EVENT = f"{PKG}/agent.(*Agent).LogEvents"  # matchers/names.go: strings.HasPrefix
IS_STREAM_GENERATE = f"{PKG}/agent.(*Agent).StreamGenerate"


@dataclass
class FoyleSession:
    context_id: str = ""
    log_events: list[dict[str, Any]] = field(default_factory=list)
    full_context: dict[str, Any] | None = None


@dataclass
class FoyleRun:
    """What Foyle's analyzer and learner end with: the sessions, those enqueued, the Examples."""

    sessions: dict[str, FoyleSession] = field(default_factory=dict)
    enqueued: list[str] = field(default_factory=list)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)


def log_entries(dirs: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every JSON object line of every *.json/*.jsonl file, files in path order."""
    for directory in dirs:
        files = sorted(
            p for p in Path(directory).rglob("*.json*") if p.suffix in (".json", ".jsonl")
        )
        for path in files:
            with path.open("rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # Foyle logs the decode error and goes on
                    if isinstance(entry, dict):
                        yield entry


def _session(run: FoyleRun, context_id: str) -> FoyleSession:
    """SessionsManager.Update: a new session starts empty, with its context id."""
    return run.sessions.setdefault(context_id, FoyleSession(context_id))


def _process_log_event(run: FoyleRun, entry: dict[str, Any]) -> None:
    event = entry.get("event")
    if not isinstance(event, dict) or not event.get("contextId"):
        return  # "Failed to decode event" / "LogEvent missing ContextId"
    session = _session(run, event["contextId"])
    if event.get("type") == "SESSION_START":  # proto.Reset (the context id is set again)
        session.log_events, session.full_context = [], None
    if all(e.get("eventId", "") != event.get("eventId", "") for e in session.log_events):
        session.log_events.append(event)
    if event.get("type") == "SESSION_END" and is_learnable(session):  # notifier -> Enqueue
        run.enqueued.append(event["contextId"])


def _process_stream_generate(run: FoyleRun, entry: dict[str, Any]) -> None:
    context_id, context = entry.get("contextId"), entry.get("context")
    if isinstance(context_id, str) and context_id and isinstance(context, dict):
        _session(run, context_id).full_context = context


def _last_exec_event(session: FoyleSession) -> dict[str, Any] | None:
    found = None
    for event in session.log_events:
        if event.get("type") == "EXECUTE" and event.get("executeStatus") == "SUCCEEDED":
            found = event
    return found


def is_learnable(session: FoyleSession) -> bool:
    context = session.full_context
    return (
        _last_exec_event(session) is not None
        and context is not None
        and isinstance(context.get("notebook"), dict)
        and bool(context.get("selected", 0))
    )


def reconcile(session: FoyleSession) -> dict[str, Any] | None:
    """learner.Reconcile: the Example, or None where Foyle returns an error."""
    if not is_learnable(session):
        return None
    event = _last_exec_event(session)
    assert event is not None and session.full_context is not None
    executed = None
    for cell in event.get("cells") or []:
        block = cell_to_block(cell)
        if block["id"] and block["id"] == event.get("selectedId"):
            executed = block
    if executed is None or not executed["contents"].strip():
        return None
    answer = dict(executed, contents=executed["contents"].strip())
    cells = session.full_context["notebook"].get("cells") or []
    selected = session.full_context["selected"]
    if not 0 < selected <= len(cells):
        return None  # Go's doc.Blocks[:selected] panics
    blocks = [cell_to_block(c) for c in cells][:selected]
    query = copy.deepcopy(create_query(blocks))
    return {"id": session.context_id, "query": {"blocks": query}, "answer": [answer]}


def run_foyle(dirs: Iterable[Path]) -> FoyleRun:
    run = FoyleRun()
    for entry in log_entries(dirs):
        function = entry.get("function")
        function = function if isinstance(function, str) else ""
        if function.startswith(IS_LOG_EVENT):
            _process_log_event(run, entry)
        if function.startswith(IS_STREAM_GENERATE):
            _process_stream_generate(run, entry)
    for context_id in dict.fromkeys(run.enqueued):
        example = reconcile(run.sessions[context_id])
        if example is not None:
            run.examples[context_id] = example
    return run
