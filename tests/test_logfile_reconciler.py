"""The LogFile reconciler against real files, a real journal and a real SQLite store.

Every line the tests write carries its own trace id, so "ingested exactly once"
is the line count of each id's accumulator in the journal. Each test changes files the
way writers and logrotate do, calls `reconcile(path)` like the worker loop
would, and checks the entries, the journal's file rows and the LogFile status.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.api.result import DONE, Result
from controller.logs.transition import FINGERPRINT_BYTES, FileIdentity, starts_like
from controller.reconcilers.logfile import LogFileReconciler, LogFileSettings, logfile_name
from controller.store.base import StoreUnavailable
from controller.store.journal import TRACES, FileRow, Journal
from controller.store.packing import unpack
from controller.store.sqlite import SQLiteStore
from tests.fakes import FakeClock

NODE = "node-a"
EXECUTE = "github.com/jlewi/foyle/app/pkg/executor.(*Executor).Execute"


def trace_id(n: int) -> str:
    return f"{n:032x}"


PAYLOAD = "gcloud logging read --project=foyle-dev\n"


def line(n: int, *, payload: str = PAYLOAD) -> bytes:
    """A Foyle Executor line (the shape of testdata/foyle/execute_traces_lines.jsonl)."""
    return (
        orjson.dumps(
            {
                "severity": "info",
                "time": 1713303870.400788 + n,
                "caller": "executor/executor.go:43",
                "function": EXECUTE,
                "message": "Executor.Execute",
                "traceId": trace_id(n),
                "blockId": "",
                "request": {"block": {"kind": "CODE", "contents": payload, "id": f"b{n}"}},
            }
        )
        + b"\n"
    )


def lines(ns: Iterable[int]) -> bytes:
    return b"".join(line(n) for n in ns)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(0)


class Rig:
    """A reconciler over a journal and a store in tmp_path, and what it handed on."""

    def __init__(self, tmp_path: Path, settings: LogFileSettings) -> None:
        self.dir = tmp_path / "logs"
        self.dir.mkdir()
        self.journal = Journal(tmp_path / "journal.db")
        self.store = SQLiteStore(tmp_path / "store.db")
        self.settings = settings
        self.clock = FakeClock()
        self.handed_on: list[str] = []
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> LogFileReconciler:
        return LogFileReconciler(self.store, self.journal, self.settings, self.clock)

    def restart(self) -> None:
        """A new reconciler on the same journal and store: no open handles, no memory."""
        self.reconciler.close()
        self.reconciler = self.new_reconciler()

    def path(self, name: str, data: bytes | None = None) -> Path:
        path = self.dir / name
        if data is not None:
            path.write_bytes(data)
        return path

    def reconcile(self, path: Path) -> Result:
        """One path's reconcile: what comes next for it; the traces handed on are kept."""
        outcome = self.reconciler.reconcile([str(path)])
        self.handed_on.extend(sorted(outcome.downstream.get(TRACES, ())))
        return outcome.result(str(path))

    def ingested(self) -> Counter[str]:
        """How many lines of each trace the journal folded in (a fresh connection: committed)."""
        with sqlite3.connect(self.journal.path) as conn:
            rows = conn.execute("SELECT trace_key, acc FROM traces").fetchall()
        return Counter({key: orjson.loads(unpack(acc))["count"] for key, acc in rows})

    def assert_once(self, ns: Iterable[int]) -> None:
        assert self.ingested() == Counter(trace_id(n) for n in ns)

    def rows(self, path: Path) -> list[FileRow]:
        return [row for row in self.journal.files() if row.path == str(path)]

    def row(self, path: Path) -> FileRow:
        (row,) = [row for row in self.rows(path) if row.phase in ("Active", "Idle")]
        return row

    def status(self, row: FileRow) -> dict[str, Any]:
        current = self.journal.file(row.id)
        return self.store.get("LogFile", logfile_name(current, NODE))["status"]

    def close(self) -> None:
        self.reconciler.close()
        self.store.close()
        self.journal.close()


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**settings: Any) -> Rig:
        settings.setdefault("publish_interval", 0.0)
        settings.setdefault("rotate_wait", 0.0)  # a rotated file let go at once, unless said
        rigs.append(Rig(tmp_path, LogFileSettings(node=NODE, **settings)))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def assert_status(rig: Rig, row: FileRow, **expected: Any) -> None:
    status = rig.status(row)
    assert {key: status.get(key) for key in expected} == expected


