"""Directories, permissions and temp files the controller leaves behind (issue 13, items 13-14)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from controller.index.training import STALE_TEMP_SECONDS, TrainingWriter
from tests.cli_helpers import foylectl


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_dir_the_controller_creates_is_private_whatever_the_umask(
    tmp_path: Path, testdata: Path
) -> None:
    state = tmp_path / "new" / "state"
    training = tmp_path / "deep" / "training"
    subprocess.run(
        [sys.executable, "-m", "controller", "analyze", "--logs", testdata, "--state-dir", state]
        + ["--training-dir", training, "--no-progress"],
        check=True,
        capture_output=True,
        preexec_fn=lambda: os.umask(0),
    )

    assert list(training.glob("*.example.binpb")), "nothing learned, nothing checked"
    for directory in (state, state.parent, training, training.parent):
        assert mode(directory) == 0o700, directory
    for db in state.glob("*.db"):
        assert mode(db) == 0o600, db
    assert mode(training / ".foylectl") == 0o700  # the ledger of the files written (issue 20)
    for private in (training / ".foylectl" / "ledger.db", state / "training-owner"):
        assert mode(private) == 0o600, private


def test_a_world_writable_state_dir_is_warned_about(tmp_path: Path, testdata: Path) -> None:
    state = tmp_path / "state"
    foylectl("analyze", "--logs", testdata, "--state-dir", state, "--no-learn", "--no-progress")
    state.chmod(0o777)

    proc = foylectl("get", "tr", "--state-dir", state)

    assert proc.stderr.startswith(f"foylectl: warning: the state dir {state} is writable by every")
    state.chmod(0o700)
    assert foylectl("get", "tr", "--state-dir", state).stderr == ""


def test_temp_files_left_by_a_kill_are_removed_when_a_writer_starts(tmp_path: Path) -> None:
    training = tmp_path / "training"
    training.mkdir()
    stale = training / ".ex-1.example.binpb.k2j3h4.tmp"
    fresh = training / ".ex-2.example.binpb.a8s7d6.tmp"
    unrelated = training / "notes.tmp"
    for path in (stale, fresh, unrelated):
        path.write_bytes(b"partial")
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    os.utime(unrelated, (long_ago, long_ago))

    TrainingWriter([training])

    assert not stale.exists()
    assert fresh.exists(), "another process may be writing it right now"
    assert unrelated.exists()
