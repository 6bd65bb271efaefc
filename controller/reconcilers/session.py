"""Session reconciler: member Trace resources -> Session status, as BlockLogs are kept.

Membership (`spec.traceIds`) is written by the Trace reconciler through
`join_sessions` (a batch's changes merged per Session, one CAS
read-modify-write each, so ingesters on several nodes never lose a member),
which also leaves a durable dirty mark (queue `sessions`). Set-wise like the
BlockLog reconciler: `reconcile_many` reads a batch's Sessions and all their
member Traces in two queries and writes the changed statuses in one.
`reconcile(name)` derives the status from the member Traces with the pure
`session_status`, adds whether Foyle's session learner would learn from it,
writes it only when it changed, deletes a Session no trace names any more,
and tells the learner; the dirty mark is cleared last.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from controller.analyze.sessions import (
    context_of,
    membership_add,
    membership_remove,
    session_status,
)
from controller.api.kinds import Resource
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.api.result import DONE, Result
from controller.learn.session_rule import session_learnability
from controller.store.base import NotFound, Store, get_many, read_modify_write_many
from controller.store.journal import Journal

Spec = dict[str, Any]
SESSIONS = "sessions"  # journal dirty-mark queue: Sessions whose members changed
SESSION_EXAMPLES = "session-examples"  # Sessions whose status changed since the learner looked


def join_sessions(store: Store, changes: list[tuple[dict[str, Any], str]]) -> set[str]:
    """Make each trace's Session list it (and a Session it left not); the touched names.

    `changes` holds (trace spec, the context id its stored Trace had). The
    changes of a batch are merged per Session: one read-modify-write each.
    """
    per_session: defaultdict[str, list[Callable[[Spec | None], Spec | None]]] = defaultdict(list)
    for trace_spec, previous_context in changes:
        trace_id, context_id = trace_spec["id"], context_of(trace_spec)
        if context_id:
            per_session[context_id].append(
                lambda s, c=context_id, t=trace_id: membership_add(s, c, t)
            )
        if previous_context and previous_context != context_id:
            per_session[previous_context].append(
                lambda s, t=trace_id: s and membership_remove(s, t)
            )
    read_modify_write_many(
        store,
        "Session",
        {name_for_id(c): _spec_mutation(c, fns) for c, fns in per_session.items()},
    )
    return {name_for_id(c) for c in per_session}


def _spec_mutation(
    context_id: str, changes: list[Callable[[Spec | None], Spec | None]]
) -> Callable[[Resource | None], Resource | None]:
    def mutate(current: Resource | None) -> Resource | None:
        spec = current["spec"] if current else None
        for change in changes:
            spec = change(spec) or spec
        if not spec or (current is not None and spec == current["spec"]):
            return None
        if current is None:
            return new_resource("Session", context_id, spec)
        current["spec"] = spec
        return current

    return mutate


class SessionReconciler:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        on_change: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.on_change = on_change  # statuses changed or Sessions went: tell the learner

    def reconcile(self, name: str) -> Result:
        self.reconcile_many([name])
        return DONE

    def reconcile_many(self, names: list[str]) -> None:
        seqs = self.journal.dirty_seqs(SESSIONS, names)
        sessions = get_many(self.store, "Session", names)
        empty = [n for n, s in sessions.items() if not s["spec"].get("traceIds")]
        for name in empty:
            with contextlib.suppress(NotFound):
                self.store.delete("Session", name, sessions[name]["metadata"]["resourceVersion"])
        live = {n: s for n, s in sessions.items() if n not in empty}
        wanted = {name_for_id(t) for s in live.values() for t in s["spec"].get("traceIds", [])}
        traces = {
            o["spec"]["id"]: o["spec"] for o in get_many(self.store, "Trace", wanted).values()
        }
        statuses: dict[str, dict[str, Any]] = {}
        for name, session in live.items():
            status = session_status(session["spec"], traces)
            learnable, reason = session_learnability({**session, "status": status})
            status["learnable"] = learnable
            if not learnable:
                status["reason"] = reason
            status["observedGeneration"] = session["metadata"].get("generation", 1)
            if status != session.get("status"):
                statuses[name] = status
        read_modify_write_many(
            self.store, "Session", {n: _status_mutation(st) for n, st in statuses.items()}
        )
        changed = [*statuses, *empty]
        if changed and self.on_change is not None:
            self.on_change(changed)
        self.journal.clear_dirty(SESSIONS, seqs)


def _status_mutation(status: dict[str, Any]) -> Callable[[Resource | None], Resource | None]:
    """Write the derived status; a spec changed meanwhile leaves it to the next reconcile."""

    def mutate(current: Resource | None) -> Resource | None:
        generation = None if current is None else current["metadata"].get("generation", 1)
        if generation != status["observedGeneration"]:
            return None
        assert current is not None
        current["status"] = status
        return current

    return mutate
