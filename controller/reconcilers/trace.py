"""Trace reconciler: journal entries -> Trace resource -> BlockLog membership.

`reconcile(trace_key)` folds the trace's GC snapshot and its remaining
journal entries into an accumulator, reduces it with the pure core (the same
function `foylectl analyze` uses), writes the Trace if it changed, and then
makes sure every BlockLog the trace names lists it (and those it no longer
names do not), each with read_modify_write so writers on several nodes never
lose a membership update. The touched BlockLogs are handed on for their
status to be recomputed. The dirty mark is cleared last, and only if no newer
batch set it meanwhile, so a crash anywhere repeats work but loses nothing.

An InProgress trace with no new line for `abandon_after` seconds is marked
Abandoned when it is next reconciled: the manager sweeps the journal for such
traces (no timer per open trace); a late line makes it InProgress or Complete
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from controller.analyze.blocklogs import membership_add, membership_remove
from controller.analyze.sessions import context_of
from controller.analyze.traces import TraceAccumulator, reduce_trace
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.reconcilers.result import DONE, Result
from controller.reconcilers.session import SESSIONS, join_session
from controller.store.base import NotFound, Store, read_modify_write
from controller.store.journal import BLOCKLOGS, TRACES, EntryKey, Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceSettings:
    abandon_after: float = 600.0
    retention: float = 3600.0


def accumulate(journal: Journal, trace_key: str) -> tuple[TraceAccumulator, list[EntryKey]]:
    """The trace's snapshot (if collected before) with every remaining entry folded in.

    Also returns the keys of the entries folded, read in the same transaction, so
    garbage collection deletes exactly what the snapshot holds.
    """
    snapshot, entries = journal.trace_inputs(trace_key)
    acc = TraceAccumulator.from_dict(orjson.loads(snapshot)) if snapshot else TraceAccumulator()
    for _, entry in entries:
        acc.add(entry)
    return acc, [key for key, _ in entries]


def start_time_lookup(store: Store) -> Callable[[str], str | None]:
    def start_of(trace_id: str) -> str | None:
        try:
            return store.get("Trace", name_for_id(trace_id))["spec"].get("startTime")
        except NotFound:
            return None

    return start_of


class TraceReconciler:
    def __init__(
        self,
        journal: Journal,
        store: Store,
        on_blocklogs: Callable[[Iterable[str]], None],
        settings: TraceSettings | None = None,
        clock: Callable[[], float] = time.time,
        on_sessions: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.store = store
        self.on_blocklogs = on_blocklogs
        self.on_sessions = on_sessions  # issue 11: Session membership is kept when set
        self.settings = settings or TraceSettings()
        self.clock = clock
        self._start_of = start_time_lookup(store)

    def reconcile(self, trace_key: str) -> Result:
        seq = self.journal.dirty_seq(TRACES, trace_key)
        reduced = reduce_trace(trace_key, accumulate(self.journal, trace_key)[0])
        now = self.clock()
        if reduced is None:  # lines of no trace kind (e.g. StreamGenerate): nothing to wait for
            self.journal.set_complete_since(trace_key, now)
            self.journal.clear_dirty(TRACES, trace_key, seq)
            return DONE
        spec, status = reduced
        if status["phase"] == "InProgress":
            idle = now - (self.journal.trace_activity(trace_key) or now)
            if idle >= self.settings.abandon_after:
                status["phase"] = "Abandoned"
                self.journal.set_abandoned(trace_key)
        previous = self._write_trace(trace_key, spec, status)
        previous_blocks = previous.get("blockIds", [])
        blocks = spec.get("blockIds", [])
        for block_id in blocks:
            read_modify_write(
                self.store,
                "BlockLog",
                name_for_id(block_id),
                lambda cur, b=block_id: self._add_member(cur, b, spec),
            )
        for block_id in set(previous_blocks) - set(blocks):
            read_modify_write(
                self.store,
                "BlockLog",
                name_for_id(block_id),
                lambda cur: self._remove_member(cur, spec["id"]),
            )
        touched = {name_for_id(b) for b in (*blocks, *previous_blocks)}
        self.journal.mark_dirty(BLOCKLOGS, touched)
        self.on_blocklogs(touched)
        # -- issue 11: Session membership, keyed by the RunMe context id (begin) --
        if self.on_sessions is not None:
            sessions = join_session(self.store, spec, context_of(previous))
            self.journal.mark_dirty(SESSIONS, sessions)
            self.on_sessions(sessions)
        # -- issue 11 (end) --
        self.journal.set_complete_since(trace_key, now if status["phase"] == "Complete" else None)
        self.journal.clear_dirty(TRACES, trace_key, seq)
        return DONE

    def _write_trace(self, trace_key: str, spec: dict, status: dict) -> dict:
        """Create or update the Trace; returns the spec it had before ({} when new)."""
        previous: dict = {}

        def mutate(current: dict | None) -> dict | None:
            nonlocal previous
            if current is None:
                return new_resource("Trace", trace_key, spec, status)
            previous = dict(current.get("spec", {}))
            if current.get("spec") == spec and current.get("status") == status:
                return None
            current["spec"], current["status"] = spec, status
            return current

        read_modify_write(self.store, "Trace", name_for_id(trace_key), mutate)
        return previous

    def _add_member(self, current: dict | None, block_id: str, trace_spec: dict) -> dict | None:
        spec = membership_add(
            current["spec"] if current else None, block_id, trace_spec, self._start_of
        )
        if current is None:
            return new_resource("BlockLog", block_id, spec)
        if spec == current["spec"]:
            return None
        current["spec"] = spec
        return current

    @staticmethod
    def _remove_member(current: dict | None, trace_id: str) -> dict | None:
        if current is None:
            return None
        spec = membership_remove(current["spec"], trace_id)
        if spec == current["spec"]:
            return None
        current["spec"] = spec
        return current


def collect_garbage(journal: Journal, now: float, retention: float) -> int:
    """Fold the entries of traces Complete for longer than `retention` into snapshots.

    Raw entries are what makes a late line recomputable; the snapshot (a
    compact accumulator) keeps that ability without the bytes. Returns how
    many traces were collected.
    """
    collected = 0
    for trace_key in journal.traces_to_collect(now - retention):
        acc, keys = accumulate(journal, trace_key)
        journal.replace_with_snapshot(trace_key, orjson.dumps(acc.to_dict()), keys)
        collected += 1
    return collected
