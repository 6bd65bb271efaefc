"""The scan of the log dirs: what it finds, and what it says it cannot look into."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller.logs.scanning import scan
from tests.test_logfile_reconciler import without_read_override


def test_an_unlistable_subdirectory_is_said_once_and_the_rest_is_scanned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    locked = logs / "locked"
    locked.mkdir(parents=True)
    (locked / "a.json").write_bytes(b"")
    (logs / "b.json").write_bytes(b"")
    locked.chmod(0)
    try:
        with without_read_override(), caplog.at_level(logging.WARNING):
            assert list(scan([logs])) == [str(logs / "b.json")]
            assert list(scan([logs])) == [str(logs / "b.json")]  # a rescan
    finally:
        locked.chmod(0o755)
    said = [r.getMessage() for r in caplog.records if str(locked) in r.getMessage()]
    assert len(said) == 1 and "Permission denied" in said[0], said
    assert list(scan([logs])) == [str(logs / "b.json"), str(locked / "a.json")]
