"""Rotation torture: nothing lost or read twice however the files are rotated (issue 24).

Writers (this process) append lines, each its own trace, to several log files
while `foylectl run` reads them, and at random: rename a file to another
watched name or to a name nobody watches (logrotate's `create`) and go on
writing to the old descriptor for a while before reopening; copy and truncate
a file (copytruncate; after `run` read it, the copy kept for `analyze`); take
a file's last newline away and put it back. When the writers stop and `run`
has read every file, each line must have been folded in exactly once (the
journal's count per trace) and the Traces must equal what `foylectl analyze`
makes of the same bytes. The short version runs in CI; `-m slow` runs minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from controller.logs.transition import FINGERPRINT_BYTES, FileIdentity, starts_like
from controller.store.journal import TRACES, FileRow, Journal
from controller.store.packing import unpack
from tests.cli_helpers import (
    RunningController,
    comparable,
    foylectl,
    get_json,
    running,
    wait_for,
)
from tests.test_logfile_reconciler import append, line, lines, trace_id, truncate

ROTATE_WAIT = "3"  # run's --rotate-wait: longer than any reopen delay below


class App:
    """One application's log: an open descriptor it writes to, rotated under it."""

    def __init__(self, logs: Path, name: str, rng: random.Random) -> None:
        self.path, self.rng = logs / f"{name}.json", rng
        self.file: BinaryIO = self.path.open("ab", buffering=0)
        self.rotations = 0
        self.writes_before_reopen: int | None = None  # rotated: the old descriptor still used

    def write(self, data: bytes) -> None:
        if self.rng.random() < 0.2:  # half a line now, the rest at once after
            cut = self.rng.randrange(1, len(data) - 1)
            self.file.write(data[:cut])
            self.file.write(data[cut:])
        else:
            self.file.write(data)
        if self.writes_before_reopen is not None:
            self.writes_before_reopen -= 1
            if self.writes_before_reopen <= 0:
                self.reopen()

    def reopen(self) -> None:
        """Open the log's name again (a new file), leaving the rotated one for good."""
        if self.writes_before_reopen is not None:
            self.file.close()
            self.file = self.path.open("ab", buffering=0)
            self.writes_before_reopen = None

    def rotate(self, *, watched: bool) -> None:
        """Rename the file away; the application reopens its name only a few lines later."""
        self.rotations += 1
        stem = self.path.stem
        name = f"{stem}.{self.rotations}.json" if watched else f"{stem}.json.{self.rotations}"
        self.path.rename(self.path.with_name(name))
        self.writes_before_reopen = self.rng.randint(0, 8)

    def shrink_and_restore(self) -> None:
        """The last newline taken away and put back (an editor, a misbehaving writer)."""
        size = os.fstat(self.file.fileno()).st_size
        if size:  # however short: its fingerprint leaves out its last byte
            os.ftruncate(self.file.fileno(), size - 1)
            self.file.write(b"\n")


def read_once_counts(state: Path) -> Counter[str]:
    """How many lines of each trace the journal folded in."""
    with sqlite3.connect(state / "journal.db") as conn:
        rows = conn.execute("SELECT trace_key, acc FROM traces").fetchall()
    return Counter({key: orjson.loads(unpack(acc))["count"] for key, acc in rows})


def read_to_end(row: FileRow | None, path: Path) -> bool:
    """`row` has read the file at `path` as it is now, up to its last byte.

    Inode and size alone do not say so: a file truncated (copytruncate) and
    written again to the size it had when last read, before `run` looked, is
    the same inode at the old watermark with none of its lines read. Under load
    the torture then truncated it once more and lost those lines for good (7 of
    29,413): the row's first bytes must match the file's too.
    """
    if row is None:
        return False
    with path.open("rb") as f:
        st, head = os.fstat(f.fileno()), f.read(FINGERPRINT_BYTES)
    known = FileIdentity(row.device, row.inode, row.fingerprint, row.fingerprint_len)
    return (row.inode, row.watermark) == (st.st_ino, st.st_size) and starts_like(known, head)


def every_file_read(state: Path, logs: Path) -> bool:
    """Every file in `logs`, whatever its name, has a journal row read to its end."""
    if not (state / "journal.db").exists():
        return False
    journal = Journal(state / "journal.db")
    try:
        rows = {(row.device, row.inode): row for row in journal.files()}
        for path in logs.iterdir():
            st = path.stat()
            if not read_to_end(rows.get((st.st_dev, st.st_ino)), path):
                return False
        return not journal.dirty_keys(TRACES)
    finally:
        journal.close()


