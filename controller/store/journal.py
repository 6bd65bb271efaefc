"""The journal: node-local, exactly-once record of what was read from which file.

Flow: the LogFile reconciler reads a batch of complete lines from a file and
calls `commit_batch`, which in ONE SQLite transaction inserts the batch's
entries (keyed by (file id, byte offset), so a replay inserts nothing twice),
advances the file's watermark, and marks the traces it touched dirty. A
crash before the commit loses nothing (the batch is read again); a crash
after it repeats nothing.

A file row is one file identity (device, inode, fingerprint). Truncation or
replacement of a path starts a NEW row, so offsets of the old and the new
content never collide. Dirty marks (traces touched by new lines; block logs
whose traces changed) carry a sequence number: a reconcile clears its mark
only if nothing set it again meanwhile, and the manager re-queues every
remaining mark on start, so the in-memory queues need no durability. When a
trace has been Complete for longer than the retention, its entries are folded
into a compact accumulator snapshot (`snapshots`) and deleted; late lines are
folded into that snapshot, so the Trace stays right.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import orjson

from controller.api.entry import Entry
from controller.store.sqlite_util import Transactions, open_database, unusable

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    path TEXT NOT NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    fingerprint_len INTEGER NOT NULL,
    watermark INTEGER NOT NULL DEFAULT 0,
    carry TEXT NOT NULL DEFAULT 'none',
    size INTEGER NOT NULL DEFAULT 0,
    lines INTEGER NOT NULL DEFAULT 0,
    bad_lines INTEGER NOT NULL DEFAULT 0,
    last_bad_offset INTEGER,
    truncations INTEGER NOT NULL DEFAULT 0,
    unread_bytes INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT 'Active',
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_by_path ON files(path);
CREATE INDEX IF NOT EXISTS files_by_inode ON files(device, inode);
CREATE TABLE IF NOT EXISTS entries (
    file_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    trace_key TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (file_id, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_trace ON entries(trace_key);
CREATE TABLE IF NOT EXISTS dirty (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_meta (
    trace_key TEXT PRIMARY KEY,
    last_entry_at REAL NOT NULL,
    complete_since REAL,
    abandoned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_meta_open_by_activity ON trace_meta(last_entry_at)
    WHERE complete_since IS NULL AND abandoned = 0;
CREATE INDEX IF NOT EXISTS trace_meta_by_completion ON trace_meta(complete_since)
    WHERE complete_since IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    trace_key TEXT PRIMARY KEY,
    acc BLOB NOT NULL
) WITHOUT ROWID;
"""

T = TypeVar("T")
ACTIVE_PHASES = ("Active", "Idle", "Unreadable")
EntryKey = tuple[int, int]  # (file id, byte offset): an entry's identity
TRACES = "traces"  # dirty-mark queues: traces touched by new lines,
BLOCKLOGS = "blocklogs"  # block logs whose member traces changed
EXAMPLES = "examples"  # block logs whose status changed since the learner looked


@dataclass
class FileRow:
    """One file identity and its watermark, as stored in the journal."""

    id: int
    uid: str
    path: str
    device: int
    inode: int
    fingerprint: str
    fingerprint_len: int
    watermark: int = 0
    carry: str = "none"
    size: int = 0
    lines: int = 0
    bad_lines: int = 0
    last_bad_offset: int | None = None
    truncations: int = 0
    unread_bytes: int = 0
    phase: str = "Active"
    last_error: str = ""


_FILE_COLUMNS = tuple(FileRow.__dataclass_fields__)


@dataclass
class Batch:
    """What one read of a file produced, ready to commit atomically."""

    file_id: int
    start_offset: int
    next_offset: int
    carry: str
    size: int
    lines: int
    bad_lines: int
    last_bad_offset: int | None
    entries: list[tuple[int, str, bytes]] = field(default_factory=list)  # (offset, key, body)


class WatermarkMoved(Exception):
    """Another reader advanced this file's watermark first; the batch was not committed."""


