"""This pipeline's wiring: a table of stages, their hints, recovery, resync and the sweeps.

Flow (see docs/design.md), one row of `stages()` per box:

    watchdog / scans --path--> [logfile] --trace keys--> [trace] --names--> [blocklog] --> [example]
                                                                  +--names--> [session] --> [session-example]

(On the local store, a BlockLog or Session the trace stage wrote with its
derived status goes straight to its learner, its own stage would find nothing
to write; and to no one when neither that status nor the one before teaches.)

Every arrow is a key an Outcome hands downstream: the worker loop marks it
durably in the journal in the same unit of work and queues it after the
commit. The marks and the store's `observedGeneration` are what `resync()`
re-queues on start, so no queue needs to survive a crash. The generic
runtime.manager runs the controllers and timers built here;
`run_until_idle()` drives the very same controllers to completion for the
one-shot `foylectl analyze`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from controller.analyze.sessions import context_of
from controller.api.kinds import Resource
from controller.api.names import name_for_id
from controller.api.result import Outcome
from controller.logs.opening import inside
from controller.logs.scanning import scan
from controller.reconcilers.blocklog import BlockLogReconciler
from controller.reconcilers.logfile import LogFileReconciler, LogFileSettings, logfile_name
from controller.reconcilers.session import SessionReconciler
from controller.reconcilers.trace import TraceReconciler, TraceSettings
from controller.runtime.controller import (
    RETRY_FOR_EVER,
    Controller,
    Downstream,
    Reconcile,
    RetryPolicy,
)
from controller.runtime.manager import Manager
from controller.runtime.memory import limit_arenas, release_free_memory
from controller.runtime.metrics import IngestMetrics, MetricsRegistry
from controller.runtime.watcher import LogWatcher
from controller.settings import Settings
from controller.store.base import ChangeFeed, NotFound, Store
from controller.store.journal import (
    ACTIVE_PHASES,
    BLOCKLOGS,
    EXAMPLES,
    SESSION_EXAMPLES,
    SESSIONS,
    TRACES,
    FileRow,
    Journal,
)
from controller.store.sqlite import SQLiteStore
from controller.store.unit import Transactional

log = logging.getLogger(__name__)

# Reading stops while this many keys wait in any later queue (traces, block logs,
# sessions, learners): memory stays bounded whatever the size of the logs (one read
# adds ~bytes_per_reconcile / 100 trace keys at most).
MAX_BACKLOG = 20_000
MEMORY_TRIM_INTERVAL = 10.0  # seconds between returning freed heap memory to the system
# A one-shot run exits when idle, so it ignores "look again later" and gives a failing key
# up after ~0.3 s of back-off: enough for a transient error, bounded for a lasting one.
ONESHOT = RetryPolicy(give_up_after=6, requeue_later=False)
LOGFILES = "logfiles"  # the file stage's queue: paths, hinted by the watcher and the scans


@dataclass(frozen=True)
class Stage:
    """One row of the pipeline: a controller over a queue, and the stages its keys go to.

    `queue` names the stage in Outcome.downstream and is its journal dirty-mark queue.
    The file stage differs on purpose: it reads in transactions of its own (one per
    read batch, with the watermark), its paths need no marks, and the journal marks
    the traces it touched together with the watermark (exactly once), so
    `journal_marks` is False there. A stage whose `reconcile` is None does not run
    (learning off): the marks for it are kept for when it does.
    """

    name: str
    queue: str
    reconcile: Reconcile | None
    downstream: tuple[str, ...] = ()
    workers: int | None = None  # None: --workers
    batch_size: int = 256
    journal_marks: bool = True
    gated: bool = False  # waits while any later stage's queue is full (back-pressure)
    # Opens its own store transactions around its writes, never around its slow work
    # (the learner: embedding calls, training files), so it runs in no unit of work.
    own_transactions: bool = False


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        journal: Journal,
        registry: MetricsRegistry | None = None,
        learner: Reconcile | None = None,
        oneshot: bool = False,
        session_learner: Reconcile | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.manager = Manager(registry)
        self.registry = self.manager.registry
        self._policy = ONESHOT if oneshot else RETRY_FOR_EVER
        self._workers = max(1, settings.workers)
        self.logfile_reconciler = LogFileReconciler(
            store,
            journal,
            settings=LogFileSettings(
                node=settings.node,
                max_line_bytes=settings.max_line_bytes,
                publish_interval=0.0 if oneshot else 1.0,
                rotate_wait=0.0 if oneshot else settings.rotate_wait,  # issue 24
                roots=tuple(str(d) for d in settings.log_dirs),  # issue 13
                symlinks_anywhere=settings.symlinks_anywhere,  # issue 13
                announce=not oneshot,
            ),
            metrics=IngestMetrics(self.registry),
        )
        # `run --store kube`: Traces finished --trace-retention ago are settled into their
        # BlockLogs and Sessions and deleted (retention.py); the local store and the
        # one-shot `analyze` (which has no such flag) keep them all.
        settles = settings.store == "kube" and not oneshot
        settle_after = settings.trace_retention if settles else 0.0
        trace = TraceReconciler(
            store, journal, settings=TraceSettings(settings.abandon_after, settle_after)
        )
        self.stages = (
            Stage(
                "logfile",
                LOGFILES,
                self._reconcile_logfiles,
                (TRACES,),
                batch_size=1,
                journal_marks=False,
                gated=True,
            ),
            Stage(
                "trace",
                TRACES,
                trace.reconcile,
                (BLOCKLOGS, SESSIONS, EXAMPLES, SESSION_EXAMPLES),
            ),
            Stage("blocklog", BLOCKLOGS, BlockLogReconciler(store).reconcile, (EXAMPLES,)),
            Stage("session", SESSIONS, SessionReconciler(store).reconcile, (SESSION_EXAMPLES,)),
            Stage("example", EXAMPLES, learner, workers=1, own_transactions=True),
            Stage(
                "session-example",
                SESSION_EXAMPLES,
                session_learner,
                workers=1,
                own_transactions=True,
            ),
        )
        self.controllers_by_queue = self._build(self.stages, store)
        self.logfiles = self.controllers_by_queue[LOGFILES]
        self.controllers = self.manager.controllers
        inotify_fallbacks = self.registry.counter(
            "watcher_inotify_fallbacks_total",
            "Times inotify could not watch the log dirs (a limit reached) and polling took over.",
            ["reason"],
        )
        self.watcher = LogWatcher(
            settings.log_dirs,
            self.logfiles.add,
            poll=settings.poll,
            on_fallback=lambda reason: inotify_fallbacks.labels(reason).inc(),
        )
        if isinstance(store, ChangeFeed):  # several ingesters (issue 19)
            blocklogs, sessions = (
                self.controllers_by_queue[BLOCKLOGS],
                self.controllers_by_queue[SESSIONS],
            )
            store.on_change("Trace", self._trace_changed_elsewhere)
            store.on_change("BlockLog", partial(self._joined_changed_elsewhere, blocklogs))
            store.on_change("Session", partial(self._joined_changed_elsewhere, sessions))
        self._log_dirs = [str(d) for d in settings.log_dirs]
        self._initial: set[str] = set()
        self._initial_lock = threading.Lock()
        self.manager.every(settings.rescan_interval, self._rescan, "rescan")
        self.manager.every(MEMORY_TRIM_INTERVAL, release_free_memory, "trim")
        self.manager.every(min(60.0, settings.abandon_after / 10), self._sweep_idle, "abandon")
        self.manager.ready_when(self._initial_scan_done, "caught up with the initial scan")

    # -- wiring --------------------------------------------------------------------------

    def _build(self, stages: tuple[Stage, ...], store: Store) -> dict[str, Controller]:
        """A controller per running stage, each connected to the stages it hands keys to."""
        # Batch reconciles into one commit per database where the store is local SQLite
        # (the journal first: the store commits first, so a crash leaves dirty marks).
        # A store of round trips (the API server) gets no unit: a journal transaction
        # held across a reconcile's requests would let one stage send at a time (issue
        # 19: the catch-up waited on the journal's lock). Dirty marks are cleared after
        # the reconcile, by sequence, so a crash repeats work and loses none.
        unit: tuple[Transactional, ...] = ()
        if isinstance(store, Transactional):
            unit = (self.journal, store)
        controllers: dict[str, Controller] = {}
        for stage in stages:
            if stage.reconcile is None:
                continue
            controllers[stage.queue] = self.manager.add(
                Controller(
                    stage.name,
                    stage.reconcile,
                    self.registry,
                    workers=stage.workers or self._workers,
                    policy=self._policy,
                    unit=unit if stage.journal_marks and not stage.own_transactions else (),
                    batch_size=stage.batch_size,
                    gate=self._room_downstream if stage.gated else None,
                    marks=self.journal,
                    marks_queue=stage.queue if stage.journal_marks else None,
                )
            )
        for stage in stages:
            if stage.queue not in controllers:
                continue
            for queue in stage.downstream:
                controllers[stage.queue].connect(
                    queue,
                    Downstream(queue if stage.journal_marks else None, controllers.get(queue)),
                )
        return controllers

    def _trace_changed_elsewhere(self, trace: Resource) -> None:
        """Another ingester wrote a Trace: the BlockLogs and Session it joins derive their
        status again here too (this process may have derived them without it)."""
        spec = trace.get("spec") or {}
        self.controllers_by_queue[BLOCKLOGS].add_all(map(name_for_id, spec.get("blockIds") or ()))
        context_id = context_of(spec)
        if context_id:
            self.controllers_by_queue[SESSIONS].add(name_for_id(context_id))

    @staticmethod
    def _joined_changed_elsewhere(controller: Controller, obj: Resource) -> None:
        """Another ingester changed a BlockLog's (Session's) members: derive its status."""
        if obj["metadata"].get("generation") != (obj.get("status") or {}).get("observedGeneration"):
            controller.add(obj["metadata"]["name"])

    def _room_downstream(self) -> bool:
        """Reading waits while any later stage has a full queue (the learners included:
        the slowest stage sets the pace, and no queue grows with the size of the logs)."""
        return all(len(c.queue) < MAX_BACKLOG for c in self.controllers if c is not self.logfiles)

    def _reconcile_logfiles(self, paths: list[str]) -> Outcome:
        outcome = self.logfile_reconciler.reconcile(paths)
        read_to_the_end = {p for p in paths if not outcome.result(p).requeue}
        with self._initial_lock:
            self._initial -= read_to_the_end
        return outcome

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
        self._queue_journal_files(self.journal.files())

    def initial_scan(self) -> int:
        paths = list(scan(self.settings.log_dirs))
        with self._initial_lock:
            self._initial.update(paths)
        self.logfiles.add_all(paths)
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
        """Queue every key a stage's durable marks still hold (a stage not running keeps them)."""
        for stage in self.stages:
            controller = self.controllers_by_queue.get(stage.queue)
            if stage.journal_marks and controller is not None:
                controller.add_all(self.journal.dirty_keys(stage.queue))

    def _rescan(self) -> None:
        """The backstop for lost events, and for keys waiting out a long back-off.

        After a long outage (a full disk) per-key back-off reaches many minutes;
        re-queuing the durable dirty marks bounds recovery by the rescan interval.
        A file read to its end whose stat has not changed since is not looked at again
        (LogFileReconciler.unchanged_since_read): an event it lost would have changed it.
        """
        unchanged = self.logfile_reconciler.unchanged_since_read
        self.logfiles.add_all(path for path in scan(self.settings.log_dirs) if not unchanged(path))
        rows = self.journal.files()  # one read of the file rows for the three passes
        self._queue_journal_files([row for row in rows if not unchanged(row.path)])
        self.logfile_reconciler.prune_deleted(rows)
        self._requeue_dirty()

    def _queue_journal_files(self, rows: list[FileRow]) -> None:
        """Queue the journal's files of this run's log dirs (issue 24): those being read,
        and the rotated ones that grew since they were let go (or since a kill cut their
        drain short), to drain again.

        A dir dropped from --logs is no longer tailed; its rows stay as they are, so
        adding it back goes on from their watermarks.
        """
        ours = [row for row in rows if self._in_log_dirs(row.path)]
        self.logfiles.add_all(row.path for row in ours if row.phase in ACTIVE_PHASES)
        rotated = (row for row in ours if row.phase == "Rotated")
        self.logfiles.add_all(self.logfile_reconciler.resume_drains(rotated))

    def _in_log_dirs(self, path: str) -> bool:
        return any(Path(path).is_relative_to(d) for d in self._log_dirs) or inside(
            os.path.realpath(path), self._log_dirs
        )

    def settle_traces(self, keys: list[str]) -> None:
        """Queue Traces that retention found due: the trace reconciler settles them."""
        self.controllers_by_queue[TRACES].add_all(keys)

    def _sweep_idle(self) -> None:
        """Queue the unfinished traces idle for longer than --abandon-after (to mark them)."""
        idle_since = time.time() - self.settings.abandon_after
        self.controllers_by_queue[TRACES].add_all(self.journal.traces_to_abandon(idle_since))

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
