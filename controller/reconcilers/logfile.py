"""LogFile reconciler: bring the journal up to the bytes a log path holds now.

`reconcile(paths)` is level-triggered: it looks at what each path is now (which
file identity, how long) and at what the journal says was read, and closes
the gap. Watchdog events only say "look again".

* Same identity, longer: read complete lines from the watermark, in batches;
  each batch is folded into one accumulator per trace and committed with the
  watermark in one journal transaction (which marks the touched traces
  dirty), and the traces touched are handed on to the trace stage.
* Different identity at the path (rename+create rotation, inode reuse):
  drain the old file through the handle still open on it, mark it Rotated
  (or Deleted when its last link is gone), then start the new file at 0;
  an identity already known under another path (renamed into this one) goes
  on from its own watermark, so nothing is read twice.
* Shorter than the watermark or first bytes changed (copytruncate,
  truncation): a new file row from offset 0, the truncation counted and the
  bytes that could not be read reported in `unreadBytes`.
* Gone: drain by handle, then phase Deleted. Unreadable: phase says so.

The LogFile resource is published at most once a second per file (and once
more when the file goes quiet), not on every batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from controller.analyze.traces import TraceAccumulator, trace_key
from controller.api.names import name_for_id
from controller.api.resource import new_resource, rfc3339
from controller.api.result import DONE, Outcome, Result
from controller.logs.framing import MAX_LINE_BYTES, CarryState, ReadBatch, read_batch
from controller.logs.identity import grow_fingerprint, observe
from controller.logs.opening import NotALogFile, open_log_file  # issue 13
from controller.logs.transition import (
    FINGERPRINT_BYTES,
    Change,
    FileIdentity,
    Seen,
    change,
    continues,
)
from controller.store.base import NotFound, Store, read_modify_write
from controller.store.journal import TRACES, Batch, FileRow, Journal, WatermarkMoved

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogFileSettings:
    node: str = "local"
    max_line_bytes: int = MAX_LINE_BYTES
    batch_bytes: int = 4 << 20
    bytes_per_reconcile: int = 8 << 20  # then requeue, so one huge file cannot starve others
    publish_interval: float = 1.0
    idle_after: float = 300.0
    max_open_files: int = 256
    roots: tuple[str, ...] = ()  # issue 13: symlinks are followed only into these (all if ())
    symlinks_anywhere: bool = False
    announce: bool = False  # `run`: log when a file starts being followed, rotates or goes


class IngestObserver(Protocol):
    """Where reading progress goes (runtime.metrics.IngestMetrics); see `_NoIngestMetrics`."""

    def read(self, path: str, lines: int, nbytes: int, now: float) -> None: ...

    def position(self, path: str, size: int, watermark: int) -> None: ...

    def forget(self, path: str) -> None: ...


class _NoIngestMetrics:
    def read(self, path: str, lines: int, nbytes: int, now: float) -> None:
        pass

    def position(self, path: str, size: int, watermark: int) -> None:
        pass

    def forget(self, path: str) -> None:
        pass


def logfile_name(row: FileRow, node: str) -> str:
    base = os.path.basename(row.path) or "file"
    return name_for_id(f"{base}-{node}-{row.uid[:10]}")


def _identity(row: FileRow) -> FileIdentity:
    return FileIdentity(row.device, row.inode, row.fingerprint, row.fingerprint_len)


class _Handles:
    """Open files by journal row id, least recently used closed first (bounded fds)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, file_id: int) -> BinaryIO | None:
        with self._lock:
            f = self._files.get(file_id)
            if f is not None:
                self._files.move_to_end(file_id)
            return f

    def put(self, file_id: int, f: BinaryIO) -> None:
        with self._lock:
            old = self._files.pop(file_id, None)
            if old is not None and old is not f:
                old.close()
            self._files[file_id] = f
            while len(self._files) > self._limit:
                _, victim = self._files.popitem(last=False)
                victim.close()

    def close(self, file_id: int) -> None:
        with self._lock:
            f = self._files.pop(file_id, None)
        if f is not None:
            f.close()

    def close_all(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), OrderedDict()
        for f in files:
            f.close()

    def __len__(self) -> int:
        return len(self._files)