class Journal:
    """SQLite-backed journal; safe for many threads (one connection each)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30000) -> None:
        self.path = Path(path)
        self.created = not self.path.exists()  # a new journal: every file is read from 0
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._transactions = Transactions(self._conn)
        self._dirty_seq = int(time.time() * 1000)
        self._seq_lock = threading.Lock()
        try:
            self._conn().executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise unusable(self.path, err) from err  # issue 13: disk full is not damage

    # -- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_database(self.path, self._busy_timeout_ms)
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic write (part of the unit's transaction inside a unit of work)."""
        with self._translated(self._transactions.write()) as conn:
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state (the open unit's transaction already does)."""
        conn = self._conn()
        if self._transactions.active:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction for many writes (controller.store.unit.unit_of_work)."""
        return self._translated(self._transactions.transaction())

    @contextmanager
    def _translated(self, ctx: AbstractContextManager[T]) -> Iterator[T]:
        try:
            with ctx as value:
                yield value
        except sqlite3.DatabaseError as err:
            raise unusable(self.path, err) from err  # issue 13

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._dirty_seq += 1
            return self._dirty_seq

    # -- files ---------------------------------------------------------------------------

    def files(self, *, active_only: bool = False) -> list[FileRow]:
        sql = f"SELECT {', '.join(_FILE_COLUMNS)} FROM files"
        if active_only:
            sql += f" WHERE phase IN {ACTIVE_PHASES}"
        return [FileRow(*row) for row in self._conn().execute(sql + " ORDER BY id")]

    def file(self, file_id: int) -> FileRow:
        row = (
            self._conn()
            .execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE id = ?", (file_id,))
            .fetchone()
        )
        if row is None:
            raise KeyError(file_id)
        return FileRow(*row)

    def active_file_at(self, path: str) -> FileRow | None:
        """The newest row still reading `path`, if any."""
        row = (
            self._conn()
            .execute(
                f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE path = ? AND phase IN"
                f" {ACTIVE_PHASES} ORDER BY id DESC LIMIT 1",
                (path,),
            )
            .fetchone()
        )
        return FileRow(*row) if row else None

    def files_with_inode(self, device: int, inode: int) -> list[FileRow]:
        rows = self._conn().execute(
            f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE device = ? AND inode = ?"
            " ORDER BY id DESC",
            (device, inode),
        )
        return [FileRow(*row) for row in rows]

    def add_file(
        self, path: str, device: int, inode: int, fingerprint: str, fingerprint_len: int
    ) -> FileRow:
        """A new row for the file at `path`, or the row another reader just added for it.

        Two readers can find one new file at the same moment (two controllers on one
        state dir); two rows would read every line twice under two file ids.
        """
        with self._tx() as conn:
            existing = conn.execute(
                f"SELECT id FROM files WHERE path = ? AND device = ? AND inode = ?"
                f" AND phase IN {ACTIVE_PHASES} ORDER BY id DESC LIMIT 1",
                (path, device, inode),
            ).fetchone()
            if existing is not None:
                file_id = int(existing[0])
            else:
                cur = conn.execute(
                    "INSERT INTO files (uid, path, device, inode, fingerprint, fingerprint_len)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (uuid.uuid4().hex, path, device, inode, fingerprint, fingerprint_len),
                )
                file_id = int(cur.lastrowid or 0)
        return self.file(file_id)

    def update_file(self, file_id: int, **fields: object) -> None:
        """Change a file row's bookkeeping (phase, path, fingerprint, errors); never the watermark."""
        if not fields:
            return
        if "watermark" in fields:
            raise ValueError("the watermark only moves with commit_batch")
        unknown = set(fields) - set(_FILE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown file fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as conn:
            conn.execute(
                f"UPDATE files SET {assignments} WHERE id = ?", (*fields.values(), file_id)
            )

    # -- ingestion -----------------------------------------------------------------------

    def commit_batch(self, batch: Batch, now: float) -> set[str]:
        """Insert the entries, advance the watermark and mark touched traces dirty, atomically.

        Raises WatermarkMoved when the stored watermark is not the batch's start (a second
        reader got there first): nothing is written then.
        """
        touched = {key for _, key, _ in batch.entries}
        with self._tx() as conn:
            (watermark,) = conn.execute(
                "SELECT watermark FROM files WHERE id = ?", (batch.file_id,)
            ).fetchone()
            if watermark != batch.start_offset:
                raise WatermarkMoved(
                    f"file {batch.file_id}: watermark {watermark}, batch starts at"
                    f" {batch.start_offset}"
                )
            conn.executemany(
                "INSERT OR IGNORE INTO entries (file_id, offset, trace_key, body) VALUES (?, ?, ?, ?)",
                [(batch.file_id, off, key, body) for off, key, body in batch.entries],
            )
            conn.execute(
                "UPDATE files SET watermark = ?, carry = ?, size = ?, lines = lines + ?,"
                " bad_lines = bad_lines + ?, last_bad_offset = COALESCE(?, last_bad_offset)"
                " WHERE id = ?",
                (
                    batch.next_offset,
                    batch.carry,
                    batch.size,
                    batch.lines,
                    batch.bad_lines,
                    batch.last_bad_offset,
                    batch.file_id,
                ),
            )
            if touched:
                self._mark_dirty(conn, TRACES, touched)
                conn.executemany(
                    "INSERT INTO trace_meta (trace_key, last_entry_at) VALUES (?, ?)"
                    " ON CONFLICT(trace_key) DO UPDATE SET last_entry_at = excluded.last_entry_at,"
                    " abandoned = 0",
                    [(key, now) for key in touched],
                )
        return touched

    # -- traces --------------------------------------------------------------------------

    def mark_dirty(self, queue: str, keys: Iterable[str]) -> None:
        """Durably note that `keys` of `queue` need a reconcile (survives a crash)."""
        with self._tx() as conn:
            self._mark_dirty(conn, queue, keys)

    def _mark_dirty(self, conn: sqlite3.Connection, queue: str, keys: Iterable[str]) -> None:
        seq = self._next_seq()
        conn.executemany(
            "INSERT INTO dirty (queue, key, seq) VALUES (?, ?, ?)"
            " ON CONFLICT(queue, key) DO UPDATE SET seq = excluded.seq",
            [(queue, key, seq) for key in keys],
        )

    def traces_to_abandon(self, idle_since: float) -> list[str]:
        """Unfinished traces with no line since `idle_since` and not yet marked Abandoned.

        One indexed query per sweep instead of a timer per open trace, whose number
        grows with the backlog being read.
        """
        rows = self._conn().execute(
            "SELECT trace_key FROM trace_meta WHERE complete_since IS NULL AND abandoned = 0"
            " AND last_entry_at < ?",
            (idle_since,),
        )
        return [k for (k,) in rows]

    def set_abandoned(self, trace_key: str) -> None:
        """Recorded with the Abandoned phase; a new line of the trace clears it."""
        with self._tx() as conn:
            conn.execute("UPDATE trace_meta SET abandoned = 1 WHERE trace_key = ?", (trace_key,))

    def mark_all_traces_dirty(self) -> int:
        """Queue every trace the journal knows (the store lost them); how many."""
        seq = self._next_seq()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO dirty (queue, key, seq) SELECT ?, trace_key, ? FROM trace_meta"
                " WHERE true ON CONFLICT(queue, key) DO UPDATE SET seq = excluded.seq",
                (TRACES, seq),
            )
            return cur.rowcount

    def dirty_keys(self, queue: str) -> list[str]:
        rows = self._conn().execute("SELECT key FROM dirty WHERE queue = ?", (queue,))
        return [k for (k,) in rows]

    def dirty_seq(self, queue: str, key: str) -> int | None:
        row = (
            self._conn()
            .execute("SELECT seq FROM dirty WHERE queue = ? AND key = ?", (queue, key))
            .fetchone()
        )
        return row[0] if row else None

    def clear_dirty(self, queue: str, key: str, seq: int | None) -> bool:
        """Forget the dirty mark unless something set it again since `seq`; True if cleared."""
        if seq is None:
            return True
        with self._tx() as conn:
            cur = conn.execute(
                "DELETE FROM dirty WHERE queue = ? AND key = ? AND seq = ?", (queue, key, seq)
            )
            return cur.rowcount > 0

    def trace_inputs(self, trace_key: str) -> tuple[bytes | None, list[tuple[EntryKey, Entry]]]:
        """The GC snapshot (if any) and the remaining entries of one trace, with their keys."""
        with self._snapshot() as conn:
            snap = conn.execute(
                "SELECT acc FROM snapshots WHERE trace_key = ?", (trace_key,)
            ).fetchone()
            bodies = conn.execute(
                "SELECT file_id, offset, body FROM entries WHERE trace_key = ?", (trace_key,)
            ).fetchall()
        entries = [((f, o), Entry.from_dict(orjson.loads(body))) for f, o, body in bodies]
        return (snap[0] if snap else None), entries

    def trace_activity(self, trace_key: str) -> float | None:
        row = (
            self._conn()
            .execute("SELECT last_entry_at FROM trace_meta WHERE trace_key = ?", (trace_key,))
            .fetchone()
        )
        return row[0] if row else None

    def set_complete_since(self, trace_key: str, since: float | None) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE trace_meta SET complete_since = ? WHERE trace_key = ?"
                " AND (complete_since IS NULL) != (? IS NULL)",
                (since, trace_key, since),
            )

    def traces_to_collect(self, older_than: float) -> list[str]:
        rows = self._conn().execute(
            "SELECT m.trace_key FROM trace_meta m WHERE m.complete_since IS NOT NULL"
            " AND m.complete_since < ? AND m.last_entry_at < ?"
            " AND EXISTS (SELECT 1 FROM entries e WHERE e.trace_key = m.trace_key)",
            (older_than, older_than),
        )
        return [k for (k,) in rows]

    def replace_with_snapshot(
        self, trace_key: str, snapshot: bytes, entry_keys: Iterable[EntryKey]
    ) -> None:
        """Store the folded accumulator and drop exactly the entries folded into it.

        The trace leaves the collection index too (GC scans stay proportional to what
        is left to collect, not to history); a late line puts it back.
        """
        with self._tx() as conn:
            conn.execute(
                "UPDATE trace_meta SET complete_since = NULL WHERE trace_key = ?", (trace_key,)
            )
            conn.execute(
                "INSERT INTO snapshots (trace_key, acc) VALUES (?, ?)"
                " ON CONFLICT(trace_key) DO UPDATE SET acc = excluded.acc",
                (trace_key, snapshot),
            )
            conn.executemany(
                "DELETE FROM entries WHERE file_id = ? AND offset = ?", list(entry_keys)
            )

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {
            "files": conn.execute("SELECT COUNT(*) FROM files").fetchone()[0],
            "entries": conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0],
            "dirty": conn.execute("SELECT COUNT(*) FROM dirty").fetchone()[0],
            "snapshots": conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0],
        }
