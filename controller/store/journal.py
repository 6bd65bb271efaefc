"""The journal: node-local, exactly-once record of what was read from which file.

Flow: the LogFile reconciler reads a batch of complete lines from a file and
folds them in memory into one `TraceAccumulator` per trace (a mergeable,
order-independent monoid). `commit_batch` then, in ONE SQLite transaction,
merges each into the trace's single journal row, advances the file's
watermark, and marks those traces dirty. The watermark's atomic advance is
what makes ingestion exactly-once: a crash before the commit loses nothing
(the batch is read again), a crash after it repeats nothing, and a second
reader whose batch does not start at the stored watermark writes nothing
(`WatermarkMoved`). A trace's row is bounded (the accumulator keeps one
candidate per derived value), so no per-line rows, GC or snapshots exist.

A file row is one file identity (device, inode, fingerprint). Truncation or
replacement of a path starts a NEW row, so offsets of the old and the new
content never collide. Dirty marks (traces touched by new lines; block logs
whose traces changed; block logs the learner has not seen) carry a sequence
number: a reconcile clears its mark only if nothing set it again meanwhile,
and the pipeline re-queues every remaining mark on start, so the in-memory
queues need no durability. Every call takes or finishes a whole batch of
keys: one statement per table, not one per key.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from controller.analyze.traces import TraceAccumulator
from controller.store.packing import UnreadableBody, pack, unpack
from controller.store.sqlite_util import (
    IN_KEYS,
    ThreadConnections,
    Transactions,
    key_list,
    open_database,
    translated,
    translated_within,
)

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
CREATE TABLE IF NOT EXISTS dirty (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
-- A rowid table (rows appended in arrival order, a small index by key): WITHOUT ROWID
-- spilled every accumulator over ~1 KB to an overflow page of its own (issue 23).
CREATE TABLE IF NOT EXISTS traces (
    trace_key TEXT PRIMARY KEY,
    acc BLOB NOT NULL,
    last_entry_at REAL NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    abandoned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_open_by_activity ON traces(last_entry_at)
    WHERE complete = 0 AND abandoned = 0;
-- The blocks and context a settled trace was joined with (kube: its Trace left the
-- cluster, issue 19), which its stored Trace told before: a late line or a second
-- reconcile must leave the old ones and not count a pushed-out execution again.
CREATE TABLE IF NOT EXISTS settled (
    trace_key TEXT PRIMARY KEY,
    block_ids BLOB NOT NULL,
    context_id TEXT NOT NULL
);
"""

T = TypeVar("T")
ACTIVE_PHASES = ("Active", "Idle", "Unreadable")
# Dirty-mark queues, one per pipeline stage after the files (all their names live here):
TRACES = "traces"  # traces touched by new lines
BLOCKLOGS = "blocklogs"  # block logs whose member traces changed
SESSIONS = "sessions"  # Sessions whose member traces changed
EXAMPLES = "examples"  # block logs whose status changed since the learner looked
SESSION_EXAMPLES = "session-examples"  # Sessions whose status changed since the learner looked


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
    traces: dict[str, TraceAccumulator] = field(default_factory=dict)  # folded per trace


@dataclass(frozen=True)
class TraceState:
    """A trace's journal row: everything read of it, and when it last grew."""

    acc: TraceAccumulator
    last_entry_at: float


@dataclass(frozen=True)
class TraceOutcome:
    """What a trace reconcile decided, for `finish_traces` to record."""

    key: str
    complete: bool
    abandoned: bool


class WatermarkMoved(Exception):
    """Another reader advanced this file's watermark first; the batch was not committed."""


def _reads(method: Callable[..., T]) -> Callable[..., T]:
    """A read whose SQLite failures name the journal's file and the fix, like writes do.

    A journal damaged mid-run failed every read with a bare "database disk image
    is malformed", saying neither which file nor what to do (issue 24).
    """

    @functools.wraps(method)
    def read(self: Journal, *args: Any, **kwargs: Any) -> T:
        with translated(self.path):
            return method(self, *args, **kwargs)

    return read


