"""Opening SQLite databases the way every part of the controller needs them."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from controller.store.base import StoreUnavailable


def open_database(path: Path, busy_timeout_ms: int = 30000) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, the file created 0600.

    WAL lets `foylectl get` read while `foylectl run` writes; the busy timeout
    makes writers from several processes wait for each other instead of
    failing with SQLITE_BUSY (Foyle's issue with a shared SQLite DB).
    Transactions are explicit (isolation_level=None).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        raise StoreUnavailable(
            f"cannot open the database {path}: {err}. Move it aside and run `foylectl analyze`"
            " (or restart `foylectl run`) to rebuild it from the logs."
        ) from err
    return conn


class Transactions:
    """Write transactions on one SQLite file, shared by the threads of one process.

    * `write()`: one atomic write: its own `BEGIN IMMEDIATE` transaction, or part
      of the thread's open transaction (rolled back with it on failure);
    * `transaction()`: a unit of work (controller.store.unit);
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

    def on_commit(self, fn: Callable[[], None]) -> None:
        if self.active:
            self._local.committed.append(fn)
        else:
            fn()
