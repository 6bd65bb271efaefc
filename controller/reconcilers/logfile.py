"""LogFile reconciler: bring the journal up to the bytes a log path holds now.

`reconcile(paths)` is level-triggered: it looks at what each path is now (which
file identity, how long) and at what the journal says was read, and closes
the gap. Watchdog events only say "look again".

* Same identity, longer: read complete lines from the watermark, in batches;
  each batch is folded into one accumulator per trace and committed with the
  watermark in one journal transaction, then
  the traces it touched are handed on to the trace stage.
* Different identity at the path (rename+create rotation, inode reuse):
  drain the old file through the handle still open on it, mark it Rotated
  (or Deleted when its last link is gone), then start the new file at 0;
  an identity already known under another path (renamed into this one) goes
  on from its own watermark, so nothing is read twice. The writer of a
  rotated file often goes on writing to its old descriptor for a while
  (logrotate's `create` mode): the handle is kept and drained on each look
  at the path until the file has been quiet for `rotate_wait` seconds; what
  is then left (a last line never finished) is reported in `unreadBytes`.
  A rotated file that grows after that (a writer starved or stopped past the
  wait), or whose drain a kill cut short, is drained again on the next rescan
  or start (`resume_drains`); one renamed to a name nobody watches before its
  log name was looked at is drained under that name (`_rotated_away`).
* First bytes changed or gone (copytruncate, truncation): a new file row from
  offset 0, the truncation counted and the bytes that could not be read
  reported in `unreadBytes`. Shorter with the same first bytes (a last
  newline taken away and put back) goes on at the watermark: only a real
  truncation reads again from 0.
* Gone: drain by handle, then phase Deleted. Unreadable: phase says so.

One reader per file identity, whatever its names: a file renamed from one
watched path to another is reachable from both keys, so every read of a
file holds the lock of its (device, inode) (`_StripedLocks`), and what the
path holds is looked at again under that lock (a size seen before another
reader moved the watermark past it would look like a truncation). A file can
still be truncated between that look and a read: each batch is checked
against the file's first bytes before it is committed (`_still_the_file`).

The LogFile resource is published at most once a second per file (and once
more when the file goes quiet), not on every batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from controller.analyze.traces import TraceAccumulator, trace_key
from controller.api.names import name_for_id
from controller.api.resource import new_resource, rfc3339
from controller.api.result import DONE, Outcome, Result
from controller.logs.framing import (
    MAX_BATCH_LINES,
    MAX_LINE_BYTES,
    CarryState,
    ReadBatch,
    read_batch,
)
from controller.logs.identity import grow_fingerprint, observe
from controller.logs.opening import NotALogFile, is_log_file, open_log_file  # issue 13
from controller.logs.transition import (
    ROTATE_WAIT,
    Change,
    FileIdentity,
    Seen,
    change,
    continues,
    same_file,
)
from controller.store.base import NotFound, Store, read_modify_write
from controller.store.journal import TRACES, Batch, FileRow, Journal, WatermarkMoved

log = logging.getLogger(__name__)

DRAIN_POLL = 0.5  # a rotated file sends no events under a watched name: look this often


def _sooner(result: Result, wait: float | None) -> Result:
    """`result`, asking to look again within `wait` seconds too."""
    if wait is None or result.requeue:
        return result
    after = wait if result.requeue_after is None else min(wait, result.requeue_after)
    return Result(requeue_after=after)


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file is written, replaced, truncated or touched."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class LogFileSettings:
    node: str = "local"
    max_line_bytes: int = MAX_LINE_BYTES
    # Parsed, a batch takes ~7x its bytes: 4 MiB batches held ~30 MB at a time (issue 23).
    batch_bytes: int = 1 << 20
    batch_lines: int = MAX_BATCH_LINES  # memory is bounded by bytes only if lines are bounded too
    bytes_per_reconcile: int = 8 << 20  # then requeue, so one huge file cannot starve others
    publish_interval: float = 1.0
    idle_after: float = 300.0
    max_open_files: int = 256
    keep_deleted: int = 1000  # rows (and LogFiles) of deleted files kept, newest first
    rotate_wait: float = ROTATE_WAIT  # a rotated file is read until quiet this long
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


class _StripedLocks:
    """A lock per key (striped: memory bounded however many files come and go), taken
    in one order (no deadlock)."""

    def __init__(self, stripes: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    @contextlib.contextmanager
    def held(self, keys: Iterable[Hashable]) -> Iterator[None]:
        stripes = sorted({hash(key) % len(self._locks) for key in keys})
        with contextlib.ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._locks[stripe])
            yield


class _Handles:
    """Open files by journal row id, least recently used closed first (bounded fds).

    A handle in use is never closed under its reader: eviction skips it (the
    bound is then exceeded by at most one handle per worker).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()
        self._busy: Counter[int] = Counter()
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
            idle = [i for i in self._files if not self._busy[i] and i != file_id]
            for victim in idle[: max(0, len(self._files) - self._limit)]:
                self._files.pop(victim).close()

    @contextlib.contextmanager
    def in_use(self, file_id: int) -> Iterator[None]:
        with self._lock:
            self._busy[file_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[file_id] -= 1
                if not self._busy[file_id]:
                    del self._busy[file_id]

    def take(self, file_id: int) -> BinaryIO | None:
        """The handle, no longer cached (the caller closes it)."""
        with self._lock:
            return self._files.pop(file_id, None)

    def close(self, file_id: int) -> None:
        f = self.take(file_id)
        if f is not None:
            f.close()

    def close_all(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), OrderedDict()
        for f in files:
            f.close()

    def __len__(self) -> int:
        return len(self._files)


def _names_by_inode(directory: str) -> dict[int, list[str]]:
    """The paths in `directory` by inode ({} if it cannot be listed)."""
    names: dict[int, list[str]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                names.setdefault(entry.inode(), []).append(entry.path)
    except OSError:
        return {}
    return names


def _any_longer(paths: Iterable[str], size: int) -> bool:
    """Some of `paths` holds more than `size` bytes (a stat: no open of every rotated file)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_size > size:
                return True
    return False


@dataclass
class _Draining:
    """A rotated file still read through its handle until its writer has been quiet."""

    handle: BinaryIO
    rotated_from: str  # the path whose reconcile drains it
    size: int
    quiet_since: float
    unread_before: int  # the row's unreadBytes but the tail this drain will report


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
        # Traces the current call's reads touched, per worker thread (a drain of a rotated
        # file runs inside a reconcile of its path): handed on to the trace stage.
        self._touched = threading.local()
        self.settings = settings or LogFileSettings()
        self.clock = clock
        self.handles = _Handles(self.settings.max_open_files)
        self._identities = _StripedLocks()  # one reader per file identity
        self._paths = _StripedLocks()  # one reconcile per path (a queue key)
        self._draining: dict[int, _Draining] = {}
        self._draining_lock = threading.Lock()
        self._published: dict[int, tuple[float, tuple]] = {}
        self._last_growth: dict[int, float] = {}
        self._sizes: dict[int, tuple[int, float]] = {}  # a file's size, and since when
        self._skipped: dict[str, str] = {}  # issue 13: paths never read, and why (logged once)
        # Paths read to their end at their last look: the file's stat then, and when its
        # phase turns Idle (a rescan looks again only if either says so).
        self._read_to_end: dict[str, tuple[tuple[int, ...], float]] = {}

    # -- entry point ---------------------------------------------------------------------

    def reconcile(self, paths: list[str]) -> Outcome:
        """Read what each path's file holds beyond its watermark (a bounded amount per
        call: a path with more to read is requeued) and drain files rotated away from it;
        the traces their lines touched go on to the trace stage (the journal marked them
        durably with the watermark)."""
        outcome = Outcome()
        self._touched.keys = set()
        for path in paths:
            with self._paths.held([path]):
                result = self._reconcile(path)
                wait = self._drain_rotated(path)
            outcome.set_result(path, _sooner(result, wait))
        outcome.hand_on(TRACES, self._touched.keys)
        return outcome

    def close(self) -> None:
        """Publish what the publish interval held back, then close every handle.

        A deferred publish is a delayed queue add, which a shutdown drops: without
        this the LogFile status would stay stale until the next start. Rotated files
        still draining are read one last time and what is left is reported unread.
        """
        with self._draining_lock:
            draining = list(self._draining)
        for file_id in draining:
            self._drain_one(file_id, final=True)
        for row in self.journal.files(active_only=True):
            self._publish(row, force=True)
        self.handles.close_all()

    def unchanged_since_read(self, path: str) -> bool:
        """True when `path`'s file was read to its end at its last look and is as it was
        then (same inode, size, mtime and ctime), its phase not due to turn Idle: a rescan
        need not look at it.

        A look opens the file, resolves its path and reads the journal (~4 ms here); a
        stat is ~10 us. With every file looked at, a rescan of 10,000 idle files took
        longer than the 30 s between rescans, and a hot file's line waited behind them.
        """
        seen = self._read_to_end.get(path)
        if seen is None:
            return False
        try:
            st = os.stat(path)
        except OSError:
            self._read_to_end.pop(path, None)
            return False
        stat, idle_due = seen
        return _stat_key(st) == stat and self.clock() < idle_due

    def _reconcile(self, path: str) -> Result:
        self._read_to_end.pop(path, None)  # any look may change what it holds: set again below
        if not is_log_file(path):
            return self._rotated_away(path)
        row = self.journal.active_file_at(path)
        try:
            # the handle outlives this call (see _Handles)
            f = open_log_file(
                path, self.settings.roots, symlinks_anywhere=self.settings.symlinks_anywhere
            )
        except FileNotFoundError:
            return self._retire_at(path, row)
        except NotALogFile as err:  # issue 13
            self._retire_at(path, row)
            return self._skip(path, str(err))
        except (PermissionError, IsADirectoryError, OSError) as err:
            return self._unreadable(path, row, err)

        st = os.fstat(f.fileno())
        inodes = {(st.st_dev, st.st_ino)} | ({(row.device, row.inode)} if row else set())
        with self._identities.held(inodes):
            current = self.journal.active_file_at(path)
            if (current and current.id) != (row and row.id):
                f.close()  # another reader settled this path meanwhile: look afresh
                return Result(requeue=True)
            row = current  # its watermark as of now, under the lock
            seen = observe(f)  # now: after the watermark this decision compares with
            if row is not None and not row.fingerprint:
                row = self._first_identity(row, seen.identity())
            if row is not None and continues(_identity(row), row.watermark, seen):
                return self._read_through_cache(row, f)
            target = self._adopt(path, row, seen)
            if not continues(_identity(target), target.watermark, observe(f)):
                # add_file handed back the row a racing reader registered, and the
                # file changed again since: look afresh rather than read at its watermark.
                f.close()
                return Result(requeue=True)
            return self._read_through_cache(target, f)

    def _rotated_away(self, path: str) -> Result:
        """A log file renamed to a name nobody watches: drained here as a rotated file
        if no row knows it, i.e. it was renamed before its log name was looked at.

        A known file is drained by its old path's reconcile; a key for a rotated
        row's path (`resume_drains`) only drives its drain.
        """
        try:
            f = open_log_file(
                path, self.settings.roots, symlinks_anywhere=self.settings.symlinks_anywhere
            )
        except OSError:
            return DONE  # gone again, or no log file: nothing known was in it
        st = os.fstat(f.fileno())
        with self._identities.held([(st.st_dev, st.st_ino)]):
            # observed under the lock: a fingerprint another reader grew meanwhile
            # would not fit a head taken before it (and the file read twice)
            seen = observe(f)
            known = self.journal.files_with_inode(seen.device, seen.inode)
            if any(same_file(_identity(row), seen) for row in known):
                f.close()
                return DONE
            ident = seen.identity()
            row = self.journal.add_file(
                path, ident.device, ident.inode, ident.fingerprint, ident.fingerprint_len
            )
            log.info("%s was rotated before it was read; reading it", path)
            rotated = self.journal.update_file(row.id, phase="Rotated")
            with self._draining_lock:
                self._draining[row.id] = _Draining(f, path, seen.size, self.clock(), 0)
        self._publish(rotated, force=True)
        return DONE

    def _read_through_cache(self, row: FileRow, f: BinaryIO) -> Result:
        """Read `row` through its cached handle (`f` if none), kept open for next time."""
        with self.handles.in_use(row.id):
            cached = self.handles.get(row.id)
            if cached is not None and cached is not f:
                f.close()
                f = cached
            self.handles.put(row.id, f)
            return self._read(row, f)

    def _retire_at(self, path: str, row: FileRow | None) -> Result:
        """Nothing readable at `path` any more: retire the row that was reading it."""
        if row is None:
            return DONE
        with self._identities.held([(row.device, row.inode)]):
            current = self.journal.active_file_at(path)
            if current is not None and current.id == row.id:
                self._retire(current)
        return DONE

    # -- identity ------------------------------------------------------------------------

    def _first_identity(self, row: FileRow, ident: FileIdentity) -> FileRow:
        """A row registered while its file was unreadable has no fingerprint and nothing read.

        Its first readable look defines its identity; comparing against the empty
        fingerprint instead would call the file truncated and start a second row.
        """
        if (row.device, row.inode) != (ident.device, ident.inode):
            return row  # another file took the path: _adopt settles it
        return self.journal.update_file(
            row.id, fingerprint=ident.fingerprint, fingerprint_len=ident.fingerprint_len
        )

    def _adopt(self, path: str, old: FileRow | None, seen: Seen) -> FileRow:
        """The path holds a file the active row does not describe: settle the old, find the new."""
        what = change(_identity(old), old.watermark, seen) if old is not None else Change.NEW
        truncated = what is Change.TRUNCATED
        if old is not None:
            self._retire(old, truncated=truncated)
        candidates = self.journal.files_with_inode(seen.device, seen.inode)
        for candidate in candidates:
            # Any phase: a file renamed from one watched path to another is still Active
            # under its old path when the new path happens to be reconciled first.
            if continues(_identity(candidate), candidate.watermark, seen):
                return self._move(candidate, path)
        for candidate in candidates:
            # A rotated row of this file, truncated since: the new row reads it from 0,
            # so its drain must not start another row for the same bytes.
            handle = self._stop_draining(candidate.id)
            if handle is not None:
                handle.close()
                self._forget(candidate)
        ident = seen.identity()
        new = self.journal.add_file(
            path, ident.device, ident.inode, ident.fingerprint, ident.fingerprint_len
        )
        if self.settings.announce:
            log.info("following %s", path)
        return self._count_truncation(old, new) if truncated and old is not None else new

    def _count_truncation(self, old: FileRow, new: FileRow) -> FileRow:
        """`new` reads from 0 the file `old` read before it was truncated: say what was lost."""
        unread = max(0, old.size - old.watermark)
        counted = self.journal.update_file(
            new.id, truncations=old.truncations + 1, unread_bytes=old.unread_bytes + unread
        )
        log.warning(
            "log file %s was truncated at offset %d; reading it again from 0"
            " (%d bytes written before the truncation could not be read)",
            new.path,
            old.watermark,
            unread,
        )
        return counted

    def _truncated_under_handle(self, row: FileRow, handle: BinaryIO) -> FileRow | None:
        """The row to drain `handle` with: a new one from 0 if the file was truncated,
        None if another row already reads its new content.

        A file can be truncated and rewritten (copytruncate) and then renamed away
        before the path is looked at again; reading it at the old watermark would
        skip what was written since the truncation, and reading it from 0 when its
        new name's row already does would read it twice.
        """
        seen = observe(handle)
        if change(_identity(row), row.watermark, seen) is not Change.TRUNCATED:
            return row
        self._forget(self.journal.update_file(row.id, phase="Rotated"))
        for other in self.journal.files_with_inode(seen.device, seen.inode):
            if other.id != row.id and continues(_identity(other), other.watermark, seen):
                return None
        ident = seen.identity()
        new = self.journal.add_file(
            row.path, ident.device, ident.inode, ident.fingerprint, ident.fingerprint_len
        )
        rotated = self.journal.update_file(new.id, phase="Rotated")  # never the path's active row
        return self._count_truncation(row, rotated)

    def _move(self, row: FileRow, path: str) -> FileRow:
        """The file `row` describes was renamed to `path`: go on from its watermark there.

        The LogFile name follows the path, so the resource under the old name is
        deleted: one file identity, one LogFile (not a stale copy left Active).
        """
        log.info("file %s is the file read before as %s, continuing", path, row.path)
        self.metrics.forget(row.path)
        handle = self._stop_draining(row.id)
        if handle is not None:
            handle.close()  # the path's own handle reads it from now on
        moved = self.journal.update_file(row.id, path=path, phase="Active")
        old_name = logfile_name(row, self.settings.node)
        if old_name != logfile_name(moved, self.settings.node):
            with contextlib.suppress(NotFound):
                self.store.delete("LogFile", old_name)
        return moved

    def _retire(self, row: FileRow, *, truncated: bool = False) -> None:
        """Drain what the old file still holds, then mark the row Rotated or Deleted.

        A rotated file whose writer may still append is kept open and drained until
        it is quiet (`_drain_rotated`). A handle closed by the open-file bound is
        found again by its inode beside its old path (logrotate renames in place).
        """
        handle = self.handles.take(row.id)
        if handle is not None and truncated:
            handle.close()
            handle = None
        elif handle is None and not truncated:
            handle = self._reopen_renamed(row)
        if handle is None:
            self._forget(
                self.journal.update_file(row.id, phase="Rotated" if truncated else "Deleted")
            )
            return
        owner = self._truncated_under_handle(row, handle)
        if owner is None:
            handle.close()  # its new content is another row's
            return
        row = owner
        with self.handles.in_use(row.id):
            self._read(row, handle, drain=True)
        phase = "Rotated" if os.fstat(handle.fileno()).st_nlink > 0 else "Deleted"
        retired = self.journal.update_file(row.id, phase=phase)
        if self.settings.rotate_wait <= 0:
            self._finish_drain(retired, handle, retired.unread_bytes)
            return
        now = self.clock()
        with self._draining_lock:
            self._draining[row.id] = _Draining(
                handle, row.path, os.fstat(handle.fileno()).st_size, now, retired.unread_bytes
            )
        self._publish(retired, force=True)

    def _reopen_renamed(
        self, row: FileRow, names: dict[int, list[str]] | None = None
    ) -> BinaryIO | None:
        """The file of `row` under another name in its directory, opened; None if not there.

        `names`: its directory's names by inode, when the caller listed it already.
        """
        if names is None:
            names = _names_by_inode(os.path.dirname(row.path) or ".")
        for name in names.get(row.inode, ()):
            try:
                f = open_log_file(
                    name, self.settings.roots, symlinks_anywhere=self.settings.symlinks_anywhere
                )
            except OSError:
                continue
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) == (row.device, row.inode):
                # Its first bytes may have changed (copytruncate before the rename): the
                # caller reads it again from 0 then (_truncated_under_handle).
                log.info("file %s was rotated to %s; reading what is left", row.path, name)
                return f
            f.close()
        return None

    def resume_drains(self, rotated: Iterable[FileRow]) -> list[str]:
        """Drain again the files of `rotated` rows that hold bytes past their watermark;
        the old paths, whose looks drive the drains, for the caller to queue.

        A drain lives in memory only: after a SIGKILL its row says Rotated and
        nothing would read what the writer appended since to a name nobody
        watches; a writer quiet for longer than `rotate_wait` (starved, stopped)
        may append after its file was let go. Called at start and on each rescan,
        with one listing per directory however many rotated rows it has.
        """
        by_dir: dict[str, list[FileRow]] = {}
        for row in rotated:
            by_dir.setdefault(os.path.dirname(row.path) or ".", []).append(row)
        paths = []
        for directory, rows in by_dir.items():
            names = _names_by_inode(directory)
            for row in rows:
                grew = _any_longer(names.get(row.inode, ()), row.watermark)
                if grew and self._resume_drain(row, names):
                    paths.append(row.path)
        return paths

    def prune_deleted(self, rows: Iterable[FileRow]) -> int:
        """Forget all but the newest `keep_deleted` rows of deleted files, and their
        LogFiles; how many were forgotten.

        A deleted file is never read again, yet every file a churning writer made
        stayed in the journal and the store for good (30,000 files: +67 MB on
        disk). The journal rows go first: a LogFile left by a crash in between is
        removed at the next start (recover_lost_state).
        """
        deleted = [row for row in rows if row.phase == "Deleted"]
        deleted.sort(key=lambda row: row.id)
        old = deleted[: max(0, len(deleted) - self.settings.keep_deleted)]
        if not old:
            return 0
        self.journal.delete_files([row.id for row in old])
        for row in old:
            with contextlib.suppress(NotFound):
                self.store.delete("LogFile", logfile_name(row, self.settings.node))
        return len(old)

    def _resume_drain(self, row: FileRow, names: dict[int, list[str]]) -> bool:
        with self._identities.held([(row.device, row.inode)]):
            newest = self.journal.files_with_inode(row.device, row.inode)[0]
            with self._draining_lock:
                if newest.id != row.id or newest.phase != "Rotated" or row.id in self._draining:
                    return False  # read by a newer row (truncated, moved), or draining now
            current = newest
            handle = self._reopen_renamed(current, names)
            if handle is None:
                return False
            seen = observe(handle)
            if seen.size <= current.watermark or not continues(
                _identity(current), current.watermark, seen
            ):
                handle.close()
                return False
            log.info("%s: reading its rotated file again, which grew", current.path)
            tail = max(0, current.size - current.watermark)  # reported when it was let go
            with self._draining_lock:
                self._draining[row.id] = _Draining(
                    handle,
                    row.path,
                    seen.size,
                    self.clock(),
                    max(0, current.unread_bytes - tail),
                )
            return True

    def _drain_rotated(self, path: str) -> float | None:
        """Read the files rotated away from `path` again; seconds until the next look."""
        with self._draining_lock:
            ids = [i for i, d in self._draining.items() if d.rotated_from == path]
        waits = [w for w in (self._drain_one(i) for i in ids) if w is not None]
        return min(waits) if waits else None

    def _drain_one(self, file_id: int, *, final: bool = False) -> float | None:
        with self._draining_lock:
            draining = self._draining.get(file_id)
        if draining is None:
            return None
        row = self.journal.file(file_id)
        with self._identities.held([(row.device, row.inode)]):
            with self._draining_lock:
                if self._draining.get(file_id) is not draining:
                    return None  # renamed to a watched path meanwhile: read from there
            owner = self._truncated_under_handle(self.journal.file(file_id), draining.handle)
            if owner is None:
                self._stop_draining(file_id)
                draining.handle.close()  # its new content is another row's
                return None
            row = owner
            if row.id != file_id:
                with self._draining_lock:
                    self._draining[row.id] = self._draining.pop(file_id)
            with self.handles.in_use(row.id):
                self._read(row, draining.handle, drain=True)
            now, size = self.clock(), os.fstat(draining.handle.fileno()).st_size
            if size != draining.size:
                draining.size, draining.quiet_since = size, now
            left = draining.quiet_since + self.settings.rotate_wait - now
            if left > 0 and not final:
                self._publish(self.journal.file(row.id), force=False)
                return min(left, DRAIN_POLL)
            self._stop_draining(row.id)
            with self.handles.in_use(row.id):  # its writer is quiet: a last object is whole
                self._read(self.journal.file(row.id), draining.handle, drain=True, final=True)
            self._finish_drain(self.journal.file(row.id), draining.handle, draining.unread_before)
        return None

    def _stop_draining(self, file_id: int) -> BinaryIO | None:
        """No longer drain `file_id` as a rotated file: its handle, for the caller to close."""
        with self._draining_lock:
            draining = self._draining.pop(file_id, None)
        return draining.handle if draining is not None else None

    def _finish_drain(self, row: FileRow, handle: BinaryIO, unread_before: int) -> None:
        """The writer is quiet: report what could not be read (an unfinished last line)."""
        st = os.fstat(handle.fileno())
        handle.close()
        unread = max(0, st.st_size - row.watermark)
        if unread:
            log.warning(
                "rotated log file %s ends with %d bytes that are no complete line;"
                " they are counted as unread",
                row.path,
                unread,
            )
        finished = self.journal.update_file(
            row.id,
            phase="Rotated" if st.st_nlink > 0 else "Deleted",
            unread_bytes=unread_before + unread,
            size=st.st_size,
        )
        self._forget(finished)

    def _forget(self, row: FileRow) -> None:
        """Publish a retired row's last state and drop what memory held of it."""
        self.metrics.forget(row.path)
        if self.settings.announce:
            log.info(
                "stopped following %s: %s at offset %d of %d",
                row.path,
                "rotated" if row.phase == "Rotated" else "removed",
                row.watermark,
                row.size,
            )
        self._publish(row, force=True)
        self._published.pop(row.id, None)  # retired rows must not pile up in memory
        self._last_growth.pop(row.id, None)
        self._sizes.pop(row.id, None)

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
            self._publish(
                self.journal.update_file(row.id, phase="Unreadable", last_error=message), force=True
            )
        return DONE

    # -- reading -------------------------------------------------------------------------

    def _read(
        self, row: FileRow, f: BinaryIO, *, drain: bool = False, final: bool = False
    ) -> Result:
        """Read `row`'s file from its watermark; a last complete object without its
        newline only once the file is quiet for `rotate_wait` (or `final`): taken at
        once, a first part continued later counted a line `analyze` never sees."""
        budget = None if drain else self.settings.bytes_per_reconcile
        offset, carry = row.watermark, CarryState(row.carry)
        quiet = self._quiet_for(row.id, os.fstat(f.fileno()).st_size)
        take_unterminated = final or quiet >= self.settings.rotate_wait
        grew = False
        while budget is None or budget > 0:
            size = os.fstat(f.fileno()).st_size
            chunk = (
                self.settings.batch_bytes
                if budget is None
                else min(self.settings.batch_bytes, budget)
            )
            rb = read_batch(
                f,
                offset,
                carry,
                max_bytes=chunk,
                max_line_bytes=self.settings.max_line_bytes,
                max_lines=self.settings.batch_lines,
                take_unterminated=take_unterminated,
            )
            if rb.next_offset == offset and rb.carry == carry:
                break
            if not self._still_the_file(row, f):
                # Truncated under the reader since its look (copytruncate): the batch may
                # hold new content read at the old watermark. Nothing is committed; the
                # next look reads the new content from 0.
                log.info("file %s changed under its reader; looking again", row.path)
                return Result(requeue=True)
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
        current = self.journal.file(row.id)  # the batches moved its watermark
        size = os.fstat(f.fileno()).st_size
        changes: dict[str, object] = {"size": size} if current.size != size else {}
        current.size = size
        phase = self._phase(current, now)
        if phase != current.phase and current.phase in ("Active", "Idle", "Unreadable"):
            changes.update(phase=phase, last_error="")
        if changes:  # one write for the size and the phase
            current = self.journal.update_file(row.id, **changes)
        self.metrics.position(current.path, size, current.watermark)
        if drain:
            return DONE
        wait = self._publish(current, force=False)
        if budget is not None and budget <= 0:
            return Result(requeue=True)
        if not take_unterminated and current.watermark < size:  # look again once quiet
            left = self.settings.rotate_wait - quiet
            wait = min(wait, left) if wait > 0 else left
        if wait > 0:
            return Result(requeue_after=wait)
        st = os.fstat(f.fileno())
        if current.watermark == st.st_size:
            idle_due = (
                self._last_growth[row.id] + self.settings.idle_after
                if current.phase == "Active"
                else math.inf
            )
            self._read_to_end[current.path] = (_stat_key(st), idle_due)
        return DONE

    def _quiet_for(self, file_id: int, size: int) -> float:
        """Seconds the file has kept `size` (0 when it changed since the last look)."""
        now = self.clock()
        seen = self._sizes.get(file_id)
        if seen is None or seen[0] != size:
            self._sizes[file_id] = (size, now)
            return 0.0
        return now - seen[1]

    def _phase(self, row: FileRow, now: float) -> str:
        last = self._last_growth.get(row.id)
        if last is None:
            self._last_growth[row.id] = now
            return "Active"
        return "Idle" if now - last >= self.settings.idle_after else "Active"

    def _still_the_file(self, row: FileRow, f: BinaryIO) -> bool:
        """`f` still starts as `row`'s file did, looked at after a batch was read from it;
        its fingerprint lengthened as the file grows (stored on `row` too).

        A file first seen empty has an empty fingerprint, which every content
        matches: lengthened only once per read, its watermark ran ahead of it and
        a copytruncate was taken for growth (its first lines lost).
        """
        try:
            grown = grow_fingerprint(_identity(row), f)
        except ValueError:
            return False
        if grown.fingerprint_len > row.fingerprint_len:
            self.journal.update_file(
                row.id, fingerprint=grown.fingerprint, fingerprint_len=grown.fingerprint_len
            )
            row.fingerprint, row.fingerprint_len = grown.fingerprint, grown.fingerprint_len
        return True

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