class Journal:
    """SQLite-backed journal; safe for many threads (one connection each)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30000) -> None:
        self.path = Path(path)
        self.created = not self.path.exists()  # a new journal: every file is read from 0
        self._connections = ThreadConnections(
            self.path, lambda: open_database(self.path, busy_timeout_ms)
        )
        self._transactions = Transactions(self._conn)
        self._dirty_seq = int(time.time() * 1000)
        self._seq_lock = threading.Lock()
        with translated(self.path):
            conn = self._conn()
            conn.executescript(SCHEMA)
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone():
                raise sqlite3.DatabaseError("it was written by an earlier foyle-controller")

    # -- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic write (part of the unit's transaction inside a unit of work)."""
        with translated_within(self.path, self._transactions.write()) as conn:
            yield conn

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction for many writes (controller.store.unit.unit_of_work)."""
        return translated_within(self.path, self._transactions.transaction())

    @_reads
    def trace_keys(self) -> list[str]:
        """Every trace read so far (the start-up check that the store has each one)."""
        return [k for (k,) in self._conn().execute("SELECT trace_key FROM traces")]

    def close(self) -> None:
        """Close every thread's connection; call once no other thread is using the journal."""
        self._connections.close()

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._dirty_seq += 1
            return self._dirty_seq

    # -- files ---------------------------------------------------------------------------

    @_reads
    def files(self, *, active_only: bool = False) -> list[FileRow]:
        sql = f"SELECT {', '.join(_FILE_COLUMNS)} FROM files"
        if active_only:
            sql += f" WHERE phase IN {ACTIVE_PHASES}"
        return [FileRow(*row) for row in self._conn().execute(sql + " ORDER BY id")]

    @_reads
    def file(self, file_id: int) -> FileRow:
        row = (
            self._conn()
            .execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE id = ?", (file_id,))
            .fetchone()
        )
        if row is None:
            raise KeyError(file_id)
        return FileRow(*row)

    @_reads
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

    @_reads
    def files_with_inode(self, device: int, inode: int) -> list[FileRow]:
        rows = self._conn().execute(
            f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE device = ? AND inode = ?"
            " ORDER BY id DESC",
            (device, inode),
        )
        return [FileRow(*row) for row in rows]

    def delete_files(self, file_ids: list[int]) -> None:
        """Forget file rows for good (rows of deleted files past the retention bound)."""
        with self._tx() as conn:
            conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in file_ids])

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

    def update_file(self, file_id: int, **fields: object) -> FileRow:
        """Change a file row's bookkeeping (phase, path, fingerprint, errors); never the watermark.
        Returns the row as it is now, so a caller never reads it again."""
        if not fields:
            return self.file(file_id)
        if "watermark" in fields:
            raise ValueError("the watermark only moves with commit_batch")
        unknown = set(fields) - set(_FILE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown file fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as conn:
            row = conn.execute(
                f"UPDATE files SET {assignments} WHERE id = ? RETURNING {', '.join(_FILE_COLUMNS)}",
                (*fields.values(), file_id),
            ).fetchone()
        if row is None:
            raise KeyError(file_id)
        return FileRow(*row)

    # -- ingestion -----------------------------------------------------------------------

    def commit_batch(self, batch: Batch, now: float) -> set[str]:
        """Merge the batch's accumulators, advance the watermark, mark the traces dirty.

        One transaction. Raises WatermarkMoved when the stored watermark is not the
        batch's start (a second reader got there first): nothing is written then.
        """
        touched = set(batch.traces)
        with self._tx() as conn:
            (watermark,) = conn.execute(
                "SELECT watermark FROM files WHERE id = ?", (batch.file_id,)
            ).fetchone()
            if watermark != batch.start_offset:
                raise WatermarkMoved(
                    f"file {batch.file_id}: watermark {watermark}, batch starts at"
                    f" {batch.start_offset}"
                )
            if touched:
                merged = dict(batch.traces)
                for key, stored in self._stored_accs(conn, touched):
                    acc = _load_acc(stored)
                    acc.merge(merged[key])
                    merged[key] = acc
                conn.executemany(
                    "INSERT INTO traces (trace_key, acc, last_entry_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(trace_key) DO UPDATE SET acc = excluded.acc,"
                    " last_entry_at = excluded.last_entry_at, abandoned = 0",
                    [(key, pack(orjson.dumps(acc.to_dict())), now) for key, acc in merged.items()],
                )
                self._mark_dirty(conn, TRACES, touched)
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
        return touched

    @staticmethod
    def _stored_accs(conn: sqlite3.Connection, keys: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        yield from conn.execute(
            f"SELECT trace_key, acc FROM traces WHERE trace_key {IN_KEYS}", (key_list(keys),)
        )

    # -- dirty marks ---------------------------------------------------------------------

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

    @_reads
    def dirty_keys(self, queue: str) -> list[str]:
        rows = self._conn().execute("SELECT key FROM dirty WHERE queue = ?", (queue,))
        return [k for (k,) in rows]

    @_reads
    def dirty_seqs(self, queue: str, keys: Iterable[str]) -> dict[str, int]:
        """The current dirty marks of `keys` (absent: not dirty)."""
        rows = self._conn().execute(
            f"SELECT key, seq FROM dirty WHERE queue = ? AND key {IN_KEYS}",
            (queue, key_list(keys)),
        )
        return dict(rows)

    def clear_dirty(self, queue: str, seqs: Mapping[str, int]) -> None:
        """Forget each mark unless something set it again since its `seq` was read."""
        if not seqs:
            return
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM dirty WHERE queue = ? AND key = ? AND seq = ?",
                [(queue, key, seq) for key, seq in seqs.items()],
            )

    def mark_all_traces_dirty(self) -> int:
        """Queue every trace the journal knows (the store lost them); how many."""
        seq = self._next_seq()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO dirty (queue, key, seq) SELECT ?, trace_key, ? FROM traces"
                " WHERE true ON CONFLICT(queue, key) DO UPDATE SET seq = excluded.seq",
                (TRACES, seq),
            )
            return cur.rowcount

    # -- traces --------------------------------------------------------------------------

    @_reads
    def trace_states(self, keys: Iterable[str]) -> dict[str, TraceState]:
        """The journal rows of `keys` (absent keys: nothing was read of them)."""
        rows = self._conn().execute(
            f"SELECT trace_key, acc, last_entry_at FROM traces WHERE trace_key {IN_KEYS}",
            (key_list(keys),),
        )
        return {key: TraceState(_load_acc(acc), last) for key, acc, last in rows}

    def finish_traces(self, outcomes: Iterable[TraceOutcome]) -> None:
        """Record phases (an abandoned trace leaves the sweep; a new line brings it back)."""
        rows = [(int(o.complete), int(o.abandoned), o.key) for o in outcomes]
        if rows:
            with self._tx() as conn:
                conn.executemany(
                    "UPDATE traces SET complete = ?, abandoned = ? WHERE trace_key = ?", rows
                )

    def record_settled(self, joined: Mapping[str, tuple[list[str], str]]) -> None:
        """Record what each settled trace (key -> (block ids, context id)) was joined with."""
        rows = [(key, orjson.dumps(blocks), context) for key, (blocks, context) in joined.items()]
        if rows:
            with self._tx() as conn:
                conn.executemany(
                    "INSERT INTO settled (trace_key, block_ids, context_id) VALUES (?, ?, ?)"
                    " ON CONFLICT(trace_key) DO UPDATE SET block_ids = excluded.block_ids,"
                    " context_id = excluded.context_id",
                    rows,
                )

    @_reads
    def settled_joins(self, keys: Iterable[str]) -> dict[str, tuple[list[str], str]]:
        """What `record_settled` recorded of `keys` (key -> (block ids, context id))."""
        rows = self._conn().execute(
            f"SELECT trace_key, block_ids, context_id FROM settled WHERE trace_key {IN_KEYS}",
            (key_list(keys),),
        )
        return {key: (orjson.loads(blocks), context) for key, blocks, context in rows}

    @_reads
    def traces_to_abandon(self, idle_since: float) -> list[str]:
        """Unfinished traces with no line since `idle_since` and not yet marked Abandoned.

        One indexed query per sweep instead of a timer per open trace, whose number
        grows with the backlog being read.
        """
        rows = self._conn().execute(
            "SELECT trace_key FROM traces WHERE complete = 0 AND abandoned = 0"
            " AND last_entry_at < ?",
            (idle_since,),
        )
        return [k for (k,) in rows]

    @_reads
    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {
            "files": conn.execute("SELECT COUNT(*) FROM files").fetchone()[0],
            "lines": conn.execute("SELECT COALESCE(SUM(lines), 0) FROM files").fetchone()[0],
            "traces": conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0],
            "dirty": conn.execute("SELECT COUNT(*) FROM dirty").fetchone()[0],
        }


def _load_acc(blob: bytes) -> TraceAccumulator:
    try:
        return TraceAccumulator.from_dict(orjson.loads(unpack(blob)))
    except UnreadableBody as e:
        raise sqlite3.DatabaseError(f"a trace's accumulator is unreadable: {e}") from None
