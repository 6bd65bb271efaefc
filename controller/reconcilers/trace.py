"""Trace reconciler: journal accumulators -> Trace resources -> BlockLog membership.

Set-wise: `reconcile(keys)` handles a whole batch of trace keys in one
pass. One journal read gives every key's accumulator (the journal keeps one
per trace); each is reduced with the pure core (the function the one-shot
analysis uses). Then, in this order:

1. the stored Traces are read in one query, to know which blocks each trace
   named before;
2. membership changes of every trace in the batch are merged per BlockLog and
   written with one read-modify-write per BlockLog, its status derived in the
   same write (reconcilers.join.membership_mutations: the batch's traces from
   memory, the other members from a cache), so a catch-up writes each BlockLog
   once, one request where the API server holds it (issue 19);
3. the Traces are written (one bulk write), and the BlockLogs touched are
   handed on (the worker loop marks them durably in the same unit of work):
   on the local store, whose unit of work makes the batch one transaction,
   those written with their derived status to the learner, past their stage
   (it would find nothing to write), the rest to the BlockLog stage;
   Sessions (by RunMe context id) are joined the same way;
4. phases are recorded (the worker loop clears the batch's dirty marks).

A trace finished `settle_after` seconds ago (kube store: `--trace-retention`)
is settled instead of written: its BlockLogs and Session keep its contribution
in their specs (analyze.blocklogs/sessions), so its Trace is not created, and
one written before is deleted, after them. etcd then holds what users look at
(BlockLogs, Sessions, Examples) while the journal keeps every trace.

BlockLogs go before Traces: a crash between the two leaves the trace dirty and
its stored Trace still naming its old blocks, so the retry adds it again
rather than taking it for already listed. A crash anywhere repeats work but
loses nothing.

Whether an InProgress trace is Abandoned is the pure `analyze.traces.is_abandoned`:
the pipeline sweeps the journal for idle unfinished traces (no timer per trace);
a late line makes the trace InProgress or Complete again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller.analyze.blocklogs import membership_add, membership_remove
from controller.analyze.traces import ABANDON_AFTER_SECONDS, is_abandoned, reduce_trace
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.api.result import Outcome
from controller.reconcilers.blocklog import BLOCKLOG_JOIN
from controller.reconcilers.join import SpecChange
from controller.reconcilers.retention import Joined, due, smaller_specs, write_joined
from controller.reconcilers.session import join_sessions
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import (
    Mutator,
    ObjectTooLarge,
    Store,
    delete_many,
    get_fields_many,
    read_modify_write,
    read_modify_write_many,
)
from controller.store.journal import (
    BLOCKLOGS,
    EXAMPLES,
    SESSION_EXAMPLES,
    SESSIONS,
    Journal,
    TraceOutcome,
)
from controller.store.unit import Transactional

log = logging.getLogger(__name__)

Spec = dict[str, Any]


@dataclass(frozen=True)
class TraceSettings:
    abandon_after: float = ABANDON_AFTER_SECONDS
    settle_after: float = 0.0  # settle traces finished this long ago (0: never; kube only)


@dataclass
class _Reduced:
    key: str
    spec: Spec
    status: dict[str, Any]
    settled: bool = False


class TraceReconciler:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        settings: TraceSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.journal = journal
        self.settings = settings or TraceSettings()
        self.clock = clock
        self._traces = TraceSpecs(store)  # members of the joined resources, for their status

    def reconcile(self, keys: list[str]) -> Outcome:
        states = self.journal.trace_states(keys)
        now = self.clock()
        reduced: list[_Reduced] = []
        outcomes: list[TraceOutcome] = []
        for key, state in states.items():
            result = reduce_trace(key, state.acc)
            if result is None:  # lines of no trace kind (e.g. StreamGenerate): nothing to wait for
                outcomes.append(TraceOutcome(key, complete=True, abandoned=False))
                continue
            spec, status = result
            abandoned = is_abandoned(
                status["phase"], state.last_entry_at, now, self.settings.abandon_after
            )
            if abandoned:
                status["phase"] = "Abandoned"
            if "inconsistent" in status:
                log.warning(
                    "trace %s: its lines look like two traces sharing one id (%s); the Trace"
                    " shows the earliest %s",
                    key,
                    status["inconsistent"]["reason"],
                    spec["kind"],
                )
            reduced.append(_Reduced(key, spec, status, self._settles(spec, status, now)))
            outcomes.append(TraceOutcome(key, status["phase"] == "Complete", abandoned))
        names = {name_for_id(r.key): r.key for r in reduced}
        before = get_fields_many(self.store, "Trace", names, (".spec.blockIds", ".spec.contextId"))
        previous = {names[n]: blocks for n, (blocks, _) in before.items()}
        contexts = {names[n]: context for n, (_, context) in before.items()}
        # A settled trace's Trace is gone: the journal says what it was joined with.
        unstored = [key for name, key in names.items() if name not in before]
        for key, (blocks, context) in self.journal.settled_joins(unstored).items():
            previous[key], contexts[key] = blocks, context
        outcome = Outcome()
        batch = {r.spec["id"]: r.spec for r in reduced}
        atomic = isinstance(self.store, Transactional)  # this batch is one transaction
        blocklogs = self._write_membership(reduced, previous, batch)
        blocklogs.hand_on(outcome, BLOCKLOGS, EXAMPLES, atomic=atomic)
        contexts_before = [(r.spec, contexts.get(r.key) or "", r.settled) for r in reduced]
        sessions = join_sessions(self.store, contexts_before, self._traces, batch)
        sessions.hand_on(outcome, SESSIONS, SESSION_EXAMPLES, atomic=atomic)
        self._write_traces([r for r in reduced if not r.settled])
        # Settled: BlockLogs and Sessions hold their contributions now, the Traces may go.
        settled = {r.key for r in reduced if r.settled}
        delete_many(self.store, "Trace", [n for n in before if names[n] in settled])
        self.journal.record_settled(
            {
                r.key: (r.spec.get("blockIds", []), r.spec.get("contextId") or "")
                for r in reduced
                if r.settled
            }
        )
        self.journal.finish_traces(outcomes)
        return outcome

    def _settles(self, spec: Spec, status: dict[str, Any], now: float) -> bool:
        after = self.settings.settle_after
        return after > 0 and due({"spec": spec, "status": status}, now, after)

    def _write_traces(self, reduced: list[_Reduced]) -> None:
        """One bulk write; a Trace too large for the backend (etcd) is written smaller
        instead of retried forever: first with its bodies elided to what BlockLogs and
        Sessions read (retention.join_view), then without the bodies that still do not fit.
        """
        try:
            read_modify_write_many(
                self.store, "Trace", {name_for_id(r.key): _trace_mutation(r) for r in reduced}
            )
            return
        except ObjectTooLarge:
            pass
        for r in reduced:
            for spec in smaller_specs(r.spec):
                try:
                    read_modify_write(
                        self.store,
                        "Trace",
                        name_for_id(r.key),
                        _trace_mutation(_Reduced(r.key, spec, r.status)),
                    )
                    break
                except ObjectTooLarge as err:
                    log.warning("trace %s: %s; trying it smaller", r.key, err)

    def _write_membership(
        self, reduced: list[_Reduced], previous: dict[str, Any], batch: dict[str, Spec]
    ) -> Joined:
        """Merge every trace's membership change per block; one write per BlockLog, its
        status derived in it. One too large for etcd with what it keeps of its settled
        members (a Generate trace's notebook) keeps them smaller, as `_write_traces`
        writes a Trace, instead of being retried forever (`write_joined`)."""
        return write_joined(
            self.store,
            BLOCKLOG_JOIN,
            self._traces,
            batch,
            partial(self._membership_changes, reduced, previous),
        )

    def _membership_changes(
        self, reduced: list[_Reduced], previous: dict[str, Any], smaller: int = 0
    ) -> dict[str, list[SpecChange]]:
        """Every trace's membership change by block; a settled trace's contribution from
        its `smaller`-th smaller spec (`smaller_specs`)."""
        changes: defaultdict[str, list[SpecChange]] = defaultdict(list)
        for r in reduced:
            before = set(previous.get(r.key) or ())
            blocks = r.spec.get("blockIds", [])
            spec = smaller_specs(r.spec)[smaller] if r.settled and smaller else r.spec
            for block_id in blocks:
                changes[block_id].append(_adding(block_id, spec, r.settled, block_id in before))
            for block_id in before - set(blocks):
                changes[block_id].append(_removing(r.spec["id"]))
        return changes


def _adding(
    block_id: str, trace_spec: Spec, settled: bool, listed_before: bool
) -> Callable[[Spec | None], Spec]:
    return lambda spec: membership_add(
        spec, block_id, trace_spec, listed_before=listed_before, settled=settled
    )


def _removing(trace_id: str) -> Callable[[Spec | None], Spec | None]:
    return lambda spec: None if spec is None else membership_remove(spec, trace_id)


def _trace_mutation(r: _Reduced) -> Mutator:
    def mutate(current: dict | None) -> dict | None:
        if current is None:
            return new_resource("Trace", r.key, r.spec, r.status)
        if current.get("spec") == r.spec and current.get("status") == r.status:
            return None
        current["spec"], current["status"] = r.spec, r.status
        return current

    return mutate
