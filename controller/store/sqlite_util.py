"""Opening SQLite databases the way every part of the controller needs them."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import orjson

from controller.store.base import StoreUnavailable
from controller.store.files import make_private_dirs

T = TypeVar("T")
log = logging.getLogger(__name__)
_warned_stale: set[Path] = set()


WAL_SIZE_LIMIT = 1 << 20  # bytes a WAL file keeps after a checkpoint
# Page cache per connection (SQLite's default is 2 MiB). A run holds ~24 connections
# (one per worker thread and database), each filling its cache as the files outgrow it:
# 1 MiB keeps that under 25 MB whatever the history, for ~1 % more CPU (issue 23).
CACHE_KIB = 1024
# `column IN_KEYS` with `key_list(keys)` as its parameter: one statement for any number of keys.
IN_KEYS = "IN (SELECT value FROM json_each(?))"


def key_list(keys: Iterable[str]) -> str:
    """`keys` as the one JSON array parameter of IN_KEYS.

    Why not `IN (?, ?, ...)`: each count of placeholders is a statement of its own,
    prepared anew (8x slower than json_each for a batch) and kept in every thread's
    statement cache (128 per connection, ~80 KB each at 500 keys): with 22 connections
    that held 30 to 40 MB of resident memory after a long catch-up (issue 23).
    """
    return orjson.dumps(list(keys)).decode()


def open_database(
    path: Path, busy_timeout_ms: int = 30000, *, read_only: bool | None = None
) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, the file created 0600.

    WAL lets `foylectl get` read while `foylectl run` writes; the busy timeout
    makes writers from several processes wait for each other instead of
    failing with SQLITE_BUSY (Foyle's issue with a shared SQLite DB).
    Transactions are explicit (isolation_level=None). An existing file in a
    state dir this process cannot write is opened read-only (issue 13), so
    reading commands work there and a write fails with a read-only error.
    The journal mode is switched only when it is not WAL yet: switching takes
    the write lock, and opening an existing database must not wait behind a writer.
    """
    if read_only is None:
        read_only = is_read_only(path)
    if not read_only:
        make_private_dirs(path.parent)
        if not path.exists():
            # Never open an existing database file ourselves: closing any descriptor of
            # it drops every POSIX lock this process holds on it (other threads' too).
            create_private_file(path)
    with translated(path):
        conn = connect(path, busy_timeout_ms / 1000, read_only=read_only)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not read_only and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        # After a checkpoint, the WAL file is cut back to this instead of keeping its
        # largest size for ever (issue 23: a caught-up state dir's WALs held 12 MB).
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA schema_version").fetchone()
    return conn


def create_private_file(path: Path) -> None:
    """Create the file 0600 before SQLite does (SQLite would use 0644 minus umask)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as err:
        raise StoreUnavailable(f"{path}: cannot open the database: {err.strerror}") from err


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """SQLite failures as StoreUnavailable with a message that says what to do (`unusable`)."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        raise unusable(path, err) from err  # issue 13: disk full is not damage


@contextmanager
def translated_within(path: Path, ctx: AbstractContextManager[T]) -> Iterator[T]:
    """`ctx` (a transaction) with its SQLite failures translated, its COMMIT's included."""
    with translated(path), ctx as value:
        yield value


class _Holder:
    """Holds one thread's connection; a weakref target (sqlite3.Connection is not).

    When its thread ends, the thread-local slot drops the holder and the
    connection closes with it, so short-lived threads leak nothing.
    """

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class ThreadConnections:
    """One connection per thread to one database, every one of them closed by `close()`."""

    def __init__(self, path: Path, open_: Callable[[], sqlite3.Connection]) -> None:
        self._path = path
        self._open = open_
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.closed = False

    def get(self) -> sqlite3.Connection:
        if self.closed:
            raise StoreUnavailable(f"{self._path}: the database is closed")
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = _Holder(self._open())
            self._local.holder = holder
            with self._lock:
                self._holders.add(holder)
        return holder.conn

    def close(self) -> None:
        """Close every thread's connection; call once no other thread is using them."""
        self.closed = True
        with self._lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            holder.conn.close()


def is_read_only(path: Path) -> bool:
    """An existing database this process cannot write: no write permission on it or its
    dir, or a full disk that has no room for the -shm file a WAL reader needs."""
    if not path.exists():
        return False
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    return not writable or (_disk_full(path) and not Path(f"{path}-shm").exists())


