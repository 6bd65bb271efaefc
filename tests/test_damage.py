"""Damaged or disagreeing state files are detected and said (issue 24, item 4).

The journal (what was read) and the store (what it became) are two SQLite
files in the state dir. Damage in pages no start-up query touches used to go
unnoticed (`run` ready, `analyze` exit 0), and a store that lost its last
commits (its -wal deleted, a backup restored) lacked Traces that nothing
brought back. Real files, real `foylectl` processes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from controller.store.base import StoreUnavailable
from controller.store.journal import Journal
from tests.cli_helpers import comparable, foylectl, get_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from gen_logs import generate  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def analyze(logs: Path, state: Path) -> tuple[int, str]:
    proc = foylectl(
        "analyze", "--logs", logs, "--state-dir", state, "--no-learn", "--no-progress", check=False
    )
    return proc.returncode, proc.stderr


def damage(path: Path) -> None:
    """Garbage over four pages in the middle of the file (a bad disk, a torn copy)."""
    offset = (path.stat().st_size * 6 // 10) // 4096 * 4096
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(4 * 4096))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("corpus") / "logs"
    generate(logs, size_bytes=2 << 20, seed=24, foyle_files=2, runme_files=2, bad_lines=0)
    return logs


@pytest.mark.parametrize("damaged", ["journal.db", "store.db"])
def test_a_damaged_state_file_is_named_with_the_fix_and_analyze_fails(
    tmp_path: Path, corpus: Path, damaged: str
) -> None:
    state = tmp_path / "state"
    assert analyze(corpus, state)[0] == 0
    damage(state / damaged)

    code, err = analyze(corpus, state)
    assert code == 1
    [message] = err.strip().splitlines()  # one line, no traceback
    assert str(state / damaged) in message
    assert f"mv {state / damaged} {state / damaged}.damaged" in message


def test_a_store_that_lost_its_last_commits_gets_them_back_from_the_journal(
    tmp_path: Path, corpus: Path
) -> None:
    """A store restored from before the last analyze: the journal has read more."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    files = sorted(corpus.rglob("*.json*"))
    for path in files[:2]:
        shutil.copy(path, logs / path.name)
    assert analyze(logs, state)[0] == 0
    backup = tmp_path / "store-backup.db"
    shutil.copy(state / "store.db", backup)  # the process ended: its WAL is checkpointed
    for path in files[2:]:
        shutil.copy(path, logs / path.name)
    assert analyze(logs, state)[0] == 0
    for leftover in ("store.db-wal", "store.db-shm"):
        (state / leftover).unlink(missing_ok=True)
    shutil.copy(backup, state / "store.db")

    code, err = analyze(logs, state)
    assert code == 0, err
    assert "lacks" in err and str(state / "store.db") in err  # said, not silent
    expected = tmp_path / "expected"
    assert analyze(logs, expected)[0] == 0
    for kind in ("traces", "blocklogs", "sessions"):
        got, want = comparable(get_json(state, kind)), comparable(get_json(expected, kind))
        assert got.keys() == want.keys(), kind


def test_a_journal_damaged_after_it_was_opened_names_itself_and_the_fix_on_reads(
    tmp_path: Path, corpus: Path
) -> None:
    """Mid-run damage: every read failed with a bare "database disk image is malformed"."""
    state = tmp_path / "state"
    assert analyze(corpus, state)[0] == 0
    path = state / "journal.db"
    with path.open("r+b") as f:  # every page but the first (the schema) overwritten
        f.seek(4096)
        f.write(b"\xff" * (path.stat().st_size - 4096))
    journal = Journal(path)
    try:
        with pytest.raises(StoreUnavailable, match=f"mv {path} {path}.damaged"):
            journal.counts()
    finally:
        journal.close()
