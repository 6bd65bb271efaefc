"""hack/gen_logs.py: deterministic corpora that look like Foyle's and RunMe's own logs."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from controller.api.kinds import BLOCKLOG
from controller.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

FOYLE_KEYS = {"severity", "time", "caller", "function", "message"}
RUNME_KEYS = {"level", "ts", "caller", "function", "msg"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def _parsed_lines(root: Path) -> tuple[list[dict], int]:
    """Every line of the corpus parsed, and how many did not parse."""
    good, bad = [], 0
    for data in _files(root).values():
        for line in data.splitlines():
            try:
                good.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                bad += 1
    return good, bad


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, gen_logs.GenStats]:
    out = tmp_path_factory.mktemp("corpus")
    return out, gen_logs.generate(out, size_bytes=400_000, seed=7, bad_lines=5)


def test_same_seed_gives_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        gen_logs.generate(tmp_path / name, size_bytes=100_000, seed=seed, bad_lines=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_requested_size_is_met_within_one_session(corpus) -> None:
    out, stats = corpus
    on_disk = sum(len(data) for data in _files(out).values())
    assert on_disk == stats.bytes
    assert 400_000 <= stats.bytes < 400_000 + 64_000


def test_every_line_parses_except_the_requested_bad_ones(corpus) -> None:
    out, stats = corpus
    good, bad = _parsed_lines(out)
    assert bad == stats.bad_lines == 5
    assert len(good) + bad == stats.lines


def test_lines_carry_the_keys_of_the_real_writers(corpus) -> None:
    good, _ = _parsed_lines(corpus[0])
    for obj in good:
        assert obj.keys() >= FOYLE_KEYS or obj.keys() >= RUNME_KEYS, obj
    messages = {obj.get("message") or obj.get("msg") for obj in good}
    assert {
        "Agent.Generate",
        "OpenAI:CreateChatCompletion",
        "Agent.Generate returning blocks",
        "Agent.Generate returning response",
        "Executor.Execute",
        "Executed instructions",
        "received initial request",
        "command finished",
        "sending the final response with exit code",
        "LogEvent",
    } <= messages
    event_types = {obj["eventType"] for obj in good if obj.get("message") == "LogEvent"}
    assert event_types == {"ACCEPTED", "REJECTED", "EXECUTE"}
    assert any(obj.get("evalMode") is True for obj in good)
    assert any("traceId" not in obj and "_id" not in obj and "eventId" not in obj for obj in good)


def test_files_are_laid_out_as_servers_write_them(tmp_path: Path) -> None:
    stats = gen_logs.generate(tmp_path, size_bytes=150_000, seed=1, foyle_files=3, runme_files=2)
    names = sorted(str(p.relative_to(tmp_path)) for p in stats.files)
    assert [n.split(".logs.")[0] for n in names].count("foyle/foyle") == 3
    assert sum(n.startswith("runme/logs.") for n in names) == 2
    for path in stats.files:  # each server writes its lines in time order
        times = [
            (o.get("time") or o.get("ts"))
            for o in map(orjson.loads, path.read_bytes().splitlines())
        ]
        assert times == sorted(times), path


def _analyze(logs: Path, state: Path) -> list[dict]:
    """`foylectl analyze` of `logs`; the BlockLogs it stored."""
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "analyze", "--logs", str(logs),
         "--state-dir", str(state), "--no-learn", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return SQLiteStore(state / "store.db").list(BLOCKLOG.kind)


def test_analyze_finds_generated_executed_and_learnable_blocks(corpus, tmp_path: Path) -> None:
    out, stats = corpus
    blocklogs = [b["status"] for b in _analyze(out, tmp_path)]
    joined = [s for s in blocklogs if "generatedBlock" in s and "executedBlock" in s]
    edited = [
        s
        for s in joined
        if not s.get("evalMode")
        and s["generatedBlock"]["contents"].strip() != s["executedBlock"]["contents"].strip()
    ]
    assert len(blocklogs) >= stats.generated_blocks
    assert len(joined) >= stats.executed_blocks // 2
    assert len(edited) == stats.edited_blocks > 0


def test_appender_writes_one_whole_session_and_reports_its_ids(corpus, tmp_path: Path) -> None:
    out = tmp_path / "live"
    gen_logs.generate(out, size_bytes=20_000, seed=2)
    before = _files(out)
    with gen_logs.Appender(out, seed=5) as appender:
        appended = appender.append()
    after = _files(out)
    added = b"".join(after[name][len(before[name]) :] for name in before)
    assert all(after[name].startswith(before[name]) for name in before)
    assert added.count(b"\n") == len(appended.session.lines)
    assert appended.session.gen_trace_id.encode() in added
    assert all(block_id.encode() in added for block_id in appended.session.block_ids)
    assert 0 < appended.gen_end_written <= appended.end_written


def test_session_lines_are_one_session_from_the_rng() -> None:
    first = gen_logs.session_lines(random.Random(1), 1_700_000_000.0)
    again = gen_logs.session_lines(random.Random(1), 1_700_000_000.0)
    assert first == again
    assert {role for role, _ in first} <= {gen_logs.FOYLE, gen_logs.RUNME}
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for _, line in first)


def test_fan_in_is_one_block_of_one_generate_trace_executed_n_times(tmp_path: Path) -> None:
    out = tmp_path / "fanin"
    gen = [sys.executable, "hack/gen_logs.py", str(out), "--fan-in", "150", "--seed", "3"]
    subprocess.run(gen, cwd=Path(gen_logs.__file__).parent.parent, check=True, timeout=60)
    blocklogs = _analyze(out, tmp_path / "state")
    gen_traces = {b["spec"].get("genTraceId") for b in blocklogs}
    executed = [b for b in blocklogs if b["status"].get("executions")]
    assert len(gen_traces) == 1 and None not in gen_traces
    assert [b["status"]["executions"] for b in executed] == [150]
    assert "executedBlock" in executed[0]["status"] and "generatedBlock" in executed[0]["status"]


def test_fan_out_is_one_generate_trace_with_n_blocks(tmp_path: Path) -> None:
    lines = list(gen_logs.fan_out_lines(random.Random(4), 1_700_000_000.0, 300))
    stats = gen_logs.write_lines(tmp_path / "fanout", lines, 1_700_000_000.0)
    blocklogs = _analyze(tmp_path / "fanout", tmp_path / "state")
    assert len(blocklogs) == 300
    assert len({b["spec"]["genTraceId"] for b in blocklogs}) == 1
    assert stats.lines == sum(len(p.read_bytes().splitlines()) for p in stats.files)