class LogFileReconciler:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        settings: LogFileSettings | None = None,
        clock: Callable[[], float] = time.time,
        metrics: IngestObserver | None = None,
    ) -> None:
        self.metrics = metrics or _NoIngestMetrics()
        self.journal = journal
        self.store = store
        # Traces the current call's reads touched, per worker thread (a retire drains inside
        # a reconcile of another path): handed on to the trace stage in the Outcome.
        self._touched = threading.local()
        self.settings = settings or LogFileSettings()
        self.clock = clock
        self.handles = _Handles(self.settings.max_open_files)
        self._published: dict[int, tuple[float, tuple]] = {}
        self._last_growth: dict[int, float] = {}
        self._path_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._skipped: dict[str, str] = {}  # issue 13: paths never read, and why (logged once)

    # -- entry point ---------------------------------------------------------------------

    def reconcile(self, paths: list[str]) -> Outcome:
        """Read what each path's file holds beyond its watermark (a bounded amount per
        call: a path with more to read is requeued); the traces its lines touched go on to
        the trace stage (the journal marked them durably with the watermark)."""
        outcome = Outcome()
        self._touched.keys = set()
        for path in paths:
            with self._lock_for(path):
                outcome.set_result(path, self._reconcile(path))
        outcome.hand_on(TRACES, self._touched.keys)
        return outcome

    def close(self) -> None:
        """Publish what the publish interval held back, then close every handle.

        A deferred publish is a delayed queue add, which a shutdown drops: without
        this the LogFile status would stay stale until the next start.
        """
        for row in self.journal.files(active_only=True):
            self._publish(row, force=True)
        self.handles.close_all()

    def _lock_for(self, path: str) -> threading.Lock:
        # The queue never hands one path to two workers, but a file renamed from one
        # watched path to another is reachable from both keys.
        with self._locks_guard:
            return self._path_locks.setdefault(path, threading.Lock())

    def _reconcile(self, path: str) -> Result:
        row = self.journal.active_file_at(path)
        try:
            # the handle outlives this call (see _Handles)
            f = open_log_file(
                path, self.settings.roots, symlinks_anywhere=self.settings.symlinks_anywhere
            )
        except FileNotFoundError:
            if row is not None:
                self._retire(row)
            return DONE
        except NotALogFile as err:  # issue 13
            if row is not None:
                self._retire(row)
            return self._skip(path, str(err))
        except (PermissionError, IsADirectoryError, OSError) as err:
            return self._unreadable(path, row, err)

        seen = observe(f)
        if row is not None and not row.fingerprint:
            row = self._first_identity(row, seen.identity())
        if row is not None and continues(_identity(row), row.watermark, seen):
            target = row
            cached = self.handles.get(row.id)
            if cached is not None:
                f.close()
                f = cached
        else:
            target = self._adopt(path, row, seen)
            if not continues(_identity(target), target.watermark, observe(f)):
                # add_file handed back the row a racing reader registered, and the file
                # changed again since: look afresh rather than read at its watermark.
                f.close()
                return Result(requeue=True)
        self.handles.put(target.id, f)
        return self._read(target, f)

    # -- identity ------------------------------------------------------------------------

    def _first_identity(self, row: FileRow, ident: FileIdentity) -> FileRow:
        """A row registered while its file was unreadable has no fingerprint and nothing read.

        Its first readable look defines its identity; comparing against the empty
        fingerprint instead would call the file truncated and start a second row.
        """
        if (row.device, row.inode) != (ident.device, ident.inode):
            return row  # another file took the path: _adopt settles it
        self.journal.update_file(
            row.id, fingerprint=ident.fingerprint, fingerprint_len=ident.fingerprint_len
        )
        return self.journal.file(row.id)

    def _adopt(self, path: str, old: FileRow | None, seen: Seen) -> FileRow:
        """The path holds a file the active row does not describe: settle the old, find the new."""
        what = change(_identity(old), old.watermark, seen) if old is not None else Change.NEW
        truncated = what is Change.TRUNCATED
        if old is not None:
            self._retire(old, truncated=truncated)
        for candidate in self.journal.files_with_inode(seen.device, seen.inode):
            # Any phase: a file renamed from one watched path to another is still Active
            # under its old path when the new path happens to be reconciled first.
            if continues(_identity(candidate), candidate.watermark, seen):
                return self._move(candidate, path)
        ident = seen.identity()
        new = self.journal.add_file(
            path, ident.device, ident.inode, ident.fingerprint, ident.fingerprint_len
        )
        if self.settings.announce:
            log.info("following %s", path)
        if truncated and old is not None:
            unread = max(0, old.size - old.watermark)
            self.journal.update_file(
                new.id, truncations=old.truncations + 1, unread_bytes=old.unread_bytes + unread
            )
            log.warning(
                "log file %s was truncated at offset %d; reading it again from 0"
                " (%d bytes written before the truncation could not be read)",
                path,
                old.watermark,
                unread,
            )
            new = self.journal.file(new.id)
        return new

    def _move(self, row: FileRow, path: str) -> FileRow:
        """The file `row` describes was renamed to `path`: go on from its watermark there.

        The LogFile name follows the path, so the resource under the old name is
        deleted: one file identity, one LogFile (not a stale copy left Active).
        """
        log.info("file %s is the file read before as %s, continuing", path, row.path)
        self.metrics.forget(row.path)
        self.journal.update_file(row.id, path=path, phase="Active")
        moved = self.journal.file(row.id)
        old_name = logfile_name(row, self.settings.node)
        if old_name != logfile_name(moved, self.settings.node):
            with contextlib.suppress(NotFound):
                self.store.delete("LogFile", old_name)
        return moved

    def _retire(self, row: FileRow, *, truncated: bool = False) -> None:
        """Drain what the old handle can still read, then mark the row Rotated or Deleted."""
        handle = self.handles.get(row.id)
        still_linked = False
        if handle is not None and not truncated:
            self._read(row, handle, drain=True)
            still_linked = os.fstat(handle.fileno()).st_nlink > 0
        self.handles.close(row.id)
        phase = "Rotated" if truncated or still_linked else "Deleted"
        self.journal.update_file(row.id, phase=phase)
        self.metrics.forget(row.path)
        if self.settings.announce:
            retired = self.journal.file(row.id)
            log.info(
                "stopped following %s: %s at offset %d of %d",
                row.path,
                "rotated" if phase == "Rotated" else "removed",
                retired.watermark,
                retired.size,
            )
        self._publish(self.journal.file(row.id), force=True)
        self._published.pop(row.id, None)  # retired rows must not pile up in memory
        self._last_growth.pop(row.id, None)

    def _skip(self, path: str, reason: str) -> Result:
        """Issue 13: a path that is no log file is reported once (again if the reason changes)."""
        if self._skipped.get(path) != reason:
            log.warning("not reading %s: %s", path, reason)
            self._skipped[path] = reason
        return DONE

    def _unreadable(self, path: str, row: FileRow | None, err: OSError) -> Result:
        message = f"{type(err).__name__}: {err.strerror or err}"
        if row is None:
            try:
                st = os.stat(path)
            except OSError:
                return DONE
            if not os.path.isfile(path):
                return DONE
            row = self.journal.add_file(path, st.st_dev, st.st_ino, "", 0)
        if row.phase != "Unreadable" or row.last_error != message:
            log.warning("cannot read log file %s: %s", path, message)
            self.journal.update_file(row.id, phase="Unreadable", last_error=message)
            self._publish(self.journal.file(row.id), force=True)
        return DONE

    # -- reading -------------------------------------------------------------------------

    def _read(self, row: FileRow, f: BinaryIO, *, drain: bool = False) -> Result:
        budget = None if drain else self.settings.bytes_per_reconcile
        offset, carry = row.watermark, CarryState(row.carry)
        grew = False
        if row.fingerprint_len < FINGERPRINT_BYTES:
            self._grow_fingerprint(row, f)
        while budget is None or budget > 0:
            size = os.fstat(f.fileno()).st_size
            chunk = (
                self.settings.batch_bytes
                if budget is None
                else min(self.settings.batch_bytes, budget)
            )
            rb = read_batch(
                f, offset, carry, max_bytes=chunk, max_line_bytes=self.settings.max_line_bytes
            )
            if rb.next_offset == offset and rb.carry == carry:
                break
            try:
                touched = self.journal.commit_batch(self._batch(row.id, rb, size), self.clock())
            except WatermarkMoved:
                log.info("file %s: another reader advanced it; looking again", row.path)
                return Result(requeue=True)
            grew = True
            self.metrics.read(row.path, rb.lines, rb.next_offset - rb.start_offset, self.clock())
            self._touched.keys.update(touched)
            offset, carry = rb.next_offset, rb.carry
            if budget is not None:
                budget -= rb.next_offset - rb.start_offset
        now = self.clock()
        if grew:
            self._last_growth[row.id] = now
        current = self.journal.file(row.id)
        size = os.fstat(f.fileno()).st_size
        if current.size != size:
            self.journal.update_file(row.id, size=size)
            current.size = size
        self.metrics.position(current.path, size, current.watermark)
        phase = self._phase(current, now)
        if phase != current.phase and current.phase in ("Active", "Idle", "Unreadable"):
            self.journal.update_file(row.id, phase=phase, last_error="")
            current.phase, current.last_error = phase, ""
        if drain:
            return DONE
        wait = self._publish(current, force=False)
        if budget is not None and budget <= 0:
            return Result(requeue=True)
        return Result(requeue_after=wait) if wait > 0 else DONE

    def _phase(self, row: FileRow, now: float) -> str:
        last = self._last_growth.get(row.id)
        if last is None:
            self._last_growth[row.id] = now
            return "Active"
        return "Idle" if now - last >= self.settings.idle_after else "Active"

    def _grow_fingerprint(self, row: FileRow, f: BinaryIO) -> None:
        """Lengthen a short fingerprint once the file has more bytes (same first bytes only)."""
        try:
            grown = grow_fingerprint(_identity(row), f)
        except ValueError:
            return  # not the same file any more: the next reconcile adopts the new content
        if grown.fingerprint_len > row.fingerprint_len:
            self.journal.update_file(
                row.id, fingerprint=grown.fingerprint, fingerprint_len=grown.fingerprint_len
            )
            row.fingerprint, row.fingerprint_len = grown.fingerprint, grown.fingerprint_len

    def _batch(self, file_id: int, rb: ReadBatch, size: int) -> Batch:
        traces: dict[str, TraceAccumulator] = {}
        for entry in rb.entries:
            key = trace_key(entry)
            if key is not None:
                acc = traces.get(key)
                if acc is None:
                    acc = traces[key] = TraceAccumulator()
                acc.add(entry)
        return Batch(
            file_id=file_id,
            start_offset=rb.start_offset,
            next_offset=rb.next_offset,
            carry=rb.carry.value,
            size=max(size, rb.next_offset),
            lines=rb.lines,
            bad_lines=len(rb.bad),
            last_bad_offset=rb.bad[-1].offset if rb.bad else None,
            traces=traces,
        )

    # -- the LogFile resource ------------------------------------------------------------

    def _publish(self, row: FileRow, *, force: bool) -> float:
        """Write the LogFile status if it changed, at most once per publish interval.

        Returns 0 when the store shows this state, else the seconds until it may be
        written (the caller requeues then, so the file's final state is published).
        """
        now = self.clock()
        status = {
            "offset": row.watermark,
            "size": row.size,
            "lines": row.lines,
            "badLines": row.bad_lines,
            "truncations": row.truncations,
            "unreadBytes": row.unread_bytes,
            "phase": row.phase,
            "device": row.device,
            "inode": row.inode,
            "fingerprint": row.fingerprint,
        }
        if row.last_bad_offset is not None:
            status["lastBadOffset"] = row.last_bad_offset
        if row.last_error:
            status["lastError"] = row.last_error
        signature = tuple(sorted(status.items())) + (row.path,)
        last = self._published.get(row.id)
        if last is not None and last[1] == signature:
            return 0.0
        wait = 0.0 if force or last is None else last[0] + self.settings.publish_interval - now
        if wait > 0:
            return wait
        name = logfile_name(row, self.settings.node)
        spec = {"path": row.path, "node": self.settings.node}

        def mutate(current: dict | None) -> dict | None:
            if current is not None and current.get("spec") == spec:
                shown = {k: v for k, v in current.get("status", {}).items() if k != "lastSyncTime"}
                if shown == status:
                    return None  # e.g. after a restart: a new sync time alone is no change
            desired = current or new_resource(
                "LogFile", name, spec, labels={"foyle.io/node": self.settings.node}, name=name
            )
            desired["spec"] = spec
            desired["status"] = {**status, "lastSyncTime": rfc3339(now)}
            return desired

        read_modify_write(self.store, "LogFile", name, mutate)
        self._published[row.id] = (now, signature)
        return 0.0
