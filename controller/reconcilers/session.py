"""Session reconciler: member Trace resources -> Session status, as BlockLogs are kept.

Membership (`spec.traceIds`) is written by the Trace reconciler through
`join_sessions` (a batch's changes merged per Session, one CAS
read-modify-write each with the status derived from it, so ingesters on several
nodes never lose a member), which hands the Sessions it touched on to this stage
(queue `sessions`), which repairs a status left stale. The status is
the pure `session_status` plus whether Foyle's session learner would learn
from it, kept set-wise like every joined kind (controller.reconcilers.join).
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

from controller.analyze.blocklogs import Generation
from controller.analyze.sessions import (
    compact_settled,
    context_of,
    membership_add,
    membership_remove,
    session_contribution,
    session_status,
)
from controller.api.kinds import Resource
from controller.learn.session_rule import session_learnability
from controller.reconcilers.join import Join, JoinReconciler, SpecChange
from controller.reconcilers.retention import Joined, smaller_specs, write_joined
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import Store
from controller.store.journal import SESSION_EXAMPLES

Spec = dict[str, Any]


def join_sessions(
    store: Store,
    changes: list[tuple[dict[str, Any], str, bool]],
    traces: TraceSpecs,
    batch: dict[str, Spec],
) -> Joined:
    """Make each trace's Session list it (and a Session it left not); the touched names
    (`Joined`: by what is left to do for them).

    `changes` holds (trace spec, the context id its stored Trace had, whether the
    trace is settled: its contribution kept in the Session). The changes of a
    batch are merged per Session: one read-modify-write each, its status derived in
    the same write (`batch` the batch's Trace specs by id, `traces` the cache the others
    are read from). A Session too large for etcd with what it keeps of its settled
    members (a huge notebook context) keeps them smaller (`write_joined`) instead of
    being retried forever.
    """
    return write_joined(store, SESSION_JOIN, traces, batch, partial(_changes, changes))


def _changes(changes: list[tuple[Spec, str, bool]], smaller: int) -> dict[str, list[SpecChange]]:
    """Each touched Session's membership changes (by context id); a settled trace's
    contribution from its `smaller`-th smaller spec (`smaller_specs`)."""
    per_session: defaultdict[str, list[SpecChange]] = defaultdict(list)
    for trace_spec, previous_context, settled in changes:
        trace_id, context_id = trace_spec["id"], context_of(trace_spec)
        if context_id:
            spec = smaller_specs(trace_spec)[smaller] if smaller else trace_spec
            kept = session_contribution(spec) if settled else None
            per_session[context_id].append(
                lambda s, c=context_id, t=trace_id, k=kept: membership_add(s, c, t, k)
            )
        if previous_context and previous_context != context_id:
            per_session[previous_context].append(
                lambda s, t=trace_id: s and membership_remove(s, t)
            )
    return dict(per_session)


def _status(
    session: Resource, traces: dict[str, Spec], _generations: dict[str, Generation]
) -> dict[str, Any]:
    """Foyle's Session status, and whether Foyle's session learner would learn from it."""
    status = session_status(session["spec"], traces, session.get("status"))
    learnable, reason = session_learnability({**session, "status": status})
    status["learnable"] = learnable
    if not learnable:
        status["reason"] = reason
    return status


def _members(spec: Spec) -> list[str]:
    return list(spec.get("traceIds", []))


def _teaches(session: Resource) -> bool:
    return session_learnability(session)[0]


SESSION_JOIN = Join(
    "Session",
    _members,
    _status,
    learner_queue=SESSION_EXAMPLES,
    compact=compact_settled,
    teaches=_teaches,
)


# SessionReconciler(store)
SessionReconciler = partial(JoinReconciler, SESSION_JOIN)