def connect(path: Path, timeout: float, *, read_only: bool) -> sqlite3.Connection:
    """sqlite3.connect, read-only through a URI when asked.

    Read-only, SQLite still needs the -shm file of a WAL database; when the dir
    cannot hold one, nobody writes there and the file is opened as immutable.
    """
    target: str | Path = path
    if read_only:
        target = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
        if not Path(f"{path}-shm").exists():
            target += "&immutable=1"
            _warn_if_stale(path)
    # check_same_thread=False only so a store may close every thread's connection.
    return sqlite3.connect(
        target,
        timeout=timeout,
        isolation_level=None,
        check_same_thread=False,
        uri=read_only,
    )


def _warn_if_stale(path: Path) -> None:
    """Opened immutable, SQLite ignores the -wal file: say that its changes are not shown."""
    wal = Path(f"{path}-wal")
    try:
        pending = wal.stat().st_size > 0
    except OSError:
        return
    if pending and path not in _warned_stale:
        _warned_stale.add(path)
        log.warning(
            "%s is read as of its last checkpoint: the changes in %s are not shown"
            " (no %s-shm could be created in this read-only state dir)",
            path,
            wal,
            path,
        )


# What a full disk looks like to SQLite besides SQLITE_FULL: a failed -shm or -wal write,
# or the read-only connection opened because there was no room for a -shm file.
_MAYBE_FULL = (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)


def unusable(path: Path, err: sqlite3.DatabaseError) -> StoreUnavailable:
    """The one-line error for a failed SQLite operation, with advice that fits its cause.

    Only damage (SQLITE_CORRUPT, SQLITE_NOTADB) earns "move it aside": said of a
    full disk, a read-only dir or a lock it would throw a good file away (issue 13).
    """
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or (code in _MAYBE_FULL and _disk_full(path)):
        advice = "the disk is full: free some space and try again (nothing is lost)"
    elif code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN) or (
        is_read_only(path)
    ):
        advice = (
            "cannot be written here (a read-only or another user's state dir?);"
            " reading commands still work, writing ones need a writable --state-dir"
        )
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        advice = "locked by another writer for longer than the busy timeout; try again"
    elif code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        advice = damaged_advice(path)
    else:
        advice = "try again; if it persists, report it with this message"
    return StoreUnavailable(f"{path}: {err}: {advice}")


def damaged_advice(path: Path) -> str:
    return (
        f"damaged: move it aside (mv {path} {path}.damaged) and run `foylectl analyze`"
        " (or restart `foylectl run`) to rebuild it from the logs"
    )


def check_intact(path: Path) -> None:
    """Raise StoreUnavailable naming `path` and the fix when SQLite finds it damaged.

    Damage in pages no start-up query touches went unnoticed: `run` said ready and
    `analyze` exit 0 over a damaged store (issue 24). quick_check reads every page
    once (seconds per GB), without the slow index-content cross-checks.
    """
    if not path.exists():
        return
    try:
        conn = connect(path, 30.0, read_only=is_read_only(path))
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        if (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF not in (
            sqlite3.SQLITE_CORRUPT,
            sqlite3.SQLITE_NOTADB,
        ):
            raise unusable(path, err) from err
        problems = [str(err)]
    if problems != ["ok"]:
        found = [line.strip() for p in problems for line in p.splitlines()]
        detail = "; ".join(line for line in found if line and not line.startswith("***"))
        raise StoreUnavailable(f"{path}: {detail[:200]}: {damaged_advice(path)}")


def _disk_full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


class Transactions:
    """Write transactions on one SQLite file, shared by the threads of one process.

    * `write()`: one atomic write: its own `BEGIN IMMEDIATE` transaction, or part
      of the thread's open transaction (rolled back with it on failure);
    * `transaction()`: a unit of work (controller.store.unit);
    * `read()`: one snapshot for several reads (the unit's, inside one);
    * `on_commit(fn)`: run `fn` after the commit (at once outside a transaction),
      e.g. to wake watchers only when what they would read is there.

    Writers of this process take an in-process lock first, so they queue on it
    instead of polling in SQLite's busy handler (which sleeps up to 100 ms a
    try); writers in other processes still meet the busy timeout.
    """

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection
        self._lock = threading.RLock()
        self._local = threading.local()

    @property
    def active(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        if self.active:
            # Writes check before they write, so a Conflict leaves nothing to undo; a
            # SQLite error mid-write fails the whole unit, which rolls back.
            yield self._connection()
            return
        with self.transaction():
            yield self._connection()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.active:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            self._local.depth, self._local.committed = 1, []
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (SQLITE_FULL) leaves the transaction open, and some
                # errors roll it back on their own: close it only if it is still there.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._local.committed = []
                raise
            finally:
                self._local.depth = 0
        callbacks, self._local.committed = self._local.committed, []
        for fn in callbacks:
            fn()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state (the thread's open unit of work already does)."""
        conn = self._connection()
        if self.active:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def on_commit(self, fn: Callable[[], None]) -> None:
        if self.active:
            self._local.committed.append(fn)
        else:
            fn()
