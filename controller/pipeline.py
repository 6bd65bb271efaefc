"""This pipeline's wiring: its controllers, their hints, recovery, resync and the sweeps.

Flow (see docs/design.md):

    watchdog / scans --path--> [logfile] --trace keys--> [trace] --names--> [blocklog] --> [example]

Every arrow is a hint into a de-duplicating queue; the journal's durable dirty
marks and the store's `observedGeneration` are what `resync()` re-queues on
start, so no queue needs to survive a crash. The generic runtime.manager runs
the controllers and timers built here; `run_until_idle()` drives the very same
controllers to completion for the one-shot `foylectl analyze`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controller.api.names import name_for_id
from controller.api.result import DONE, Result
from controller.logs.opening import inside
from controller.reconcilers.blocklog import BlockLogReconciler
from controller.reconcilers.logfile import LogFileReconciler, LogFileSettings, logfile_name
from controller.reconcilers.session import SESSION_EXAMPLES, SESSIONS, SessionReconciler
from controller.reconcilers.trace import TraceReconciler, TraceSettings
from controller.runtime.controller import (
    RETRY_FOR_EVER,
    Controller,
    Reconcile,
    ReconcileMany,
    RetryPolicy,
)
from controller.runtime.manager import Manager
from controller.runtime.memory import limit_arenas, release_free_memory
from controller.runtime.metrics import MetricsRegistry
from controller.runtime.watcher import LogWatcher, scan
from controller.settings import Settings
from controller.store.base import NotFound, Store
from controller.store.journal import BLOCKLOGS, EXAMPLES, TRACES, Journal
from controller.store.sqlite import SQLiteStore
from controller.store.unit import Transactional, after_commit

log = logging.getLogger(__name__)

# Reading stops while this many keys wait in any later queue (traces, block logs,
# sessions, learners): memory stays bounded whatever the size of the logs (one read
# adds ~bytes_per_reconcile / 100 trace keys at most).
MAX_BACKLOG = 20_000
MEMORY_TRIM_INTERVAL = 10.0  # seconds between returning freed heap memory to the system
# A one-shot run exits when idle, so it ignores "look again later" and gives a failing key
# up after ~0.3 s of back-off: enough for a transient error, bounded for a lasting one.
ONESHOT = RetryPolicy(give_up_after=6, requeue_later=False)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        journal: Journal,
        registry: MetricsRegistry | None = None,
        learner: Callable[[list[str]], object] | None = None,
        oneshot: bool = False,
        session_learner: Callable[[list[str]], object] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.manager = Manager(registry)
        self.registry = self.manager.registry
        self._policy = ONESHOT if oneshot else RETRY_FOR_EVER
        self._workers = max(1, settings.workers)
        # Batch reconciles into one commit per database where the store is local SQLite
        # (the journal first: the store commits first, so a crash leaves dirty marks).
        unit: tuple[Transactional, ...] = (journal,)
        if isinstance(store, Transactional):
            unit = (journal, store)
        self._unit = unit
        self.logfile_reconciler = LogFileReconciler(
            journal,
            store,
            on_traces=self._on_traces,
            settings=LogFileSettings(
                node=settings.node,
                max_line_bytes=settings.max_line_bytes,
                publish_interval=0.0 if oneshot else 1.0,
                rotate_wait=0.0 if oneshot else settings.rotate_wait,  # issue 24
                roots=tuple(str(d) for d in settings.log_dirs),  # issue 13
                symlinks_anywhere=settings.symlinks_anywhere,  # issue 13
            ),
        )
        self.logfiles = self._controller(
            "logfile", self._reconcile_logfile, unit=(), gate=self._room_downstream
        )
        trace_reconciler = TraceReconciler(
            journal,
            store,
            on_blocklogs=self._on_blocklogs,
            settings=TraceSettings(settings.abandon_after),
            on_sessions=self._on_sessions,
        )
        self.traces = self._controller(
            "trace", trace_reconciler.reconcile, reconcile_many=trace_reconciler.reconcile_many
        )
        self.examples = self._learning_controller("example", EXAMPLES, learner)
        blocklog_reconciler = BlockLogReconciler(
            store, journal, on_change=self._on_blocklogs_changed
        )
        self.blocklogs = self._controller(
            "blocklog",
            blocklog_reconciler.reconcile,
            reconcile_many=blocklog_reconciler.reconcile_many,
        )
        session_reconciler = SessionReconciler(store, journal, on_change=self._on_sessions_changed)
        self.sessions = self._controller(
            "session",
            session_reconciler.reconcile,
            reconcile_many=session_reconciler.reconcile_many,
        )
        self.session_examples = self._learning_controller(
            "session-example", SESSION_EXAMPLES, session_learner
        )
        for controller in (
            self.logfiles,
            self.traces,
            self.blocklogs,
            self.examples,
            self.sessions,
            self.session_examples,
        ):
            if controller is not None:
                self.manager.add(controller)
        self.controllers = self.manager.controllers
        self.watcher = LogWatcher(settings.log_dirs, self.logfiles.add, poll=settings.poll)
        self._initial: set[str] = set()
        self._initial_lock = threading.Lock()
        self.manager.every(settings.rescan_interval, self._rescan, "rescan")
        self.manager.every(MEMORY_TRIM_INTERVAL, release_free_memory, "trim")
        self.manager.every(min(60.0, settings.abandon_after / 10), self._sweep_idle, "abandon")
        self.manager.ready_when(self._initial_scan_done, "caught up with the initial scan")

    # -- wiring --------------------------------------------------------------------------

    def _on_traces(self, keys: set[str]) -> None:
        after_commit(lambda: self._add_all(self.traces, keys))

    def _on_blocklogs(self, names: set[str]) -> None:
        after_commit(lambda: self._add_all(self.blocklogs, names))

    def _on_sessions(self, names: set[str]) -> None:
        after_commit(lambda: self._add_all(self.sessions, names))

    def _room_downstream(self) -> bool:
        """Reading waits while any later stage has a full queue (the learners included:
        the slowest stage sets the pace, and no queue grows with the size of the logs)."""
        return all(len(c.queue) < MAX_BACKLOG for c in self.controllers if c is not self.logfiles)

    def _on_blocklogs_changed(self, names: list[str]) -> None:
        self._ask_learner(EXAMPLES, self.examples, names)

    def _on_sessions_changed(self, names: list[str]) -> None:
        self._ask_learner(SESSION_EXAMPLES, self.session_examples, names)

    def _ask_learner(self, queue: str, learner: Controller | None, names: list[str]) -> None:
        """Durably ask a learner to look (kept while learning is off, for when it is on)."""
        self.journal.mark_dirty(queue, names)
        if learner is not None:
            after_commit(lambda: self._add_all(learner, set(names)))

    def _learning_controller(
        self, name: str, queue: str, learner: Callable[[list[str]], object] | None
    ) -> Controller | None:
        """A controller running `learner` over batches, clearing its durable marks after."""
        if learner is None:
            return None

        def reconcile_many(names: list[str]) -> None:
            seqs = self.journal.dirty_seqs(queue, names)
            learner(names)
            self.journal.clear_dirty(queue, seqs)

        def reconcile(key: str) -> Result:
            reconcile_many([key])
            return DONE

        return self._controller(name, reconcile, reconcile_many=reconcile_many, workers=1)

    def _controller(
        self,
        name: str,
        reconcile: Reconcile,
        *,
        reconcile_many: ReconcileMany | None = None,
        workers: int | None = None,
        unit: tuple[Transactional, ...] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> Controller:
        """A controller with this pipeline's retry policy, workers and unit of work."""
        return Controller(
            name,
            reconcile,
            self.registry,
            workers=workers or self._workers,
            policy=self._policy,
            unit=self._unit if unit is None else unit,
            gate=gate,
            reconcile_many=reconcile_many,
        )

    @staticmethod
    def _add_all(controller: Controller, keys: set[str]) -> None:
        for key in keys:
            controller.add(key)

    def _reconcile_logfile(self, path: str) -> Result:
        result = self.logfile_reconciler.reconcile(path)
        if not result.requeue:
            with self._initial_lock:
                self._initial.discard(path)
        return result

    # -- life cycle ----------------------------------------------------------------------

    def recover_lost_state(self) -> None:
        """Rebuild what a state file deleted while stopped held, from what is left.

        A new journal reads every log file from 0 (LogFiles of rows it no longer
        has are deleted, or each file would be counted twice); a store with no
        LogFile while the journal has read files gets every Trace re-derived
        from the journal, since no dirty mark would ever bring them back.
        """
        files = self.journal.files()
        known = {logfile_name(row, self.settings.node) for row in files}
        logfiles = self.store.list("LogFile", f"foyle.io/node={self.settings.node}")
        if self.journal.created and logfiles:
            log.info(
                "no journal at %s but the store has %d LogFiles: reading every log file"
                " from the start to rebuild it",
                self.journal.path,
                len(logfiles),
            )
        for obj in logfiles:
            if obj["metadata"]["name"] not in known:
                with contextlib.suppress(NotFound):
                    self.store.delete("LogFile", obj["metadata"]["name"])
        if files and not logfiles:
            queued = self.journal.mark_all_traces_dirty()
            log.info(
                "the store holds no LogFile of the %d files the journal has read (deleted?):"
                " re-deriving %d traces from the journal",
                len(files),
                queued,
            )
        elif isinstance(self.store, SQLiteStore):
            self._rederive_missing_traces(self.store)

    def _rederive_missing_traces(self, store: SQLiteStore) -> None:
        """Issue 24: the journal and the local store must agree on which traces exist.

        The two are separate files: a store that lost its last commits (its -wal
        deleted, a backup restored) while the journal kept them lacks Traces no
        dirty mark brings back, and their BlockLogs and Sessions with them. Counting
        first keeps a healthy start cheap; only a shortfall lists the names. (A kube
        store is shared by nodes and sheds Traces by retention: not comparable.)
        """
        if store.count("Trace") >= self.journal.counts()["traces"]:
            return
        names = {name_for_id(key): key for key in self.journal.trace_keys()}
        missing = [names[n] for n in names.keys() - store.versions_many("Trace", names).keys()]
        if missing:
            log.warning(
                "%s lacks %d Traces that %s has read (lost writes: was its -wal file"
                " deleted?); re-deriving them and their BlockLogs and Sessions",
                store.path,
                len(missing),
                self.journal.path,
            )
            self.journal.mark_dirty(TRACES, missing)

    def resync(self) -> None:
        """Re-queue what a previous run left unfinished, from the journal alone.

        Durable dirty marks say which traces, block logs and examples still need a
        reconcile; the abandonment sweep finds idle unfinished traces. None of it
        lists the store, so a start costs what was left undone, not history.
        """
        self.recover_lost_state()
        self._requeue_dirty()
        self._add_journal_files()

    def initial_scan(self) -> int:
        paths = list(scan(self.settings.log_dirs))
        with self._initial_lock:
            self._initial.update(paths)
        for path in paths:
            self.logfiles.add(path)
        return len(paths)

    def start(self) -> None:
        limit_arenas()
        # The watcher before the scan: a file created in between is not missed.
        self.manager.start(self.resync, self.watcher.start, self._first_scan)

    def _first_scan(self) -> None:
        log.info("initial scan found %d log files", self.initial_scan())

    def _initial_scan_done(self) -> bool:
        with self._initial_lock:
            return not self._initial

    def _requeue_dirty(self) -> None:
        for key in self.journal.dirty_keys(TRACES):
            self.traces.add(key)
        for name in self.journal.dirty_keys(BLOCKLOGS):
            self.blocklogs.add(name)
        if self.examples is not None:
            for name in self.journal.dirty_keys(EXAMPLES):
                self.examples.add(name)
        for name in self.journal.dirty_keys(SESSIONS):  # issue 11
            self.sessions.add(name)
        if self.session_examples is not None:
            for name in self.journal.dirty_keys(SESSION_EXAMPLES):
                self.session_examples.add(name)

    def _rescan(self) -> None:
        """The backstop for lost events, and for keys waiting out a long back-off.

        After a long outage (a full disk) per-key back-off reaches many minutes;
        re-queuing the durable dirty marks bounds recovery by the rescan interval.
        """
        for path in scan(self.settings.log_dirs):
            self.logfiles.add(path)
        self._add_journal_files()
        self._requeue_dirty()

    def _add_journal_files(self) -> None:
        """Queue the files being read, those in the log dirs of this run only (issue 24).

        A dir dropped from --logs is no longer tailed; its rows stay as they are, so
        adding it back goes on from their watermarks.
        """
        dirs = [str(d) for d in self.settings.log_dirs]
        for row in self.journal.files(active_only=True):
            if any(Path(row.path).is_relative_to(d) for d in dirs) or inside(
                os.path.realpath(row.path), dirs
            ):
                self.logfiles.add(row.path)

    def _sweep_idle(self) -> None:
        """Queue the unfinished traces idle for longer than --abandon-after (to mark them)."""
        idle_since = time.time() - self.settings.abandon_after
        for key in self.journal.traces_to_abandon(idle_since):
            self.traces.add(key)

    def reconciled(self) -> int:
        """Keys reconciled so far, every controller but the files' (progress reports)."""
        return sum(c.reconciled for c in self.controllers if c is not self.logfiles)

    def queued(self) -> int:
        """Keys waiting, every controller but the files'."""
        return sum(len(c.queue) for c in self.controllers if c is not self.logfiles)

    @property
    def ready(self) -> bool:
        return self.manager.ready

    def run_until_idle(self, timeout: float | None = None) -> bool:
        """Drive every controller until all queues are empty (the one-shot analyze)."""
        return self.manager.run_until_idle(self.resync, self.initial_scan, timeout=timeout)

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop watching, finish in-flight reconciles, close; True when everything drained."""
        self.watcher.stop()
        drained = self.manager.stop(timeout)
        self.logfile_reconciler.close()
        return drained
