"""The test suite writes only into temporary dirs (issue 13, item 16)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from controller.settings import default_state_dir, default_training_dirs
from tests.cli_helpers import foylectl


def test_defaults_point_into_a_temporary_home(temporary_home: Path) -> None:
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert Path.home() == temporary_home != real_home
    assert default_training_dirs() == [temporary_home / ".foyle" / "training"]
    assert default_state_dir().is_relative_to(temporary_home)


def test_analyze_without_training_dir_writes_into_the_temporary_home(
    tmp_path: Path, testdata: Path, temporary_home: Path
) -> None:
    foylectl("analyze", "--logs", testdata, "--state-dir", tmp_path / "state", "--no-progress")
    written = list((temporary_home / ".foyle" / "training").glob("*.example.binpb"))
    assert written, "analyze learned no example from the sample logs"
