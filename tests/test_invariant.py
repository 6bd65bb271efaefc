"""The invariant: whatever the interleaving and the crashes, `run` converges to `analyze`.

A writer (this test process) appends the shared samples and generated
sessions line by line across several files, sometimes half a line at a time;
`foylectl run` runs as a subprocess and is SIGKILLed at random moments and
restarted; along the way a file is rotated (renamed to another watched name
and re-created) and one is truncated (after its bytes were read; they are
kept in an unwatched archive so `analyze` sees the same bytes). When the
writer stops and the controller has caught up, the Traces and BlockLogs in
the store must equal what `foylectl analyze` makes of the same bytes in a
fresh state dir.

The short version runs in CI; `-m slow` runs hundreds of kills.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from pathlib import Path

import pytest

from controller.store.journal import BLOCKLOGS, TRACES, Journal
from tests.cli_helpers import RunningController, comparable, foylectl, get_json, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from gen_logs import FOYLE, RUNME, build_session  # noqa: E402


class Writer:
    """Appends lines to the log files, sometimes in two pieces, and can rotate and truncate."""

    def __init__(self, logs: Path, archive: Path, rng: random.Random) -> None:
        self.logs, self.archive, self.rng = logs, archive, rng
        self.files = {
            FOYLE: logs / "foyle" / "foyle.logs.2024-06-01T10:00:00.json",
            RUNME: logs / "runme" / "logs.2024-06-01T10:00:01.json",
            "shared": logs / "shared" / "samples.jsonl",
        }
        for path in self.files.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        self.rotations = 0

    def append(self, role: str, line: bytes) -> None:
        with open(self.files[role], "ab") as f:
            if self.rng.random() < 0.2 and len(line) > 2:
                cut = self.rng.randrange(1, len(line) - 1)
                f.write(line[:cut])
                f.flush()
                f.write(line[cut:])
            else:
                f.write(line)

    def rotate(self, role: str) -> None:
        """Rename+create to another watched name: the bytes stay visible to `analyze`."""
        path = self.files[role]
        self.rotations += 1
        path.rename(path.with_name(f"{path.stem}.{self.rotations}{path.suffix}"))
        path.touch()

    def truncate(self, role: str) -> None:
        """Truncate in place, keeping the old bytes in the (unwatched) archive for `analyze`."""
        path = self.files[role]
        shutil.copy(path, self.archive / f"truncated-{self.rotations}-{path.name}")
        self.rotations += 1
        with open(path, "r+b") as f:
            f.truncate(0)


def sample_lines(testdata: Path) -> list[bytes]:
    lines = []
    for path in sorted(testdata.iterdir()):
        for line in path.read_bytes().splitlines():
            lines.append(line + b"\n")
    return lines


def caught_up(state: Path, logs: Path) -> bool:
    journal_file = state / "journal.db"
    if not journal_file.exists():
        return False
    journal = Journal(journal_file)
    try:
        files = {row.path: row for row in journal.files(active_only=True)}
        for path in logs.rglob("*.json*"):
            row = files.get(str(path))
            if row is None or row.watermark != path.stat().st_size:
                return False
        return not journal.dirty_keys(TRACES) and not journal.dirty_keys(BLOCKLOGS)
    finally:
        journal.close()


def file_caught_up(state: Path, path: Path) -> bool:
    journal = Journal(state / "journal.db")
    try:
        row = journal.active_file_at(str(path))
        return row is not None and row.watermark == path.stat().st_size
    finally:
        journal.close()


def run_invariant(
    tmp_path: Path, testdata: Path, *, sessions: int, min_kills: int, seed: int
) -> int:
    rng = random.Random(seed)
    logs, state, archive = tmp_path / "logs", tmp_path / "state", tmp_path / "archive"
    logs.mkdir()
    archive.mkdir()
    writer = Writer(logs, archive, rng)
    samples = sample_lines(testdata)
    plan: list[tuple[str, bytes]] = [("shared", line) for line in samples]
    t = 1_717_236_000.0
    for _ in range(sessions):
        session = build_session(rng, t)
        plan.extend(session.lines)
        t = session.end_time + rng.uniform(1, 30)
    # Interleave the files at random, keeping each file's own order.
    by_role: dict[str, list[bytes]] = {}
    for role, line in plan:
        by_role.setdefault(role, []).append(line)
    order = [role for role, _ in plan]
    rng.shuffle(order)
    cursors = {role: 0 for role in by_role}

    run = RunningController(logs, state)
    kills = 0
    next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
    rotate_at = {len(order) // 3: FOYLE, (2 * len(order)) // 3: RUNME}
    truncate_at = len(order) // 2
    try:
        for step, role in enumerate(order):
            line = by_role[role][cursors[role]]
            cursors[role] += 1
            writer.append(role, line)
            time.sleep(0.004)  # the writer's pace (load generation), so kills land mid-read
            if step in rotate_at:
                writer.rotate(rotate_at[step])
            if step == truncate_at:
                # Truncate only bytes the controller has read: losing unread bytes to a
                # truncation is reported (unreadBytes), not converged, and has its own test.
                if run.proc.poll() is not None:
                    run = RunningController(logs, state)
                wait_for(
                    lambda: file_caught_up(state, writer.files[RUNME]),
                    60,
                    "the file before truncation",
                )
                writer.truncate(RUNME)
            if time.monotonic() >= next_kill or (step == len(order) - 1 and kills < min_kills):
                run.kill()
                kills += 1
                run = RunningController(logs, state)
                next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
        while kills < min_kills:
            wait_for(lambda: (state / "store.db").exists(), 30, "the store")
            time.sleep(rng.uniform(0.05, 0.4))  # a random kill point, not synchronisation
            run.kill()
            kills += 1
            run = RunningController(logs, state)
        wait_for(lambda: caught_up(state, logs), 120, "the controller to catch up", interval=0.1)
    except BaseException:
        run.kill()
        raise
    assert run.terminate() == 0, run.output()

    expected_logs = tmp_path / "expected-logs"
    shutil.copytree(logs, expected_logs / "logs")
    shutil.copytree(archive, expected_logs / "archive")
    expected_state = tmp_path / "expected-state"
    foylectl("analyze", "--logs", expected_logs, "--state-dir", expected_state, "--no-learn")
    for kind in ("traces", "blocklogs"):
        got, want = comparable(get_json(state, kind)), comparable(get_json(expected_state, kind))
        assert got.keys() == want.keys(), (
            f"{kind}: missing {want.keys() - got.keys()}, extra {got.keys() - want.keys()}"
        )
        for name in want:
            assert got[name] == want[name], f"{kind}/{name} differs"
    assert len(comparable(get_json(state, "blocklogs"))) > sessions
    return kills


def test_run_converges_to_analyze_across_kills_rotation_and_truncation(
    tmp_path: Path, testdata: Path
) -> None:
    kills = run_invariant(tmp_path, testdata, sessions=25, min_kills=10, seed=7)
    assert kills >= 10


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_run_converges_to_analyze_across_hundreds_of_kills(
    tmp_path: Path, testdata: Path, seed: int
) -> None:
    kills = run_invariant(tmp_path, testdata, sessions=400, min_kills=100, seed=seed)
    assert kills >= 100
