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
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from controller.store.journal import TRACES, FileRow, Journal
from controller.store.packing import unpack
from tests.cli_helpers import RunningController, comparable, foylectl, get_json, wait_for
from tests.test_logfile_reconciler import line, trace_id

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
        if size > 1024:  # a file under 1 KiB cannot be told from one rewritten (fingerprint)
            os.ftruncate(self.file.fileno(), size - 1)
            self.file.write(b"\n")


def read_once_counts(state: Path) -> Counter[str]:
    """How many lines of each trace the journal folded in."""
    with sqlite3.connect(state / "journal.db") as conn:
        rows = conn.execute("SELECT trace_key, acc FROM traces").fetchall()
    return Counter({key: orjson.loads(unpack(acc))["count"] for key, acc in rows})


def every_file_read(state: Path, logs: Path) -> bool:
    """Every file in `logs`, whatever its name, has a journal row read to its end."""
    if not (state / "journal.db").exists():
        return False
    journal = Journal(state / "journal.db")
    try:
        rows = {(row.device, row.inode): row for row in journal.files()}
        for path in logs.iterdir():
            st = path.stat()
            row = rows.get((st.st_dev, st.st_ino))
            if row is None or row.watermark != st.st_size:
                return False
        return not journal.dirty_keys(TRACES)
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
    row, st = active_row(state, path), path.stat()
    return row is not None and (row.inode, row.watermark) == (st.st_ino, st.st_size)


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


def test_rotation_torture_short(tmp_path: Path) -> None:
    figures = torture(tmp_path, seconds=8, seed=24)
    assert figures["rotations"] >= 5 and figures["copytruncates"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_rotation_torture_for_minutes(tmp_path: Path, seed: int) -> None:
    figures = torture(tmp_path, seconds=120, seed=seed)
    assert figures["rotations"] >= 100
