"""A full disk and a read-only state dir get the right one-line error (issue 13, items 11-12).

Both need a filesystem of their own: a small tmpfs (a full disk), remounted
read-only (root ignores file modes, not a read-only mount). Without the
privilege to mount, a non-root user gets a read-only dir from its mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl, get_json
from tests.store_contract import _trace

pytestmark = pytest.mark.timeout(120)
DAMAGE_ADVICE = ("move it aside", "Move it aside", "damaged")


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of a given size under tmp_path; all unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mountpoint = tmp_path / f"disk{len(mounted)}"
        mountpoint.mkdir()
        if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)):
            pytest.skip("no privilege to mount a tmpfs")
        mounted.append(mountpoint)
        return mountpoint

    yield mount
    for mountpoint in mounted:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("1m")


def analyze(
    logs: Path, state: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    return foylectl(
        "analyze", "--logs", logs, "--state-dir", state, "--no-progress", *extra, check=check
    )


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_full_disk_is_reported_as_such_and_nothing_is_lost(
    small_disk: Path, tmp_path: Path, testdata: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(testdata / "runme_traces_lines.jsonl", logs)
    state = small_disk / "state"
    training = tmp_path / "training"
    analyze(logs, state, "--training-dir", training)
    shutil.copy(testdata / "generate_trace_lines.jsonl", logs)
    fill(small_disk)

    full = analyze(logs, state, "--training-dir", training, check=False)

    assert full.returncode == 1, full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert "the disk is full" in last, last
    assert not any(advice in full.stderr for advice in DAMAGE_ADVICE)
    assert "Traceback" not in full.stderr
    assert len(get_json(state, "traces")) >= 1  # reading still works on a full disk

    (small_disk / "filler").unlink()
    analyze(logs, state, "--training-dir", training)
    kinds = {t["spec"]["kind"] for t in get_json(state, "traces")}
    assert kinds == {"RunMe", "Generate"}


@pytest.fixture
def read_only_state(tmpfs: Callable[[str], Path], testdata: Path, tmp_path: Path) -> Path:
    """A state dir with a store, journal and index in it, on a filesystem mounted read-only."""
    disk = tmpfs("16m")
    state = disk / "state"
    analyze(testdata, state, "--training-dir", tmp_path / "training")
    if not _mount("-o", "remount,ro", str(disk)):
        pytest.skip("cannot remount the tmpfs read-only")
    return state


def test_reading_commands_work_in_a_read_only_state_dir(read_only_state: Path) -> None:
    assert get_json(read_only_state, "blocklogs")
    [name] = foylectl("get", "tr", "-o", "name", "--state-dir", read_only_state).stdout.split()[:1]
    described = foylectl("describe", name, "--state-dir", read_only_state).stdout
    assert described.startswith("Name:")
    found = foylectl("examples", "search", "find the merge point", "--state-dir", read_only_state)
    assert "score=" in found.stdout


def test_writing_commands_in_a_read_only_state_dir_fail_with_one_line(
    read_only_state: Path, testdata: Path, tmp_path: Path
) -> None:
    for args in (
        ["analyze", "--logs", testdata, "--no-progress"],
        ["learn", "--training-dir", tmp_path / "t"],
    ):
        proc = foylectl(*args, "--state-dir", read_only_state, check=False)
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "not writable" in proc.stderr or "cannot be written" in proc.stderr
        assert not any(advice in proc.stderr for advice in DAMAGE_ADVICE)


def test_a_read_only_state_dir_with_changes_left_in_its_wal_says_they_are_not_shown(
    tmpfs: Callable[[str], Path], testdata: Path
) -> None:
    """Issue 24: read without a -shm file, SQLite ignores the -wal; that must be said."""
    disk = tmpfs("16m")
    state, copy = disk / "state", disk / "copy"
    analyze(testdata, state, "--no-learn")
    store = SQLiteStore(state / "store.db")
    try:
        store.create(_trace("late"))  # committed to store.db-wal, not yet checkpointed
        copy.mkdir()
        for name in ("store.db", "store.db-wal", "journal.db"):
            shutil.copy(state / name, copy / name)  # a copy without the -shm file
    finally:
        store.close()
    if not _mount("-o", "remount,ro", str(disk)):
        pytest.skip("cannot remount the tmpfs read-only")

    proc = foylectl("get", "traces", "-o", "name", "--state-dir", copy)

    assert f"changes in {copy / 'store.db-wal'} are not shown" in proc.stderr