# -- 1. appends -----------------------------------------------------------------------------


def test_half_line_waits_for_its_rest_and_each_line_is_ingested_once(rig: Rig) -> None:
    first, second = line(0), line(1)
    path = rig.path("foyle.logs.json", first + second[:40])
    rig.reconcile(path)
    rig.assert_once([0])
    row = rig.row(path)
    assert (row.watermark, row.carry, row.lines) == (len(first), "none", 1)
    assert_status(rig, row, offset=len(first), size=len(first) + 40, lines=1, phase="Active")

    append(path, second[40:] + line(2))
    rig.reconcile(path)
    rig.assert_once([0, 1, 2])
    size = path.stat().st_size
    assert_status(rig, row, offset=size, size=size, lines=3, badLines=0, phase="Active")
    assert Counter(rig.handed_on) == Counter(trace_id(n) for n in range(3))


def test_a_first_part_that_is_an_object_is_no_line_until_the_file_is_quiet(
    make_rig: Callable[..., Rig],
) -> None:
    """`run` == `analyze`: a line whose first part is a complete object, continued later,
    is one bad line (as `analyze` of the whole file says), not a trace and a bad line."""
    rig = make_rig(rotate_wait=5.0)
    path = rig.path("x.json", line(0)[:-1])  # its newline not written yet
    assert rig.reconcile(path) == Result(requeue_after=5.0)  # looked at again when quiet
    rig.assert_once([])
    append(path, b' "continued"\n' + line(1))
    rig.reconcile(path)
    rig.assert_once([1])
    assert_status(rig, rig.row(path), lines=2, badLines=1)

    append(path, line(2)[:-1])  # a file that ends for good without a newline
    rig.reconcile(path)
    rig.assert_once([1])
    rig.clock.advance(5.0)
    rig.reconcile(path)
    rig.assert_once([1, 2])
    assert_status(rig, rig.row(path), lines=3, badLines=1, offset=path.stat().st_size)


def test_complete_last_object_without_newline_is_read_once_and_its_newline_swallowed(
    rig: Rig,
) -> None:
    path = rig.path("foyle.logs.json", line(0) + line(1)[:-1])
    rig.reconcile(path)
    rig.assert_once([0, 1])
    row = rig.journal.file(rig.row(path).id)
    assert (row.watermark, row.carry) == (path.stat().st_size, "after-unterminated")

    append(path, b"\n")
    rig.reconcile(path)
    append(path, line(2))
    rig.reconcile(path)
    rig.assert_once([0, 1, 2])
    size = path.stat().st_size
    assert_status(rig, row, offset=size, size=size, lines=3, badLines=0)


# -- 2-4. rotation --------------------------------------------------------------------------


def test_rename_rotation_drains_the_old_tail_through_its_handle_then_reads_the_new_file(
    rig: Rig,
) -> None:
    path = rig.path("x.json", lines(range(3)))
    rig.reconcile(path)
    old = rig.row(path)
    append(path, lines([3, 4]))  # never seen under x.json
    path.rename(rig.dir / "x.json.1")  # a name nobody watches
    rig.path("x.json", lines([5, 6]))

    assert rig.reconcile(path) == DONE
    rig.assert_once(range(7))
    old_size = (rig.dir / "x.json.1").stat().st_size
    assert_status(rig, old, phase="Rotated", offset=old_size, size=old_size, lines=5)
    new = rig.row(path)
    assert new.id != old.id
    assert_status(rig, new, phase="Active", offset=path.stat().st_size, lines=2, truncations=0)


