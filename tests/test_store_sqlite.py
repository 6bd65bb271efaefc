"""SQLiteStore: the shared Store contract, plus what only an SQLite file promises."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from controller.api.resource import new_resource
from controller.store.base import Gone, StoreUnavailable, read_modify_write
from controller.store.sqlite import SQLiteStore
from tests.store_contract import *  # noqa: F403  (the contract's tests run here)
from tests.store_contract import _increment, _trace, _trace_with

SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited connections


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def new_store(db_path: Path) -> Iterator[Callable[[], SQLiteStore]]:
    opened: list[SQLiteStore] = []

    def make(**options: Any) -> SQLiteStore:
        opened.append(SQLiteStore(db_path, **options))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(new_store: Callable[[], SQLiteStore]) -> SQLiteStore:
    return new_store()


# ---- helpers run in other processes (module level, so spawn can import them) ----


def _report(results: Any, fn: Callable[[], Any]) -> None:
    try:
        results.put(("ok", fn()))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _increment_worker(path: str, times: int, start: Any, results: Any) -> None:
    def run() -> int:
        with SQLiteStore(path) as s:
            start.wait(timeout=30)
            for _ in range(times):
                read_modify_write(s, "Trace", "counter", _increment, attempts=10_000)
        return times

    _report(results, run)


def _reader_worker(path: str, started: Any, results: Any) -> None:
    """List until the writer marks the counter done; busy_timeout 0 makes any wait an error."""

    def run() -> tuple[int, int]:
        with SQLiteStore(path, busy_timeout_ms=0) as s:
            seen: set[int] = set()
            loops = 0
            while True:
                objects = s.list("Trace")
                loops += 1
                started.set()
                if objects:
                    seen.add(objects[0]["spec"]["exitCode"])
                    if objects[0]["spec"].get("evalMode"):
                        return loops, len(seen)

    _report(results, run)


def _collect(results: Any, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        status, value = results.get(timeout=60)
        assert status == "ok", value
        out.append(value)
    return out


# ---- SQLite-only claims ----


def test_two_processes_lose_no_read_modify_write_increment(
    store: SQLiteStore, db_path: Path
) -> None:
    start, results = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_increment_worker, args=(str(db_path), 200, start, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    _collect(results, 2)
    for p in procs:
        p.join(timeout=30)
    assert store.get("Trace", "counter")["spec"]["exitCode"] == 400


def test_reader_process_never_sees_a_locked_database_while_a_writer_commits(
    store: SQLiteStore, db_path: Path
) -> None:
    obj = store.create(_trace("counter", exitCode=0))
    started, results = SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(target=_reader_worker, args=(str(db_path), started, results))
    reader.start()
    assert started.wait(timeout=60)
    for i in range(1, 300):
        obj = store.update(_trace_with(obj, exitCode=i))
    store.update(_trace_with(obj, evalMode=True))
    [(loops, distinct)] = _collect(results, 1)
    reader.join(timeout=30)
    assert distinct > 1, "the reader never overlapped the writer"
    assert loops >= distinct


def test_database_and_wal_files_are_private(store: SQLiteStore, db_path: Path) -> None:
    store.create(_trace("a"))
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_journal_is_in_wal_mode(store: SQLiteStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_watch_from_pruned_history_raises_gone(new_store: Callable[..., SQLiteStore]) -> None:
    store = new_store(keep_changes=3)
    first = store.create(_trace("a"))
    obj = first
    for i in range(1, 10):
        obj = store.update(_trace_with(obj, exitCode=i))
    with pytest.raises(Gone):
        next(store.watch("Trace", first["metadata"]["resourceVersion"], timeout=1))
    recent = str(int(obj["metadata"]["resourceVersion"]) - 3)
    kept = list(store.watch("Trace", recent, timeout=0.1))
    assert [e.object["spec"]["exitCode"] for e in kept] == [7, 8, 9]


def test_corrupt_file_raises_store_unavailable_naming_the_file(db_path: Path) -> None:
    db_path.write_bytes(b"this is not an SQLite database, just some bytes\n" * 100)
    with pytest.raises(StoreUnavailable) as caught:
        SQLiteStore(db_path)
    assert str(db_path) in str(caught.value)
    assert "foylectl analyze" in str(caught.value)


def test_list_pages_reads_one_snapshot_in_pages_in_name_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    for i in range(7):
        store.create(new_resource("Trace", f"t{i}", {"id": f"t{i}"}))
    version, pages = store.list_pages("Trace", page_size=3)
    first = next(pages)
    writer = SQLiteStore(tmp_path / "store.db")  # another connection, as `run` is to `get`
    writer.create(new_resource("Trace", "t9", {"id": "t9"}))  # after the snapshot was taken
    rest = [obj for page in pages for obj in page]
    assert [len(first)] + [len(rest)] == [3, 4]
    assert [o["metadata"]["name"] for o in first + rest] == [f"t{i}" for i in range(7)]
    assert int(version) < int(store.get("Trace", "t9")["metadata"]["resourceVersion"])


def test_bodies_are_stored_deflated_and_read_back_whole(store: SQLiteStore, db_path: Path) -> None:
    """Issue 23: a body is kept deflated (store bytes per log byte), and every read path,
    field reads included, gives the object back as written; a body stored as plain JSON
    (an earlier store) still reads."""
    notebook = {"cells": [{"kind": "CODE", "contents": f"echo {i} " * 20} for i in range(50)]}
    written = store.create(new_resource("Trace", "t1", {"id": "t1", "request": notebook}))
    store.create(new_resource("Trace", "t2", {"id": "t2", "blockIds": ["b1"]}))
    text_bytes = len(orjson.dumps(written))
    with sqlite3.connect(db_path) as raw:
        (stored_bytes,) = raw.execute(
            "SELECT length(body) FROM changes WHERE name = 't1'"
        ).fetchone()
        assert stored_bytes * 4 < text_bytes
        raw.execute(
            "UPDATE changes SET body = ? WHERE name = 't2'",
            (orjson.dumps(store.get("Trace", "t2")),),
        )
    assert store.get("Trace", "t1") == written
    assert store.get_many("Trace", ["t1"]) == {"t1": written}
    assert store.list("Trace")[0] == written
    assert [e.object for e in store.watch("Trace", "0", timeout=0)][0] == written
    fields = store.get_fields_many("Trace", ["t1", "t2"], (".spec.blockIds", ".spec.request"))
    assert fields == {"t1": (None, notebook), "t2": (["b1"], None)}


def test_a_body_this_version_cannot_unpack_is_a_one_line_store_error(
    store: SQLiteStore, db_path: Path
) -> None:
    """A damaged body, or one packed with a dictionary of a later version, fails the read
    with StoreUnavailable saying so, not a traceback from the decompressor."""
    store.create(new_resource("Trace", "t1", {"id": "t1"}))
    store.create(new_resource("Trace", "t2", {"id": "t2"}))
    later = zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(b"x" * 64, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    )
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE changes SET body = ? WHERE name = 't1'", (b"\x28\xb5\x2f\xfd damaged",))
        raw.execute("UPDATE changes SET body = ? WHERE name = 't2'", (later.compress(b"{}"),))
    for name in ("t1", "t2"):
        with pytest.raises(StoreUnavailable, match="unreadable body"):
            store.get("Trace", name)


def test_every_change_kept_below_the_pruned_horizon_is_a_current_version(
    new_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """Issue 23: a prune visits only the changes since the last one, so a version
    superseded below the horizon goes with the write that supersedes it, not at a prune
    that would never look there again; watch from the horizon still replays every change."""
    store = new_store(keep_changes=1000)  # a prune every 10 changes
    names = [f"t{i}" for i in range(1500)]
    store.read_modify_write_many(
        "Trace", {n: (lambda _, n=n: new_resource("Trace", n, {"id": n})) for n in names}
    )
    read_modify_write(store, "Trace", "t0", lambda obj: _trace_with(obj, blockIds=["b"]))
    with sqlite3.connect(db_path) as raw:
        (pruned,) = raw.execute("SELECT value FROM meta WHERE key = 'pruned_through'").fetchone()
        stale = raw.execute(
            "SELECT COUNT(*) FROM changes WHERE rv <= ? AND rv NOT IN (SELECT rv FROM objects)",
            (pruned,),
        ).fetchone()[0]
    assert pruned == 500 and stale == 0
    replayed = [e.object["metadata"]["name"] for e in store.watch("Trace", str(pruned), timeout=0)]
    assert replayed == [*names[500:], "t0"]


def test_a_store_with_the_old_index_of_objects_by_rv_loses_it_and_prunes_by_key(
    new_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """Issue 23: stores written before kept `objects_rv`, which each write moved (a page
    write at a random leaf). Opened now, the index goes, every object stays readable, and
    a prune still keeps each current version while it drops the superseded ones."""
    new_store().close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE INDEX objects_rv ON objects (rv)")
    store = new_store(keep_changes=100)  # a prune every change
    store.read_modify_write_many(
        "Trace", {n: (lambda _, n=n: new_resource("Trace", n, {"id": n})) for n in ("a", "b")}
    )
    for i in range(150):
        read_modify_write(store, "Trace", "a", lambda obj, i=i: _trace_with(obj, blockIds=[str(i)]))
    with sqlite3.connect(db_path) as raw:
        indexes = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        (pruned,) = raw.execute("SELECT value FROM meta WHERE key = 'pruned_through'").fetchone()
        below = raw.execute("SELECT name FROM changes WHERE rv <= ?", (pruned,)).fetchall()
    assert "objects_rv" not in indexes and "changes_kind_rv" in indexes
    assert pruned >= 50 and below == [("b",)]  # b's only version is current: kept
    assert store.get("Trace", "b")["spec"]["id"] == "b"
    assert store.get("Trace", "a")["spec"]["blockIds"] == ["149"]
