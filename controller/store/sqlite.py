"""The embedded Store backend: one SQLite file in WAL mode.

Data flow: every write runs in one `BEGIN IMMEDIATE` transaction that checks
the caller's resourceVersion, appends the new body to `changes` and points the
object's row in `objects` at it: each body is stored once (the change log is
not a second copy of every resource). Bodies are stored packed (`packing`): only
Python reads them, so field reads parse them in Python, not with json_extract. The change row's AUTOINCREMENT rowid
*is* the new resourceVersion, so versions are monotonic across the store and
commit in order (writers are serialised by SQLite's write lock). Pruning keeps
the last `keep_changes` changes plus every object's current version. `watch`
reads `changes` after a version, so it follows writes from other processes by
polling; writes made through this instance wake it at once through a
Condition. `read_modify_write_many` and `get_many` take whole batches: one
statement per batch and table, not one per object.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    Mutator,
    NotFound,
    StoreUnavailable,
    WatchEvent,
    generation_bumped,
    matches_labels,
    status_with_spec,
)
from controller.store.packing import UnreadableBody, pack, unpack
from controller.store.sqlite_util import (
    IN_KEYS,
    ThreadConnections,
    Transactions,
    is_read_only,
    key_list,
    open_database,
    translated,
    translated_within,
)

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # seconds between polls of `changes` for other processes' writes
WATCH_BATCH = 500  # change rows read per poll

_SCHEMA = """
-- Each body is stored once, in `changes`; an object row points at its current version.
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
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

# Stores before issue 23's last change kept an index of objects by rv, read only when
# pruning: each write moved an entry of it from a random leaf to the end (about a tenth
# of the store's page writes and an eighth of its bytes). A prune finds an object by its
# key instead, a read where the index cost a write.
_DROP_OBJECTS_RV = "DROP INDEX IF EXISTS objects_rv;"