@pytest.mark.parametrize("order", ["new-path-first", "renamed-path-first"])
def test_rename_to_another_watched_name_reads_nothing_twice_in_either_order(
    rig: Rig, order: str
) -> None:
    path, renamed = rig.path("x.json", lines(range(3))), rig.dir / "x-1.json"
    rig.reconcile(path)
    old = rig.row(path)
    append(path, lines([3, 4]))
    path.rename(renamed)
    rig.path("x.json", lines([5, 6]))

    for p in (path, renamed) if order == "new-path-first" else (renamed, path):
        rig.reconcile(p)
    rig.assert_once(range(7))
    append(renamed, line(7))
    append(path, line(8))
    for p in (renamed, path):
        rig.reconcile(p)
    rig.assert_once(range(9))

    continued = rig.row(renamed)
    assert continued.uid == old.uid  # the same file identity goes on, from its watermark
    assert_status(rig, continued, offset=renamed.stat().st_size, lines=6, phase="Active")
    assert_status(rig, rig.row(path), offset=path.stat().st_size, lines=3, phase="Active")
    # one LogFile per file identity: none left behind under the renamed file's old name
    names = {logfile_name(rig.row(p), NODE) for p in (path, renamed)}
    assert {obj["metadata"]["name"] for obj in rig.store.list("LogFile")} == names


def test_two_rotations_in_one_backlog_drain_what_the_handle_still_reaches(rig: Rig) -> None:
    path = rig.path("x.json", lines(range(2)))
    rig.reconcile(path)
    old = rig.row(path)
    append(path, lines([2, 3]))
    path.rename(rig.dir / "x.json.1")
    rig.path("x.json", lines([10, 11]))  # lives and rotates away unseen
    (rig.dir / "x.json.1").rename(rig.dir / "x.json.2")
    path.rename(rig.dir / "x.json.1")
    rig.path("x.json", lines([20, 21]))

    rig.reconcile(path)
    rig.assert_once([0, 1, 2, 3, 20, 21])  # 10 and 11 were never reachable
    assert_status(rig, old, phase="Rotated", offset=(rig.dir / "x.json.2").stat().st_size)
    assert_status(rig, rig.row(path), phase="Active", lines=2)


def test_lines_written_to_the_old_descriptor_after_a_create_mode_rotation_are_read(
    make_rig: Callable[..., Rig],
) -> None:
    """logrotate's `create`: x.json -> x.json.1 (no log name), the writer reopens later."""
    rig = make_rig(rotate_wait=5.0)
    path = rig.path("x.json")
    with path.open("ab", buffering=0) as writer:
        writer.write(lines(range(3)))
        rig.reconcile(path)
        old = rig.row(path)
        path.rename(rig.dir / "x.json.1")
        rig.path("x.json", line(10))
        assert 0 < (rig.reconcile(path).requeue_after or 0) <= 5.0  # looks again soon
        writer.write(lines([3, 4]))  # the application has not reopened its log yet
        rig.clock.advance(1.0)
        rig.reconcile(path)
        rig.assert_once([*range(5), 10])
        assert_status(rig, old, phase="Rotated", lines=5, unreadBytes=0)
        writer.write(line(5)[:30])  # its last line never finished
        rig.clock.advance(4.5)
        rig.reconcile(path)  # the file grew 4.5 s ago: still read
    rig.clock.advance(5.0)
    assert rig.reconcile(path) == DONE  # quiet for the grace period: let go
    rig.assert_once([*range(5), 10])
    assert_status(rig, old, phase="Rotated", lines=5, unreadBytes=30)
    assert len(rig.reconciler.handles) == 1  # only the new x.json is held open


def test_a_handle_closed_by_the_open_file_bound_loses_nothing_at_rotation(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_open_files=1)
    a, b = rig.path("a.json", line(0)), rig.path("b.json", line(1))
    rig.reconcile(a)
    rig.reconcile(b)  # a's handle is closed to stay within one open file
    old = rig.row(a)
    append(a, lines([2, 3]))  # written before the rotation, not read yet
    a.rename(rig.dir / "a.json.1")
    rig.path("a.json", line(4))

    rig.reconcile(a)
    rig.assert_once(range(5))
    assert_status(rig, old, phase="Rotated", lines=3, unreadBytes=0)


