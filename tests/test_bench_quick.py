"""hack/bench.py --quick: the benchmark harness runs end to end (CI checks the harness, not targets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
POSITIVE = (
    "floor_lines_per_s",
    "analyze_lines_per_s",
    "analyze_floor_ratio",
    "catchup_lines_per_s",
    "catchup_floor_ratio",
    "store_bytes_per_log_byte",
    "store_bytes_per_log_byte_stopped",
    "incremental_ratio",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "peak_rss_mb",
    "peak_rss_large_mb",
    "peak_rss_ratio",
    "history_small_lines_per_cpu_s",
    "history_large_lines_per_cpu_s",
    "history_cpu_ratio",
    "get_blocklog_ms",
    "list_blocklogs_first_row_ms",
    "fanout_200_blocks_s",
)


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """bench.py with HOME in tmp_path, so a write outside the work dir would show."""
    env = os.environ | {"HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "hack/bench.py", "--workdir", str(tmp_path / "work"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_quick_benchmark_reports_every_figure_with_its_flags(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    proc = _bench(tmp_path, "--quick")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "errors" not in result
    for key in POSITIVE:
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["blocklogs_reached"] >= 300
    assert set(result["fanin_analyze_s"]) == {"0", "100", "300"}
    assert set(result["fanin_s_per_1000"]) == {"100", "300"} and "fanin_ratio" in result
    assert result["state_file_bytes"]["store.db"] > 0
    assert "--no-learn" not in result["flags"]["analyze"] + result["flags"]["run"]
    assert "--training-dir <workdir>/" in result["flags"]["analyze"]
    assert "--no-learn" in result["flags"]["blocklog_build"]
    assert len(result["git"]["commit"]) == 40
    assert result["machine"]["nproc"] >= 1 and len(result["machine"]["loadavg_at_start"]) == 3
    assert "floor_lines_per_s" in proc.stderr  # the readable table
    assert list((tmp_path / "work").iterdir()) == []  # the work dir is cleaned up
    assert not (tmp_path / "home").exists()  # nothing written to ~/.foyle


def test_a_figure_that_fails_is_reported_and_the_others_still_measured(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    args = ("--only", "floor", "--only", "analyze", "--size", "200KB", "--timeout", "0.001")
    proc = _bench(tmp_path, *args, "--no-learn")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "timed out" in result["errors"]["analyze"]
    assert result["floor_lines_per_s"] > 0 and "analyze_lines_per_s" not in result
    assert result["flags"]["analyze"].endswith("--no-learn")
    assert "Traceback" not in proc.stderr and "analyze: FAILED" in proc.stderr


def test_a_peer_runs_side_by_side_with_foylectl_on_tmpfs_and_disk(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    peer = (  # foylectl itself, learning off, stands in for Foyle's analyzer
        f"{sys.executable} -m controller analyze --logs {{logs}} --state-dir {{state}}"
        " --no-learn --foyle-config {state}/absent.yaml --no-progress"
    )
    args = ("--only", "peer", "--size", "200KB", "--peer-runs", "1", "--peer", peer, "--keep")
    proc = _bench(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["corpus_lines"] > 0 and result["corpus_bytes"] >= 200_000
    places = ["tmpfs", "disk"] if Path("/dev/shm").is_dir() else ["disk"]
    for place in places:
        for side in ("peer", "ours"):
            assert result[f"{side}_{place}_lines_per_s"] > 0
            assert result[f"{side}_{place}_cpu_s"] > 0
        assert result[f"vs_peer_{place}"] == pytest.approx(
            result[f"ours_{place}_lines_per_s"] / result[f"peer_{place}_lines_per_s"]
        )
    assert result["flags"]["peer"] == peer and "--no-learn" not in result["flags"]["vs_peer"]
    assert "vs_peer_disk" in proc.stderr  # in the table, against its target
    assert _state_dirs_left(tmp_path) == []


def test_a_peer_command_without_its_placeholders_is_one_line_of_error(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    for args in (("--peer", "foyle-harness {logs}"), ("--only", "peer")):
        proc = _bench(tmp_path, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "peer" in proc.stderr.strip().splitlines()[-1]


def test_a_failing_peer_is_one_error_line_and_leaves_no_state_behind(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    peer = f"{sys.executable} -c 'import sys; sys.exit(\"no such corpus\")' {{logs}} {{state}}"
    proc = _bench(tmp_path, "--only", "peer", "--size", "200KB", "--peer", peer)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["errors"]["peer"].endswith("exited 1: no such corpus")
    assert _state_dirs_left(tmp_path) == []


def _state_dirs_left(tmp_path: Path) -> list[Path]:
    """The peer figure's state dirs still in the (kept) work dir or on tmpfs."""
    (workdir,) = (tmp_path / "work").iterdir()
    shared = Path("/dev/shm").glob(f"{workdir.name}-*") if Path("/dev/shm").is_dir() else []
    return [*workdir.glob(f"{workdir.name}-*"), *shared]
