"""The embedded Store backend: one SQLite file in WAL mode.

Data flow: every write runs in one `BEGIN IMMEDIATE` transaction that checks
the caller's resourceVersion, appends a row to `changes` and upserts the row in
`objects`. The change row's AUTOINCREMENT rowid *is* the new resourceVersion, so
versions are monotonic across the store and commit in order (writers are
serialised by SQLite's write lock). `watch` reads `changes` after a version, so
it follows writes from other processes by polling; writes made through this
instance wake it at once through a Condition, and `add_listener` callbacks let
the controller enqueue keys without polling at all.

Concurrency: one connection per thread (threading.local). WAL lets those
readers run while another thread or process writes, which a single connection
behind a lock would forbid: one writer waiting on another process's lock would
stall every in-process reader. Readers never take the write lock, not even
when opening the store, so `foylectl get` never waits behind `foylectl run`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import orjson

from controller.api.kinds import Resource
from controller.api.resource import rfc3339_seconds
from controller.store.base import (
    AlreadyExists,
    Conflict,
    EventType,
    Gone,
    NotFound,
    StoreUnavailable,
    WatchEvent,
    matches_labels,
)
from controller.store.files import make_private_dirs
from controller.store.sqlite_util import Transactions, connect, is_read_only, unusable

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # seconds between polls of `changes` for other processes' writes
WATCH_BATCH = 500  # change rows read per poll

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_kind_rv ON changes (kind, rv);
-- pruned_through: the highest change rv deleted by pruning (watch from below it is Gone)
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('pruned_through', 0);
"""

Listener = Callable[[WatchEvent], None]