_SELECT_BODY = "SELECT c.body FROM objects o JOIN changes c ON c.rv = o.rv"


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """`script` in one write transaction (executescript() would commit a BEGIN issued
    separately, so the BEGIN is part of the script)."""
    try:
        conn.executescript(f"BEGIN IMMEDIATE;{script}COMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


class SQLiteStore:
    """The Store contract (controller.store.base.Store) on one SQLite file."""

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 30000, keep_changes: int = 10_000
    ) -> None:
        if keep_changes < 1:
            raise ValueError("keep_changes must be at least 1")
        self.path = Path(path)
        self._keep_changes = keep_changes
        # Prune in chunks of ~1% so the delete cost is amortised over many writes.
        self._prune_every = max(1, keep_changes // 100)
        self._read_only = is_read_only(self.path)  # issue 13: reading commands work read-only
        self._connections = ThreadConnections(
            self.path,
            lambda: open_database(self.path, busy_timeout_ms, read_only=self._read_only),
        )
        self._written = threading.Condition()
        self._writes = 0  # bumped after each commit through this instance; wakes watchers
        self._transactions = Transactions(self._conn)
        self._init_schema()

    # ---- connections and transactions ----

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def _init_schema(self) -> None:
        conn = self._conn()
        if self._read_only:  # issue 13: nothing to set up that could be written
            return
        with self._translate_errors():
            # Creating tables needs the write lock: only when needed, so opening an
            # existing store never waits behind a writer (open_database does so for WAL).
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if exists and any(
                row[1] == "body" for row in conn.execute("PRAGMA table_info(objects)")
            ):
                raise StoreUnavailable(
                    f"{self.path}: written by an earlier foyle-controller; move it aside and"
                    " run `foylectl analyze` to rebuild it from the logs"
                )
            if not exists:
                _run_script(conn, _SCHEMA)
            elif conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'objects_rv'"
            ).fetchone():
                _run_script(conn, _DROP_OBJECTS_RV)

    def _translate_errors(self) -> AbstractContextManager[None]:
        """Turn SQLite failures into StoreUnavailable with a message that says what to do."""
        return translated(self.path)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one snapshot."""
        with self._translate_errors(), self._transactions.read() as conn:
            yield conn

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
        return translated_within(self.path, self._transactions.transaction())

    # ---- reads ----

    def get(self, kind: str, name: str) -> Resource:
        conn = self._conn()  # one statement is one snapshot: no explicit transaction
        with self._translate_errors():
            row = conn.execute(
                _SELECT_BODY + " WHERE o.kind = ? AND o.name = ?", (kind, name)
            ).fetchone()
        if row is None:
            raise NotFound(f"{kind}/{name} not found")
        return _load(row[0])

    def get_many(self, kind: str, names: Iterable[str]) -> dict[str, Resource]:
        """The objects of `kind` among `names` that exist, by name (one query per 500)."""
        return {name: _load(body) for name, body in self._bodies(self._conn(), kind, names)}

    def versions_many(self, kind: str, names: Iterable[str]) -> dict[str, tuple[str, int]]:
        """(resourceVersion, stored body bytes) of each existing object, without reading bodies."""
        select = "SELECT o.name, o.rv, length(c.body) FROM objects o JOIN changes c ON c.rv = o.rv"
        rows = self._rows_named(self._conn(), select, kind, names)
        return {name: (str(rv), size) for name, rv, size in rows}

    def get_fields_many(
        self, kind: str, names: Iterable[str], paths: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]:
        """Some fields (`.spec.blockIds`) of each existing object (None where absent)."""
        keys = [path.strip(".").split(".") for path in paths]
        return {
            name: tuple(_field(_load(body), path) for path in keys)
            for name, body in self._bodies(self._conn(), kind, names)
        }

    def _bodies(
        self, conn: sqlite3.Connection, kind: str, names: Iterable[str]
    ) -> Iterator[tuple[str, bytes]]:
        select = "SELECT o.name, c.body FROM objects o JOIN changes c ON c.rv = o.rv"
        yield from self._rows_named(conn, select, kind, names)

    def _rows_named(
        self,
        conn: sqlite3.Connection,
        select: str,
        kind: str,
        names: Iterable[str],
        params: Sequence[Any] = (),
    ) -> Iterator[Any]:
        """`select` (over objects `o`) for the objects of `kind` among `names`."""
        with self._translate_errors():
            yield from conn.execute(
                f"{select} WHERE o.kind = ? AND o.name {IN_KEYS}", (*params, kind, key_list(names))
            )

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
                _SELECT_BODY + " WHERE o.kind = ? ORDER BY o.name", (kind,)
            ).fetchall()
            version = _current_rv(conn)
        objects = [_load(body) for (body,) in rows]
        return [o for o in objects if matches_labels(o, label_selector)], str(version)

    def list_pages(
        self, kind: str, label_selector: str | None = None, page_size: int = 500
    ) -> tuple[str, Iterator[list[Resource]]]:
        """The store's version and the objects in pages, from one snapshot.

        A listing of 100,000 BlockLogs prints its first rows after one page is
        read, not after all of them are loaded: `foylectl get` streams.
        """
        conn = self._conn()
        with self._translate_errors():
            conn.execute("BEGIN")
            version = _current_rv(conn)

        def pages() -> Iterator[list[Resource]]:
            try:
                cursor = conn.execute(_SELECT_BODY + " WHERE o.kind = ? ORDER BY o.name", (kind,))
                while rows := cursor.fetchmany(page_size):
                    objects = (_load(body) for (body,) in rows)
                    yield [o for o in objects if matches_labels(o, label_selector)]
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

        return str(version), pages()

    # ---- writes ----

    def create(self, obj: Resource) -> Resource:
        """Store a new object; status is ignored, as the API server does for a status
        subresource (kept for a kind without one)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        body = orjson.loads(orjson.dumps(obj))
        body["status"] = (body.get("status") or {}) if status_with_spec(kind) else {}
        _set_created(body["metadata"], rfc3339_seconds(time.time()))
        with self._write() as conn:
            if _stored(conn, kind, name) is not None:
                raise AlreadyExists(f"{kind}/{name} already exists")
            result = self._commit_change(conn, "ADDED", body)
        return self._after_write(result)

    def update(self, obj: Resource) -> Resource:
        """Write spec, labels, annotations and ownerReferences; keep the stored status
        (write it too for a kind without a status subresource)."""
        with self._write() as conn:
            stored = _checked(conn, obj)
            meta = stored["metadata"]
            for key in ("labels", "annotations", "ownerReferences"):
                if key in obj["metadata"]:
                    meta[key] = obj["metadata"][key]
                else:
                    meta.pop(key, None)
            new = {"spec": obj.get("spec") or {}, "status": stored.get("status") or {}}
            if status_with_spec(obj["kind"]):
                new["status"] = obj.get("status") or {}
            if generation_bumped(obj["kind"], stored, new):
                meta["generation"] = meta.get("generation", 1) + 1
            stored.update(new)
            result = self._commit_change(conn, "MODIFIED", stored)
        return self._after_write(result)

    def update_status(self, obj: Resource) -> Resource:
        """Write status only (for a kind without a status subresource: `update`)."""
        if status_with_spec(obj["kind"]):
            return self.update(obj)
        with self._write() as conn:
            stored = _checked(conn, obj)
            stored["status"] = obj.get("status") or {}
            result = self._commit_change(conn, "MODIFIED", stored)
        return self._after_write(result)

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        with self._write() as conn:
            stored = _stored(conn, kind, name)
            if stored is None:
                raise NotFound(f"{kind}/{name} not found")
            current = stored["metadata"]["resourceVersion"]
            if resource_version is not None and resource_version != current:
                raise Conflict(f"{kind}/{name}: resourceVersion {resource_version} is stale")
            result = self._commit_change(conn, "DELETED", stored)
        self._after_write(result)

    def _commit_change(self, conn: sqlite3.Connection, type_: EventType, body: Resource) -> bytes:
        """Append the change row, give `body` its version, and point (or drop) the object.

        Returns the serialised body: callers load fresh copies from it, so nothing
        they mutate can alias `body` or the caller's input.
        """
        rv = _current_rv(conn) + 1  # we hold the write lock: nobody else can take it
        data = self._append_changes(conn, rv, [(type_, body)])[0]
        self._prune_if_due(conn, rv - 1, rv)
        return data

    def _append_changes(
        self, conn: sqlite3.Connection, first_rv: int, writes: list[tuple[EventType, Resource]]
    ) -> list[bytes]:
        """Store `writes` as versions first_rv, first_rv + 1, ... (one statement per table)."""
        changes, upserts, deletes, out, superseded = [], [], [], [], []
        for rv, (type_, body) in enumerate(writes, start=first_rv):
            kind, name = body["kind"], body["metadata"]["name"]
            previous = body["metadata"].get("resourceVersion")
            if previous:
                superseded.append(int(previous))
            body["metadata"]["resourceVersion"] = str(rv)
            data = orjson.dumps(body)
            changes.append((rv, kind, name, type_, pack(data)))
            (deletes if type_ == "DELETED" else upserts).append(
                (kind, name) if type_ == "DELETED" else (kind, name, rv)
            )
            out.append(data)
        conn.executemany(
            "INSERT INTO changes (rv, kind, name, type, body) VALUES (?, ?, ?, ?, ?)", changes
        )
        conn.executemany(
            "INSERT OR REPLACE INTO objects (kind, name, rv) VALUES (?, ?, ?)", upserts
        )
        conn.executemany("DELETE FROM objects WHERE kind = ? AND name = ?", deletes)
        if superseded:  # below the pruned horizon, the window prune would never see them
            pruned = _pruned_through(conn)
            conn.executemany(
                "DELETE FROM changes WHERE rv = ?", [(rv,) for rv in superseded if rv <= pruned]
            )
        return out

    def _prune_if_due(self, conn: sqlite3.Connection, before: int, after: int) -> None:
        """Prune when the versions (before, after] crossed a multiple of the prune step.

        Only the window since the last prune is visited (every row below it is a
        current version: `_append_changes` drops a version superseded down there),
        so a prune costs the changes since the last one, not the store's size.
        """
        if after // self._prune_every > before // self._prune_every:
            horizon, pruned = after - self._keep_changes, _pruned_through(conn)
            if horizon > pruned:
                conn.execute(
                    "DELETE FROM changes WHERE rv > ? AND rv <= ? AND NOT EXISTS"
                    " (SELECT 1 FROM objects o WHERE o.kind = changes.kind"
                    " AND o.name = changes.name AND o.rv = changes.rv)",
                    (pruned, horizon),
                )
                conn.execute("UPDATE meta SET value = ? WHERE key = 'pruned_through'", (horizon,))

    def read_modify_write_many(
        self, kind: str, mutations: Mapping[str, Mutator]
    ) -> dict[str, Resource | None]:
        """`read_modify_write` for many objects of `kind` in one transaction.

        Holding the write lock from the first read, nothing can change in between:
        no Conflict is possible, and all reads and writes are one statement per
        batch. As in `read_modify_write`, `mutate` gets a copy of its own (parsed
        again from the stored text) and may change it in place.
        Returns each object as stored afterwards (None: absent); a created one shares
        what lies below its top level and metadata with the object its mutator returned.
        """
        created = rfc3339_seconds(time.time())  # one creationTimestamp for the batch
        results: dict[str, Resource | None] = {}
        writes: list[tuple[EventType, Resource]] = []
        with self._write() as conn:
            stored = {name: _text(body) for name, body in self._bodies(conn, kind, mutations)}
            for name, mutate in mutations.items():
                text = stored.get(name)
                current = orjson.loads(text) if text is not None else None
                desired = mutate(None if text is None else orjson.loads(text))
                change = None if desired is None else _applied(current, desired, created)
                results[name] = current if change is None else change[1]
                if change is not None:
                    writes.append(change)
            if writes:
                before = _current_rv(conn)
                self._append_changes(conn, before + 1, writes)
                self._prune_if_due(conn, before, before + len(writes))
                self._transactions.on_commit(self._notify)
        return results

    def _after_write(self, data: bytes) -> Resource:
        """Once committed: wake this instance's watchers. A fresh copy."""
        self._transactions.on_commit(self._notify)
        return orjson.loads(data)

    def _notify(self) -> None:
        with self._written:
            self._writes += 1
            self._written.notify_all()

    # ---- watch ----

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
        while not self._connections.closed and not (stop is not None and stop()):
            with self._written:
                seen_writes = self._writes
            with self._read() as conn:
                pruned = _pruned_through(conn)
                if last < pruned:
                    raise Gone(f"resourceVersion {last} is older than the kept history ({pruned})")
                rows = conn.execute(
                    "SELECT rv, type, body FROM changes WHERE kind = ? AND rv > ? "
                    "ORDER BY rv LIMIT ?",
                    (kind, last, WATCH_BATCH),
                ).fetchall()
            for rv, type_, body in rows:
                last = rv
                yield WatchEvent(type_, _load(body))
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
                lambda: self._writes != seen_writes or self._connections.closed, timeout=timeout
            )

    # ---- lifecycle ----

    def close(self) -> None:
        """Close every thread's connection; call once no other thread is using the store."""
        self._connections.close()
        with self._written:
            self._written.notify_all()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_uid() -> str:
    """A random (version 4) UUID as text, as the API server gives `metadata.uid`: what
    str(uuid.uuid4()) makes at a quarter of its cost (a catch-up creates an object for
    about every line)."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


def _set_created(meta: dict[str, Any], created: str) -> None:
    """What the API server sets on a create: a new uid, generation 1, the
    creationTimestamp (`created`), and no resourceVersion until the commit gives one."""
    meta.pop("resourceVersion", None)
    meta["uid"] = new_uid()
    meta["generation"] = 1
    meta["creationTimestamp"] = created


def _applied(
    current: Resource | None, desired: Resource, created: str
) -> tuple[EventType, Resource] | None:
    """The write `desired` makes over `current`, as create + update + update_status would
    (`created`: a create's creationTimestamp).

    None when nothing the client owns differs (spec, labels, annotations,
    ownerReferences, status).
    """
    if current is None:
        # Its own top level and metadata, which the create fills in, so the caller's
        # object stays as it was; what lies deeper is shared with it (not copied: the
        # store keeps the body's serialised text, and nothing here changes it).
        body = {**desired, "metadata": dict(desired["metadata"])}
        _set_created(body["metadata"], created)
        body["status"] = body.get("status") or {}
        return "ADDED", body
    spec, status = desired.get("spec") or {}, desired.get("status") or {}
    owned = ("labels", "annotations", "ownerReferences")
    same_meta = all(desired["metadata"].get(k) == current["metadata"].get(k) for k in owned)
    if (
        spec == (current.get("spec") or {})
        and status == (current.get("status") or {})
        and same_meta
    ):
        return None
    body = current
    meta = body["metadata"]
    for key in owned:
        if key in desired["metadata"]:
            meta[key] = desired["metadata"][key]
        else:
            meta.pop(key, None)
    if generation_bumped(body["kind"], body, {"spec": spec, "status": status}):
        meta["generation"] = meta.get("generation", 1) + 1
    body["spec"], body["status"] = spec, status
    return "MODIFIED", body


def _load(stored: bytes | str) -> Any:
    """A stored body, parsed (packed or plain: controller.store.packing)."""
    return orjson.loads(_text(stored))


def _text(stored: bytes | str) -> bytes | str:
    try:
        return unpack(stored)
    except UnreadableBody as e:
        raise StoreUnavailable(f"the store holds an unreadable body: {e}") from None


def _field(obj: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _pruned_through(conn: sqlite3.Connection) -> int:
    """The highest change rv pruning has passed: older changes are all current versions."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'pruned_through'").fetchone()[0])


def _current_rv(conn: sqlite3.Connection) -> int:
    """The store's latest resourceVersion (kept by AUTOINCREMENT even when rows are pruned)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


def _stored(conn: sqlite3.Connection, kind: str, name: str) -> dict[str, Any] | None:
    row = conn.execute(_SELECT_BODY + " WHERE o.kind = ? AND o.name = ?", (kind, name)).fetchone()
    return None if row is None else _load(row[0])


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
