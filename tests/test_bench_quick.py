"""hack/bench.py --quick: the benchmark harness runs end to end (CI checks the harness, not targets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEYS = (
    "floor_lines_per_s",
    "analyze_lines_per_s",
    "catchup_lines_per_s",
    "incremental_ratio",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "peak_rss_mb",
    "peak_rss_large_mb",
    "peak_rss_ratio",
)


def test_quick_benchmark_reports_every_figure_as_a_positive_number(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "hack/bench.py", "--quick", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in KEYS:
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["machine"]["nproc"] >= 1 and result["machine"]["python"]
    assert "floor_lines_per_s" in proc.stderr  # the readable table
    assert list(tmp_path.iterdir()) == []  # the work dir is cleaned up
