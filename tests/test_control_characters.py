"""Names from the file system and from users cannot forge output (issue 24, item 10).

A log file's name is data: it reaches `run`'s log lines, error messages and
tables. A newline in it must not start a forged log line, an escape sequence
must be shown, not obeyed, and bidirectional controls (U+202E) must not
reorder what a table shows. Real files, real `foylectl` processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli_helpers import foylectl
from tests.test_hostile_input import GOOD_ID, execute_lines

pytestmark = pytest.mark.timeout(120)

FORGED = "12:00:00 ERROR   controller: forged"


def analyze(logs: Path, state: Path) -> str:
    proc = foylectl("analyze", "--logs", logs, "--state-dir", state, "--no-learn", "--no-progress")
    return proc.stderr


def test_a_file_name_cannot_forge_a_log_line_nor_send_escapes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / f"evil\n{FORGED} \x1b]0;owned\x07.jsonl")  # reported, never read

    err = analyze(logs, tmp_path / "state")

    assert "not reading" in err
    assert "\x1b" not in err and "\x07" not in err
    assert not any(line.startswith(FORGED) for line in err.splitlines())
    assert f"evil\\n{FORGED} \\x1b]0;owned\\x07.jsonl" in err


def test_not_found_shows_the_typed_name_escaped(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    analyze(logs, tmp_path / "state")

    proc = foylectl("get", "trace", "\x1b[2Jgone", "--state-dir", tmp_path / "state", check=False)

    assert proc.returncode == 1
    assert "\x1b" not in proc.stderr and '"\\x1b[2Jgone" not found' in proc.stderr


def test_bidi_controls_in_a_table_cell_are_shown_as_escapes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "invoice\u202ensonj.jsonl").write_bytes(execute_lines(GOOD_ID))
    analyze(logs, tmp_path / "state")

    out = foylectl("get", "logfiles", "--state-dir", tmp_path / "state").stdout

    assert "\u202e" not in out and "invoice\\u202ensonj.jsonl" in out