class _Connection:
    """Holds one thread's connection; a weakref target (sqlite3.Connection is not).

    When its thread ends, the thread-local slot drops the holder and the
    connection closes with it, so short-lived threads leak nothing.
    """

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class SQLiteStore:
    """The Store contract (controller.store.base.Store) on one SQLite file."""

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 30000, keep_changes: int = 100_000
    ) -> None:
        if keep_changes < 1:
            raise ValueError("keep_changes must be at least 1")
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._keep_changes = keep_changes
        # Prune in chunks of ~1% so the delete cost is amortised over many writes.
        self._prune_every = max(1, keep_changes // 100)
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._written = threading.Condition()
        self._writes = 0  # bumped after each commit through this instance; wakes watchers
        self._closed = False
        self._listeners: list[Listener] = []
        self._transactions = Transactions(self._conn)
        self._create_file()
        self._init_schema()

    # ---- connections and transactions ----

    def _create_file(self) -> None:
        """Create the file 0600 before SQLite does (SQLite would use 0644 minus umask)."""
        self._read_only = is_read_only(self.path)  # issue 13: reading commands work read-only
        if self._read_only:
            return
        make_private_dirs(self.path.parent)  # issue 13: 0700 whatever the umask
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"{self.path}: cannot open the store: {exc.strerror}") from exc
        os.close(fd)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"{self.path}: the store is closed")
        holder: _Connection | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = _Connection(self._connect())
            self._local.holder = holder
            with self._connections_lock:
                self._connections.add(holder)
        return holder.conn

    def _connect(self) -> sqlite3.Connection:
        with self._translate_errors():
            # timeout= is SQLite's busy timeout; we issue BEGIN ourselves.
            conn = connect(self.path, self._busy_timeout_ms / 1000, read_only=self._read_only)
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

    def _init_schema(self) -> None:
        conn = self._conn()
        if self._read_only:  # issue 13: nothing to set up that could be written
            return
        with self._translate_errors():
            # Switching to WAL and creating tables need the write lock: do it only when
            # needed, so opening an existing store never waits behind a writer.
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if not exists:
                # One script: executescript() would commit a BEGIN issued separately.
                try:
                    conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Turn SQLite failures into StoreUnavailable with a message that says what to do."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc  # issue 13: disk full is not damage

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one snapshot."""
        conn = self._conn()
        if self._transactions.active:  # the unit's transaction is the snapshot
            with self._translate_errors():
                yield conn
            return
        with self._translate_errors():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, holding the write lock from the start.

        BEGIN IMMEDIATE takes the lock before the first read, so a read-then-write
        never has to upgrade a read lock (the deferred-transaction deadlock that
        returns SQLITE_BUSY at once, whatever the busy timeout). Inside a unit of
        work (`transaction()`) it is part of the unit's transaction.
        """
        with self._translate_errors(), self._transactions.write() as conn:
            yield conn

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction for many writes (controller.store.unit.unit_of_work)."""
        return self._translated(self._transactions.transaction())

    @contextmanager
    def _translated(self, ctx: AbstractContextManager[None]) -> Iterator[None]:
        with self._translate_errors(), ctx:
            yield

    # ---- reads ----

    def get(self, kind: str, name: str) -> Resource:
        conn = self._conn()  # one statement is one snapshot: no explicit transaction
        with self._translate_errors():
            row = conn.execute(
                "SELECT body FROM objects WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
        if row is None:
            raise NotFound(f"{kind}/{name} not found")
        return orjson.loads(row[0])

    def list(self, kind: str, label_selector: str | None = None) -> list[Resource]:
        return self.list_with_version(kind, label_selector)[0]

    def count(self, kind: str) -> int:
        conn = self._conn()
        with self._translate_errors():
            return conn.execute("SELECT COUNT(*) FROM objects WHERE kind = ?", (kind,)).fetchone()[
                0
            ]

    def list_with_version(
        self, kind: str, label_selector: str | None = None
    ) -> tuple[list[Resource], str]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT body FROM objects WHERE kind = ? ORDER BY name", (kind,)
            ).fetchall()
            version = _current_rv(conn)
        objects = [orjson.loads(body) for (body,) in rows]
        return [o for o in objects if matches_labels(o, label_selector)], str(version)

    # ---- writes ----

    def create(self, obj: Resource) -> Resource:
        """Store a new object; status is ignored, as the API server does for a status subresource."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        body = orjson.loads(orjson.dumps(obj))
        body["status"] = {}
        meta = body["metadata"]
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["generation"] = 1
        meta["creationTimestamp"] = rfc3339_seconds(time.time())
        with self._write() as conn:
            if _stored(conn, kind, name) is not None:
                raise AlreadyExists(f"{kind}/{name} already exists")
            result = self._commit_change(conn, "ADDED", body)
        return self._after_write("ADDED", result)

    def update(self, obj: Resource) -> Resource:
        """Write spec, labels, annotations and ownerReferences; keep the stored status."""
        with self._write() as conn:
            stored = _checked(conn, obj)
            meta = stored["metadata"]
            for key in ("labels", "annotations", "ownerReferences"):
                if key in obj["metadata"]:
                    meta[key] = obj["metadata"][key]
                else:
                    meta.pop(key, None)
            spec = obj.get("spec") or {}
            if spec != (stored.get("spec") or {}):
                meta["generation"] = meta.get("generation", 1) + 1
            stored["spec"] = spec
            result = self._commit_change(conn, "MODIFIED", stored)
        return self._after_write("MODIFIED", result)

    def update_status(self, obj: Resource) -> Resource:
        """Write status only."""
        with self._write() as conn:
            stored = _checked(conn, obj)
            stored["status"] = obj.get("status") or {}
            result = self._commit_change(conn, "MODIFIED", stored)
        return self._after_write("MODIFIED", result)

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        with self._write() as conn:
            stored = _stored(conn, kind, name)
            if stored is None:
                raise NotFound(f"{kind}/{name} not found")
            current = stored["metadata"]["resourceVersion"]
            if resource_version is not None and resource_version != current:
                raise Conflict(f"{kind}/{name}: resourceVersion {resource_version} is stale")
            result = self._commit_change(conn, "DELETED", stored)
        self._after_write("DELETED", result)

    def _commit_change(self, conn: sqlite3.Connection, type_: EventType, body: Resource) -> bytes:
        """Append the change row, give `body` its version, and upsert or delete the object.

        Returns the serialised body: callers load fresh copies from it, so nothing
        they mutate can alias `body` or the caller's input.
        """
        kind, name = body["kind"], body["metadata"]["name"]
        rv = _current_rv(conn) + 1  # we hold the write lock: nobody else can take it
        body["metadata"]["resourceVersion"] = str(rv)
        data = orjson.dumps(body)
        text = data.decode()
        conn.execute(
            "INSERT INTO changes (rv, kind, name, type, body) VALUES (?, ?, ?, ?, ?)",
            (rv, kind, name, type_, text),
        )
        if type_ == "DELETED":
            conn.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (kind, name))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO objects (kind, name, rv, body) VALUES (?, ?, ?, ?)",
                (kind, name, rv, text),
            )
        if rv % self._prune_every == 0:
            self._prune(conn, rv)
        return data

    def _prune(self, conn: sqlite3.Connection, rv: int) -> None:
        horizon = rv - self._keep_changes
        if horizon > 0:
            conn.execute("DELETE FROM changes WHERE rv <= ?", (horizon,))
            conn.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'pruned_through'", (horizon,)
            )

    def _after_write(self, type_: EventType, data: bytes) -> Resource:
        """Once committed: wake this instance's watchers and call listeners. A fresh copy."""
        self._transactions.on_commit(lambda: self._notify(type_, data))
        return orjson.loads(data)

    def _notify(self, type_: EventType, data: bytes) -> None:
        with self._written:
            self._writes += 1
            self._written.notify_all()
        for listener in list(self._listeners):
            try:
                listener(WatchEvent(type_, orjson.loads(data)))
            except Exception:
                log.exception("store listener %r failed", listener)

    # ---- watch ----

    def add_listener(self, fn: Listener) -> None:
        """Call `fn` after each commit made through this instance (not other processes')."""
        self._listeners.append(fn)

    def watch(
        self,
        kind: str,
        since: str,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes of `kind` after `since`, in order; raises Gone when they were pruned."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = int(since or 0)
        while not self._closed and not (stop is not None and stop()):
            with self._written:
                seen_writes = self._writes
            with self._read() as conn:
                pruned = conn.execute(
                    "SELECT value FROM meta WHERE key = 'pruned_through'"
                ).fetchone()[0]
                if last < pruned:
                    raise Gone(f"resourceVersion {last} is older than the kept history ({pruned})")
                rows = conn.execute(
                    "SELECT rv, type, body FROM changes WHERE kind = ? AND rv > ? "
                    "ORDER BY rv LIMIT ?",
                    (kind, last, WATCH_BATCH),
                ).fetchall()
            for rv, type_, body in rows:
                last = rv
                yield WatchEvent(type_, orjson.loads(body))
            if len(rows) == WATCH_BATCH:
                continue
            wait = POLL_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            self._wait_for_write(seen_writes, wait)

    def _wait_for_write(self, seen_writes: int, timeout: float) -> None:
        """Sleep until this instance commits a write, the store closes, or `timeout` s pass."""
        with self._written:
            self._written.wait_for(
                lambda: self._writes != seen_writes or self._closed, timeout=timeout
            )

    # ---- lifecycle ----

    def close(self) -> None:
        """Close every thread's connection; call once no other thread is using the store."""
        self._closed = True
        with self._written:
            self._written.notify_all()
        with self._connections_lock:
            holders = list(self._connections)
            self._connections.clear()
        for holder in holders:
            holder.conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _current_rv(conn: sqlite3.Connection) -> int:
    """The store's latest resourceVersion (kept by AUTOINCREMENT even when rows are pruned)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


def _stored(conn: sqlite3.Connection, kind: str, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT body FROM objects WHERE kind = ? AND name = ?", (kind, name)
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def _checked(conn: sqlite3.Connection, obj: Resource) -> dict[str, Any]:
    """The stored object, provided `obj` carries its current resourceVersion."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    stored = _stored(conn, kind, name)
    if stored is None:
        raise NotFound(f"{kind}/{name} not found")
    given = obj["metadata"].get("resourceVersion")
    if given != stored["metadata"]["resourceVersion"]:
        raise Conflict(
            f"{kind}/{name}: resourceVersion {given} is stale "
            f"(stored {stored['metadata']['resourceVersion']})"
        )
    return stored