def test_a_draining_file_truncated_and_found_under_a_watched_name_is_read_once(
    make_rig: Callable[..., Rig],
) -> None:
    """Its rotated row's drain and its new name's reconcile both see the truncation."""
    rig = make_rig(rotate_wait=5.0)
    path, renamed = rig.path("x.json", lines(range(5))), rig.dir / "x-1.json"
    rig.reconcile(path)
    path.rename(renamed)
    rig.path("x.json", line(10))
    rig.reconcile(path)  # the old file is drained, kept open while its writer may write
    truncate(renamed)
    append(renamed, lines([5, 6]))

    rig.reconcile(renamed)  # a new row reads the truncated file from 0
    rig.clock.advance(1.0)
    rig.reconcile(path)  # the drain of the old row must not read it again
    rig.assert_once([*range(7), 10])


def test_a_truncated_file_read_under_its_new_name_first_is_not_read_again_by_its_old_row(
    rig: Rig,
) -> None:
    """copytruncate, rename to a watched name; the new name is reconciled before the old."""
    path, renamed = rig.path("x.json", lines(range(3))), rig.dir / "x-1.json"
    rig.reconcile(path)
    truncate(path)
    append(path, lines([3, 4, 5]))
    path.rename(renamed)
    rig.path("x.json", line(10))

    rig.reconcile(renamed)  # its own row reads the new content from 0
    rig.reconcile(path)  # the old row sees the truncation: the new content is not its own
    rig.assert_once([*range(6), 10])


def test_a_file_truncated_and_rotated_after_its_handle_was_closed_is_read_again_from_0(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_open_files=1)
    a, b = rig.path("a.json", lines(range(4))), rig.path("b.json", line(10))
    rig.reconcile(a)
    rig.reconcile(b)  # a's handle is closed to stay within one open file
    truncate(a)
    append(a, lines([4, 5]))
    a.rename(rig.dir / "a.json.1")
    rig.path("a.json", line(6))

    rig.reconcile(a)
    rig.assert_once([*range(7), 10])


def test_a_file_truncated_and_rewritten_while_a_worker_reads_it_is_read_once(
    make_rig: Callable[..., Rig],
) -> None:
    """copytruncate just after the reader caught up, the reader still between its look at
    the file and its read: it must not read the new content at the old watermark (the
    bytes past it were read again from 0 once the truncation was seen: duplicated)."""
    rig = make_rig()
    path = rig.path("app.json", b"")
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while not stop.is_set():
                rig.reconcile(path)
        except BaseException as err:
            errors.append(err)
            raise

    def caught_up() -> bool:  # the row reading the file as it is now is at its end
        row = rig.journal.active_file_at(str(path))
        if row is None:
            return False
        data = path.read_bytes()
        ident = FileIdentity(row.device, row.inode, row.fingerprint, row.fingerprint_len)
        return row.watermark == len(data) and starts_like(ident, data)

    worker = threading.Thread(target=work)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    worker.start()
    written = 0
    try:
        for _ in range(300):  # a race: before the fix, lost or duplicated lines most runs
            append(path, lines(range(written, written + 2)))  # shorter than the fingerprint
            written += 2
            deadline = time.monotonic() + 10
            while not caught_up() and time.monotonic() < deadline and not errors:
                time.sleep(0.0005)
            truncate(path)  # copytruncate, the copy's lines read already
            append(path, lines(range(written, written + 4)))
            written += 4
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(switch)
    assert not errors
    rig.reconcile(path)
    assert not [k for k, n in rig.ingested().items() if n > 1]
    rig.assert_once(range(written))


