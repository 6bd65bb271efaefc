"""Session reconciler: member Trace resources -> Session status, as BlockLogs are kept.

Membership (`spec.traceIds`) is written by the Trace reconciler through
`join_session` (CAS read-modify-write, so ingesters on several nodes never
lose a member), which also leaves a durable dirty mark (queue `sessions`).
`reconcile(name)` derives the status from the member Traces with the pure
`session_status`, adds whether Foyle's session learner would learn from it,
writes it only when it changed, deletes a Session no trace names any more,
and tells the learner; the dirty mark is cleared last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from controller.analyze.sessions import (
    context_of,
    membership_add,
    membership_remove,
    session_status,
)
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.api.result import DONE, Result
from controller.learn.session_rule import session_learnability
from controller.store.base import NotFound, Store, read_modify_write
from controller.store.journal import Journal

SESSIONS = "sessions"  # journal dirty-mark queue: Sessions whose members changed
SESSION_EXAMPLES = "session-examples"  # Sessions whose status changed since the learner looked


def join_session(store: Store, trace_spec: dict[str, Any], previous_context: str) -> set[str]:
    """Make the trace's Session list it (and a Session it left not); the touched names."""
    trace_id, context_id = trace_spec["id"], context_of(trace_spec)
    touched: set[str] = set()
    if context_id:
        _change_spec(store, context_id, lambda s: membership_add(s, context_id, trace_id))
        touched.add(name_for_id(context_id))
    if previous_context and previous_context != context_id:
        _change_spec(store, previous_context, lambda s: s and membership_remove(s, trace_id))
        touched.add(name_for_id(previous_context))
    return touched


def _change_spec(
    store: Store, context_id: str, change: Callable[[dict[str, Any] | None], Any]
) -> None:
    """CAS-write `change(spec)` (None: nothing to do) to the Session, creating it if needed."""

    def mutate(current: dict[str, Any] | None) -> dict[str, Any] | None:
        spec = change(current["spec"] if current else None)
        if not spec or (current is not None and spec == current["spec"]):
            return None
        if current is None:
            return new_resource("Session", context_id, spec)
        current["spec"] = spec
        return current

    read_modify_write(store, "Session", name_for_id(context_id), mutate)


class SessionReconciler:
    def __init__(
        self, store: Store, journal: Journal, on_change: Callable[[list[str]], None] | None = None
    ) -> None:
        self.store = store
        self.journal = journal
        self.on_change = on_change  # the status changed or the Session went: tell the learner

    def reconcile(self, name: str) -> Result:
        seqs = self.journal.dirty_seqs(SESSIONS, [name])
        self._converge(name)
        self.journal.clear_dirty(SESSIONS, seqs)
        return DONE

    def _converge(self, name: str) -> None:
        try:
            session = self.store.get("Session", name)
        except NotFound:
            return
        members = session["spec"].get("traceIds", [])
        if not members:
            with contextlib.suppress(NotFound):
                self.store.delete("Session", name, session["metadata"]["resourceVersion"])
            self._changed(name)
            return
        traces: dict[str, dict[str, Any]] = {}
        for trace_id in members:
            with contextlib.suppress(NotFound):
                traces[trace_id] = self.store.get("Trace", name_for_id(trace_id))["spec"]
        status = session_status(session["spec"], traces)
        learnable, reason = session_learnability({**session, "status": status})
        status["learnable"] = learnable
        if not learnable:
            status["reason"] = reason
        status["observedGeneration"] = session["metadata"].get("generation", 1)
        if status != session.get("status"):
            session["status"] = status
            self.store.update_status(session)
            self._changed(name)

    def _changed(self, name: str) -> None:
        if self.on_change is not None:
            self.on_change([name])
