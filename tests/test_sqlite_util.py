"""One way to open SQLite: per-thread connections that one close() ends, for the store and the journal."""

from __future__ import annotations

import ctypes
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.api.resource import new_resource
from controller.store.base import StoreUnavailable
from controller.store.journal import TRACES, Journal
from controller.store.sqlite import SQLiteStore
from controller.store.sqlite_util import WAL_SIZE_LIMIT, ThreadConnections, open_database


def test_close_closes_the_connection_of_every_thread(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    connections = ThreadConnections(path, lambda: open_database(path))
    opened: list[sqlite3.Connection] = []
    got, done = threading.Event(), threading.Event()

    def work() -> None:  # a live thread holding its connection, as a worker does
        opened.append(connections.get())
        got.set()
        done.wait(10)

    worker = threading.Thread(target=work)
    worker.start()
    assert got.wait(10)
    opened.append(connections.get())
    assert opened[0] is not opened[1]

    connections.close()
    done.set()
    worker.join()
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    with pytest.raises(StoreUnavailable, match="closed"):
        connections.get()


def test_a_closed_journal_says_so_in_every_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            journal.files()
        except StoreUnavailable as err:
            errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert errors == []
    journal.close()
    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert [str(e) for e in errors] == [f"{tmp_path / 'journal.db'}: the database is closed"]


def test_a_new_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.db"
    open_database(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


# SQLite's SHARED lock range on the database file (PENDING_BYTE + 2, 510 bytes): an open
# WAL connection holds a read lock there while it is open, so no other process takes the
# file for its own (a checkpoint that deletes the WAL under a live writer).
_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "rb+") as f:
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
    except OSError:
        sys.exit(1)
"""


def _another_process_can_lock(path: Path) -> bool:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(path)]).returncode == 0


def test_opening_another_connection_keeps_the_locks_of_open_ones(tmp_path: Path) -> None:
    # Regression: opening (and closing) the file to create it 0600 on every connection
    # dropped this process's POSIX locks on it, so another process could checkpoint and
    # remove the WAL under a live writer ("database disk image is malformed").
    path = tmp_path / "x.db"
    held = open_database(path)
    held.execute("SELECT 1 FROM sqlite_master").fetchall()
    assert not _another_process_can_lock(path)
    open_database(path).close()  # another thread's connection
    assert not _another_process_can_lock(path)
    held.close()
    assert _another_process_can_lock(path)


def test_a_wal_is_cut_back_after_a_checkpoint(tmp_path: Path) -> None:
    """Issue 23: a caught-up state dir's WAL files held 12 MB, the largest size each had
    reached; after a checkpoint the next write cuts the WAL back to WAL_SIZE_LIMIT."""
    path = tmp_path / "x.db"
    conn = open_database(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # only the checkpoint below
    conn.execute("CREATE TABLE t (body BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(10_000),) for _ in range(300)])
    conn.execute("COMMIT")
    wal = tmp_path / "x.db-wal"
    assert wal.stat().st_size > 2 * WAL_SIZE_LIMIT
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.execute("INSERT INTO t VALUES (x'00')")
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    conn.close()


def _sqlite_memory_used() -> Callable[[], int]:
    """sqlite3_memory_used() of the SQLite library this process's sqlite3 module runs on."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    libs = {line.split()[-1] for line in maps.splitlines() if "libsqlite3" in line}
    if len(libs) != 1:
        pytest.skip("sqlite3 is not linked to one shared libsqlite3 here")
    used = ctypes.CDLL(libs.pop()).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return lambda: int(used())


def test_reading_batches_of_every_size_keeps_sqlite_memory_flat(tmp_path: Path) -> None:
    """Issue 23: batches of 1 to 400 keys are one statement, not 400 cached ones (each
    count of `?` placeholders was a statement of its own, held in every connection's
    statement cache: 30 to 40 MB over the 22 connections of a long catch-up)."""
    memory_used = _sqlite_memory_used()
    store, journal = SQLiteStore(tmp_path / "store.db"), Journal(tmp_path / "journal.db")
    names = [f"t{n:04d}" for n in range(400)]
    for name in names:
        store.create(new_resource("Trace", name, {"id": name}))
    journal.mark_dirty(TRACES, names)
    reads = (
        lambda keys: store.get_many("Trace", keys),
        lambda keys: store.versions_many("Trace", keys),
        lambda keys: journal.dirty_seqs(TRACES, keys),
        journal.trace_states,
    )
    for read in reads:  # every statement prepared once
        read(names[:1])
    before = memory_used()
    for n in range(1, len(names) + 1):
        assert len(reads[0](names[:n])) == n
        assert len(reads[1](names[:n])) == n
        assert len(reads[2](names[:n])) == n
        reads[3](names[:n])
    grown = memory_used() - before
    store.close()
    journal.close()
    assert grown < 1 << 20, f"SQLite's memory grew {grown >> 10} KB over 1,600 batch reads"


def test_a_connection_caches_a_bounded_share_of_a_large_store(tmp_path: Path) -> None:
    """Issue 23: a run holds ~24 connections, each caching pages until its bound; at
    SQLite's default (2 MiB each) that bound was ~50 MB of a long catch-up's memory."""
    memory_used = _sqlite_memory_used()
    store = SQLiteStore(tmp_path / "store.db")
    names = [f"t{n:05d}" for n in range(3000)]
    filler = os.urandom(1500).hex()  # ~3 KB a body that zstd cannot shrink: ~9 MB in all
    with store.transaction():
        for name in names:
            store.create(new_resource("Trace", name, {"id": name, "filler": filler}))
    store.close()
    store = SQLiteStore(tmp_path / "store.db")
    store.get_many("Trace", names[:1])
    before = memory_used()
    for i in range(0, len(names), 250):
        assert len(store.get_many("Trace", names[i : i + 250])) == len(names[i : i + 250])
    grown = memory_used() - before
    store.close()
    assert grown < 1536 << 10, f"one connection's memory grew {grown >> 10} KB reading 9 MB"