@pytest.mark.parametrize("rotated_name", ["app.{}.json", "app.json.{}"], ids=["watched", "not"])
def test_files_renamed_while_two_workers_read_are_read_once(
    make_rig: Callable[..., Rig], rotated_name: str
) -> None:
    """A writer rotating app.json to app.N.json (both watched) or to app.json.N (a name
    the watcher queues only as a rename's destination) under two racing workers."""
    rig = make_rig(rotate_wait=5.0)
    path = rotated = rig.path("app.json")
    written = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(f: Any, count: int) -> None:
        nonlocal written
        for _ in range(count):
            f.write(line(written))
            written += 1

    def work(reverse: bool) -> None:
        try:
            while not stop.is_set():
                for p in sorted([path, rotated], reverse=reverse):  # the two names of a file
                    rig.reconcile(p)
        except BaseException as err:
            errors.append(err)
            raise

    workers = [threading.Thread(target=work, args=(r,)) for r in (False, True)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads interleave between far more bytecodes
    for t in workers:
        t.start()
    try:
        for n in range(1500):
            with path.open("ab", buffering=0) as f:
                write(f, 1)  # shorter than the 1 KiB fingerprint: it grows while read
                rotated = rig.dir / rotated_name.format(n)
                path.rename(rotated)
                write(f, 20)  # to its old descriptor, after the rename, a line at a time
    finally:
        stop.set()
        for t in workers:
            t.join()
        sys.setswitchinterval(switch)
    assert not errors
    for p in [*sorted(rig.dir.iterdir()), rig.dir / "app.json"]:  # its look drains them
        rig.reconcile(p)
    rig.assert_once(range(written))
    assert sum(row.lines for row in rig.journal.files()) == written


def test_a_file_truncated_rewritten_and_then_rotated_away_is_read_again_from_0(
    rig: Rig,
) -> None:
    """copytruncate, then a rename rotation before the path was looked at again."""
    path = rig.path("x.json", lines(range(5)))
    rig.reconcile(path)
    old = rig.row(path)
    truncate(path)
    append(path, lines([5, 6]))
    path.rename(rig.dir / "x.json.1")
    rig.path("x.json", line(7))

    rig.reconcile(path)
    rig.assert_once(range(8))
    rewritten = [r for r in rig.journal.files() if r.inode == old.inode and r.id != old.id]
    assert [(r.phase, r.lines, r.truncations) for r in rewritten] == [("Rotated", 2, 1)]


# -- 5. truncation --------------------------------------------------------------------------


def test_copytruncate_starts_a_new_row_and_reports_the_bytes_it_could_not_read(
    rig: Rig,
) -> None:
    half = line(3)[:50]
    path = rig.path("x.json", lines(range(3)) + half)
    rig.reconcile(path)
    old = rig.row(path)
    shutil.copyfile(path, rig.dir / "x.json.1")
    truncate(path)
    append(path, lines([4, 5]))

    rig.reconcile(path)
    rig.assert_once([0, 1, 2, 4, 5])
    new = rig.row(path)
    assert new.id != old.id
    assert_status(rig, old, phase="Rotated", lines=3)
    assert_status(
        rig, new, phase="Active", offset=path.stat().st_size, lines=2, truncations=1,
        unreadBytes=len(half),
    )  # fmt: skip


def test_truncation_then_the_same_first_line_again_reads_the_rewritten_file(
    rig: Rig,
) -> None:
    path = rig.path("x.json", lines([0, 1]))
    rig.reconcile(path)
    truncate(path)
    append(path, line(0))
    rig.reconcile(path)
    append(path, line(2))
    rig.reconcile(path)

    # line 0 was written twice, once into each content of the file
    assert rig.ingested() == Counter({trace_id(0): 2, trace_id(1): 1, trace_id(2): 1})
    assert [row.phase for row in rig.rows(path)] == ["Rotated", "Active"]
    assert_status(rig, rig.row(path), lines=2, truncations=1, unreadBytes=0)


def test_truncation_while_stopped_and_regrowth_past_the_watermark_is_noticed(
    rig: Rig,
) -> None:
    half = line(2)[:30]
    path = rig.path("x.json", lines([0, 1]) + half)
    rig.reconcile(path)
    old = rig.row(path)
    rig.restart()
    truncate(path)
    append(path, lines(range(10, 15)))
    assert path.stat().st_size > old.watermark

    rig.reconcile(path)
    rig.assert_once([0, 1, *range(10, 15)])
    assert_status(rig, old, phase="Rotated")
    assert_status(
        rig, rig.row(path), offset=path.stat().st_size, lines=5, truncations=1,
        unreadBytes=len(half),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("count", "size"),
    [(2, None), (3, FINGERPRINT_BYTES), (8, None)],
    ids=["short", "1 KiB", "long"],
)
def test_a_file_that_loses_its_last_newline_and_gets_it_back_is_read_once(
    rig: Rig, count: int, size: int | None
) -> None:
    """Only a real truncation reads again from 0, however short the file (issue 24)."""
    written = lines(range(count - 1))
    last = line(count - 1)
    if size is not None:  # its payload padded to make the file exactly `size` bytes
        last = line(count - 1, payload="x" * (size - len(written) - len(last)) + PAYLOAD)
    written += last
    assert size is None or len(written) == size
    path = rig.path("x.json", written)
    rig.reconcile(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 1)
    rig.reconcile(path)
    append(path, b"\n")
    rig.reconcile(path)
    append(path, line(count))
    rig.reconcile(path)

    rig.assert_once(range(count + 1))
    (row,) = rig.rows(path)
    assert_status(rig, row, lines=count + 1, truncations=0, offset=path.stat().st_size)


# -- 6. deletion ----------------------------------------------------------------------------


def test_deleted_file_is_drained_through_its_handle_then_marked_deleted(rig: Rig) -> None:
    path = rig.path("x.json", lines([0, 1]))
    rig.reconcile(path)
    row = rig.row(path)
    append(path, lines([2, 3]))
    size = path.stat().st_size
    path.unlink()

    assert rig.reconcile(path) == DONE
    rig.assert_once(range(4))
    assert_status(rig, row, phase="Deleted", offset=size, size=size, lines=4)
    assert len(rig.reconciler.handles) == 0


def test_only_the_newest_rows_of_deleted_files_are_kept_with_their_logfiles(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(keep_deleted=2)
    kept = rig.path("kept.json", line(9))
    rig.reconcile(kept)
    for n in range(5):
        path = rig.path(f"churn-{n}.json", line(n))
        rig.reconcile(path)
        path.unlink()
        rig.reconcile(path)
    rows = rig.journal.files()
    assert [row.phase for row in rows] == ["Active", *["Deleted"] * 5]

    assert rig.reconciler.prune_deleted(rows) == 3
    left = rig.journal.files()
    assert [row.path for row in left] == [
        str(kept),
        *(str(rig.dir / f"churn-{n}.json") for n in (3, 4)),
    ]
    assert sorted(o["metadata"]["name"] for o in rig.store.list("LogFile")) == sorted(
        logfile_name(row, NODE) for row in left
    )
    assert rig.reconciler.prune_deleted(left) == 0
    rig.assert_once([9, *range(5)])  # what they held stays read


@pytest.mark.parametrize("restarted", [False, True], ids=["with-handle", "after-restart"])
def test_recreated_file_on_a_reused_inode_is_told_apart_by_its_fingerprint(
    rig: Rig, restarted: bool
) -> None:
    path = rig.path("x.json", lines([0, 1]))
    rig.reconcile(path)
    old = rig.row(path)
    if restarted:
        rig.restart()
    else:
        append(path, line(2))
    path.unlink()
    if not restarted:
        rig.reconcile(path)  # drains line 2 and lets go of the inode
    rig.path("x.json", line(7) + lines([8, 9]))  # longer than the old watermark
    if path.stat().st_ino != old.inode:
        pytest.skip("this filesystem did not reuse the inode")

    rig.reconcile(path)
    rig.assert_once([0, 1, 7, 8, 9] if restarted else [0, 1, 2, 7, 8, 9])
    new = rig.row(path)
    assert new.id != old.id and new.fingerprint != old.fingerprint
    assert_status(rig, new, offset=path.stat().st_size, lines=3)
    assert rig.journal.file(old.id).phase in ("Deleted", "Rotated")


# -- 7. bad lines ---------------------------------------------------------------------------


def test_bad_lines_are_counted_with_the_last_offset_and_good_ones_read(rig: Rig) -> None:
    bad = [b'{"traceId": "x", ', b"[1, 2]", b"42", b"", b"\0\0\0\0", b'{"m": "\xff\xfe"}']
    good_crlf = line(1)[:-1] + b"\r\n"
    data = b"\xef\xbb\xbf" + line(0) + b"".join(b + b"\n" for b in bad) + good_crlf + line(2)
    path = rig.path("x.json", data)
    last_bad_offset = data.index(bad[-1])

    rig.reconcile(path)
    rig.assert_once([0, 1, 2])  # BOM and CRLF are tolerated, not bad
    assert_status(
        rig, rig.row(path), lines=9, badLines=6, lastBadOffset=last_bad_offset,
        offset=len(data), phase="Active",
    )  # fmt: skip


def test_over_long_line_is_skipped_even_when_written_in_pieces(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_line_bytes=2048)
    long_line = line(1, payload="x" * 5000)
    path = rig.path("x.json", line(0) + long_line[:3000])
    rig.reconcile(path)
    append(path, long_line[3000:] + line(2))
    rig.reconcile(path)

    rig.assert_once([0, 2])
    assert_status(rig, rig.row(path), lines=3, badLines=1, lastBadOffset=len(line(0)))


# -- 8. unreadable files --------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


@contextmanager
def without_read_override() -> Iterator[None]:
    """Make file modes bind this thread, even as root.

    Root reads a mode-000 file because of CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.
    Linux capabilities are per thread, so dropping them from this thread's
    effective set (and restoring them after) gives a real EACCES from open(),
    the same error a non-root controller gets, without faking any call.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip("cannot read this thread's capabilities")
    saved = data[0].effective
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE in this thread")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


def test_unreadable_file_says_so_and_other_files_go_on(rig: Rig) -> None:
    locked, other = rig.path("a.json", lines([0, 1])), rig.path("b.json", lines([5]))
    locked.chmod(0)
    with without_read_override():
        rig.reconcile(locked)
        rig.reconcile(other)
    rig.assert_once([5])
    (row,) = rig.rows(locked)
    status = rig.status(row)
    assert status["phase"] == "Unreadable" and "PermissionError" in status["lastError"]

    locked.chmod(0o644)
    rig.reconcile(locked)
    rig.assert_once([0, 1, 5])
    (row,) = rig.rows(locked)  # the same row goes on: no truncation, no second LogFile
    assert_status(rig, row, phase="Active", lines=2, truncations=0)
    assert "lastError" not in rig.status(row)


def test_file_that_turns_unreadable_goes_on_from_its_watermark_when_readable_again(
    rig: Rig,
) -> None:
    path = rig.path("a.json", lines([0, 1]))
    rig.reconcile(path)
    rig.restart()  # no cached handle: the reconciler must open the path
    append(path, line(2))
    path.chmod(0)
    with without_read_override():
        rig.reconcile(path)
    (row,) = rig.rows(path)
    assert_status(rig, row, phase="Unreadable", lines=2)

    path.chmod(0o644)
    rig.reconcile(path)
    rig.assert_once(range(3))
    (row,) = rig.rows(path)
    assert_status(rig, row, phase="Active", lines=3, truncations=0)


# -- 9. restarts and races ------------------------------------------------------------------


def test_restart_rereads_and_rewrites_nothing(rig: Rig) -> None:
    path = rig.path("x.json", lines(range(3)) + line(3)[:20])
    rig.reconcile(path)
    rig.restart()
    handed_on, (_, version) = len(rig.handed_on), rig.store.list_with_version("LogFile")

    rig.clock.now += 10
    rig.reconcile(path)
    assert len(rig.handed_on) == handed_on
    assert rig.store.list_with_version("LogFile")[1] == version
    append(path, line(3)[20:])
    rig.reconcile(path)
    rig.assert_once(range(4))
    assert_status(rig, rig.row(path), lines=4, offset=path.stat().st_size)


@pytest.mark.parametrize("known", [True, False], ids=["known-file", "new-file"])
def test_two_reconcilers_racing_on_one_growing_file_insert_nothing_twice(
    rig: Rig, known: bool
) -> None:
    """Two reconcilers (two workers, or two controllers on one state dir) on one file."""
    path = rig.path("x.json", line(0))
    if known:
        rig.reconcile(path)
    second = rig.new_reconciler()
    written = 1
    start = threading.Barrier(3)
    stop = threading.Event()

    def race(reconciler: LogFileReconciler) -> None:
        start.wait()
        while not stop.is_set():
            reconciler.reconcile([str(path)])

    threads = [threading.Thread(target=race, args=(r,)) for r in (rig.reconciler, second)]
    for t in threads:
        t.start()
    start.wait()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and written < 2000:
        append(path, line(written))
        written += 1
    stop.set()
    for t in threads:
        t.join()
    rig.reconcile(path)
    second.close()

    rig.assert_once(range(written))
    assert_status(rig, rig.row(path), lines=written, offset=path.stat().st_size)


def test_store_failing_mid_rotation_loses_and_duplicates_nothing_after_restart(
    rig: Rig,
) -> None:
    path = rig.path("x.json", line(0))
    rig.reconcile(path)
    append(path, line(1))
    path.rename(rig.dir / "x.json.1")
    rig.path("x.json", line(2))
    rig.store.close()  # the rotation's status write fails after the drain

    with pytest.raises(StoreUnavailable):
        rig.reconcile(path)
    rig.store = SQLiteStore(rig.store.path)
    rig.restart()
    rig.reconcile(path)
    rig.assert_once([0, 1, 2])
    assert_status(rig, rig.row(path), offset=path.stat().st_size, lines=1)


# -- 10. publishing -------------------------------------------------------------------------


def test_status_is_published_at_most_once_per_interval_and_the_final_state_after_it(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(publish_interval=1.0)
    path = rig.path("x.json", line(0))
    assert rig.reconcile(path) == DONE
    row = rig.row(path)
    name = logfile_name(row, NODE)
    published = rig.store.get("LogFile", name)["metadata"]["resourceVersion"]

    for n, wait in ((1, 0.7), (2, 0.4)):
        rig.clock.now += 0.3
        append(path, line(n))
        assert rig.reconcile(path).requeue_after == pytest.approx(wait)
        assert rig.journal.file(row.id).lines == n + 1  # the journal is never held back
        obj = rig.store.get("LogFile", name)
        assert (obj["metadata"]["resourceVersion"], obj["status"]["lines"]) == (published, 1)

    rig.clock.now += 0.4
    assert rig.reconcile(path) == DONE
    obj = rig.store.get("LogFile", name)
    assert obj["status"]["lines"] == 3 and obj["status"]["offset"] == path.stat().st_size
    published = obj["metadata"]["resourceVersion"]

    rig.clock.now += 0.1
    assert rig.reconcile(path) == DONE  # nothing changed: no write, no requeue
    assert rig.store.get("LogFile", name)["metadata"]["resourceVersion"] == published


def test_a_rescan_skips_only_files_read_to_their_end_and_unchanged_since(rig: Rig) -> None:
    """A rescan stats a file instead of looking at it (10,000 idle files took longer to look
    at than the 30 s between rescans, and a hot file waited behind them). Whatever a lost
    event would have said, an append, a touch, a replacement, a deletion, and an Idle
    phase coming due, brings the look back."""
    path = rig.path("a.json", lines([1, 2]))
    unchanged = rig.reconciler.unchanged_since_read
    assert not unchanged(str(path))  # never looked at
    assert rig.reconcile(path) == DONE
    assert unchanged(str(path))

    append(path, line(3))  # its event lost: only the rescan can find it
    assert not unchanged(str(path))
    assert rig.reconcile(path) == DONE
    rig.assert_once([1, 2, 3])
    assert unchanged(str(path))

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same size, touched
    assert not unchanged(str(path))
    assert rig.reconcile(path) == DONE
    assert unchanged(str(path))

    replacement = rig.path("a.json.new", path.read_bytes())
    os.replace(replacement, path)  # the same bytes under a new inode
    assert not unchanged(str(path))
    rig.reconcile(path)
    assert unchanged(str(path))

    rig.clock.advance(rig.settings.idle_after)  # its phase is due to turn Idle
    assert not unchanged(str(path))
    assert rig.reconcile(path) == DONE
    assert rig.row(path).phase == "Idle"
    assert unchanged(str(path))  # Idle: nothing left to come due

    path.unlink()
    assert not unchanged(str(path))