def journal_files(state: Path) -> list[FileRow]:
    journal = Journal(state / "journal.db")
    try:
        return journal.files()
    finally:
        journal.close()


def active_row(state: Path, path: Path) -> FileRow | None:
    """The journal's row reading `path` now, if any."""
    if not (state / "journal.db").exists():
        return None
    journal = Journal(state / "journal.db")
    try:
        return journal.active_file_at(str(path))
    finally:
        journal.close()


def file_seen(state: Path, path: Path) -> bool:
    row = active_row(state, path)
    return row is not None and row.inode == path.stat().st_ino


def file_read(state: Path, path: Path) -> bool:
    return read_to_end(active_row(state, path), path)


def torture(tmp_path: Path, *, seconds: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    logs, state, archive = tmp_path / "logs", tmp_path / "state", tmp_path / "archive"
    logs.mkdir()
    archive.mkdir()
    apps = [App(logs, f"app{n}", rng) for n in range(3)]
    run = RunningController(logs, state, "--rotate-wait", ROTATE_WAIT)
    written = Counter[str]()
    done = {"rotations": 0, "copytruncates": 0, "shrinks": 0}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            app = rng.choice(apps)
            action = rng.random()
            if action < 0.05:  # about to wait for run: no writer may be quiet for --rotate-wait
                for other in apps:
                    other.reopen()
            if action < 0.04 and app.writes_before_reopen is None:
                # A file renamed before any look at its watched name was never a log to
                # read: rotate only a file run has seen (logrotate runs hourly, not at once).
                wait_for(lambda a=app: file_seen(state, a.path), 60, "the file to be seen")
                app.rotate(watched=rng.random() < 0.5)
                done["rotations"] += 1
            elif action < 0.05 and app.writes_before_reopen is None and app.path.exists():
                # copytruncate loses what was not read before the truncation (unreadBytes):
                # truncate only once run has read the file, keeping the copy for analyze.
                wait_for(lambda a=app: file_read(state, a.path), 60, "the file to be read")
                shutil.copy(app.path, archive / f"copy-{done['copytruncates']}.json")
                os.truncate(app.path, 0)
                done["copytruncates"] += 1
            elif action < 0.06:
                app.shrink_and_restore()
                done["shrinks"] += 1
            else:
                key = trace_id(sum(written.values()))
                app.write(line(sum(written.values())))
                written[key] += 1
            time.sleep(rng.uniform(0, 0.004))  # the writers' pace (load), no synchronisation
        for app in apps:
            app.file.close()
        wait_for(lambda: every_file_read(state, logs), 120, "run to read every file", 0.1)
    except BaseException:
        run.kill()
        raise
    assert run.terminate() == 0, run.output()

    counts = read_once_counts(state)
    figures = {
        "lines_written": sum(written.values()),
        "lost": sum(1 for key in written if counts[key] == 0),
        "duplicated": sum(1 for key in written if counts[key] > 1),
        "unread_bytes_reported": sum(row.unread_bytes for row in journal_files(state)),
        **done,
    }
    print("rotation torture:", orjson.dumps(figures).decode())
    assert (figures["lost"], figures["duplicated"]) == (0, 0), figures
    assert counts.keys() == written.keys()

    expected = tmp_path / "expected-logs"
    expected.mkdir()
    for path in [*logs.iterdir(), *archive.iterdir()]:  # every byte under a watched name
        shutil.copy(path, expected / f"{path.parent.name}-{path.name}.json")
    expected_state = tmp_path / "expected-state"
    foylectl("analyze", "--logs", expected, "--state-dir", expected_state, "--no-learn")
    got, want = (
        comparable(get_json(state, "traces")),
        comparable(get_json(expected_state, "traces")),
    )
    assert got.keys() == want.keys()
    assert all(got[name]["spec"] == want[name]["spec"] for name in want)
    return figures


def stop_once_read(run: RunningController, state: Path, logs: Path, what: str) -> Counter[str]:
    """Wait until `run` read every file in `logs`, stop it: how often it folded in each trace."""
    wait_for(lambda: every_file_read(state, logs), 60, what)
    assert run.terminate() == 0, run.output()
    return read_once_counts(state)


def test_a_file_truncated_and_rewritten_to_the_size_read_is_not_taken_for_read(
    tmp_path: Path,
) -> None:
    """The torture's waits: a copytruncate `run` has not looked at yet, rewritten to the
    very size `run` had read, is not read (the torture truncated such a file again and
    lost its lines, and the final wait stopped `run` before it read them)."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    path = logs / "app0.json"
    append(path, lines(range(10, 17)))
    with running(logs, state) as run:
        wait_for(lambda: file_read(state, path), 60, "the file to be read")
        run.proc.send_signal(signal.SIGSTOP)  # `run` late under load, made certain
        size = path.stat().st_size
        truncate(path)
        append(path, lines(range(20, 27)))
        assert path.stat().st_size == size  # the same inode, at the watermark read
        assert not file_read(state, path)
        assert not every_file_read(state, logs)
        run.proc.send_signal(signal.SIGCONT)
        counts = stop_once_read(run, state, logs, "run to read the new lines")
    assert counts.keys() == {trace_id(n) for n in [*range(10, 17), *range(20, 27)]}


def test_a_drain_cut_short_by_sigkill_goes_on_after_a_restart(tmp_path: Path) -> None:
    """A rotated file's drain lives in memory: what its writer appends after a SIGKILL,
    to a name nobody watches, is read by the next `run`."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    path = logs / "app.json"
    with path.open("ab", buffering=0) as writer:
        writer.write(lines(range(3)))
        with running(logs, state, "--rotate-wait", "60") as run:
            wait_for(lambda: file_read(state, path), 60, "the file to be read")
            path.rename(logs / "app.json.1")  # logrotate's create mode
            writer.write(lines(range(3, 6)))
            wait_for(lambda: every_file_read(state, logs), 60, "the rotated file to be drained")
            run.kill()  # while draining
        writer.write(lines(range(6, 9)))
    with running(logs, state, "--rotate-wait", "0.5") as run:
        counts = stop_once_read(run, state, logs, "the drain to go on")
    assert counts == Counter({trace_id(n): 1 for n in range(9)})


def test_a_rotated_file_written_after_it_was_let_go_is_read_at_the_next_rescan(
    tmp_path: Path,
) -> None:
    """A writer quiet for longer than --rotate-wait (starved, stopped) appends to its
    rotated file after `run` let it go: the next rescan reads it, and the unfinished
    line reported unread at the let-go is no longer counted once it is read."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    path = logs / "app.json"
    half = len(line(3)) // 2
    with running(logs, state, "--rotate-wait", "0.2", "--rescan-interval", "1") as run:
        with path.open("ab", buffering=0) as writer:
            writer.write(lines(range(3)))
            wait_for(lambda: file_read(state, path), 60, "the file to be read")
            path.rename(logs / "app.json.1")  # logrotate's create mode
            writer.write(line(3)[:half])
            wait_for(lambda: "stopped following" in run.output(), 60, "the file to be let go")
            (row,) = journal_files(state)
            assert (row.phase, row.unread_bytes) == ("Rotated", half)
            writer.write(line(3)[half:] + lines(range(4, 6)))
        counts = stop_once_read(run, state, logs, "the late lines to be read")
    assert counts == Counter({trace_id(n): 1 for n in range(6)})
    (row,) = journal_files(state)
    assert (row.phase, row.unread_bytes, row.lines) == ("Rotated", 0, 6)


def test_a_file_rotated_before_run_looked_at_it_is_read(tmp_path: Path) -> None:
    """Created, written and renamed to a name nobody watches (logrotate's `create`)
    before `run` looked at its log name: read once as a rotated file, late lines too."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    with running(logs, state, "--rotate-wait", "1") as run:
        run.wait_started()
        run.proc.send_signal(signal.SIGSTOP)  # `run` busy elsewhere, made certain
        path = logs / "app.json"
        with path.open("ab", buffering=0) as writer:
            writer.write(lines(range(3)))
            path.rename(logs / "app.json.1")
            writer.write(lines(range(3, 5)))
            run.proc.send_signal(signal.SIGCONT)
            wait_for(lambda: every_file_read(state, logs), 60, "the rotated file to be read")
            writer.write(lines(range(5, 7)))  # its writer not quiet yet
        counts = stop_once_read(run, state, logs, "the late lines to be read")
    assert counts == Counter({trace_id(n): 1 for n in range(7)})
    (row,) = journal_files(state)
    assert (row.path, row.phase, row.lines) == (str(logs / "app.json.1"), "Rotated", 7)


def test_rotation_torture_short(tmp_path: Path) -> None:
    figures = torture(tmp_path, seconds=8, seed=24)
    assert figures["rotations"] >= 5 and figures["copytruncates"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_rotation_torture_for_minutes(tmp_path: Path, seed: int) -> None:
    figures = torture(tmp_path, seconds=120, seed=seed)
    assert figures["rotations"] >= 100
