"""What `foylectl` tells its user is true (issue 13, item 23)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import wait_for

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent


def test_start_up_names_foyle_and_runme_for_the_default_dirs_it_creates(
    tmp_path: Path, temporary_home: Path
) -> None:
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "run",
                "--no-learn",
                "--state-dir",
                tmp_path / "s",
            ],
            stdout=out,
            stderr=out,
        )
        try:
            wait_for(lambda: "started" in log.read_text(), 30, "start-up")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    text = log.read_text()
    assert f"created {temporary_home / '.foyle/logs/raw'} (where Foyle writes its logs)" in text
    assert f"created {temporary_home / '.config/runme/logs'} (where RunMe writes its logs)" in text


def test_ctrl_c_during_analyze_ends_the_progress_line_and_exits_at_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    subprocess.run(
        [sys.executable, REPO / "hack" / "gen_logs.py", "--size", str(40 << 20), logs],
        check=True,
        capture_output=True,
    )
    controller, terminal = pty.openpty()  # the bar is drawn on a terminal only
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "analyze",
            "--logs",
            logs,
            "--state-dir",
            tmp_path / "s",
        ],
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while b"[#" not in shown:  # the bar has moved: analyze is mid-way
        chunk = os.read(controller, 4096)
        assert chunk, "analyze ended before drawing its progress bar"
        shown += chunk
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    elapsed = time.monotonic() - interrupted
    shown += _rest(controller)

    assert elapsed < 1.0, f"took {elapsed:.2f}s to stop"
    bar, _, after = shown.rpartition(b"\x1b[K")  # the end of the last redraw
    assert after.startswith(b"\r\n") or after.startswith(b"\n"), after
    assert b"interrupted" in after


def _rest(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the terminal's other end is closed
            return data
        if not chunk:
            return data
        data += chunk
