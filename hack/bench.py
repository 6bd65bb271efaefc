"""Benchmark foylectl against the floor of its own work (issues 6, 10 and 13).

All figures come from one run, on corpora generated here by gen_logs.py, with
learning on (foylectl's default; --no-learn measures without) and training files
kept in the work dir:

* floor_lines_per_s: a bare loop reading every file and parsing every line with
  orjson, the work no design can avoid;
* analyze_lines_per_s / catchup_lines_per_s: `foylectl analyze`, and `foylectl run`
  until /readyz says it caught up, each from an empty state dir, whole process,
  and their ratios to the floor; analyze_cpu_s: that analyze's user + system seconds;
* store_bytes_per_log_byte: store.db + journal.db (+ WAL) after the catch-up,
  over the corpus bytes;
* incremental_ratio: time for `run` to converge after appending one session with
  --large of history vs --small (cost must follow new bytes, not history);
* freshness_p50_ms / p99_ms: sessions appended at --rate while `run` runs, from
  writing a Generate trace's end line to its BlockLog being readable from this
  (another) process;
* peak_rss_mb at --size and --large (VmHWM of the run process) and their ratio;
* history_<small|large>_lines_per_cpu_s: `foylectl analyze` of the --small and the
  --large corpus from an empty state dir, lines per CPU second (user + system; the
  median of 3 runs for a side under 10 CPU seconds), and history_cpu_ratio, large
  over small (flat with history: >= 0.8);
* get_blocklog_ms / list_blocklogs_first_row_ms: `foylectl get blocklog NAME` and
  the first row of `foylectl get blocklogs` on a store of --blocklogs BlockLogs;
* fanin_s_per_1000: `analyze` seconds per 1,000 executions of one block, at each
  --fanin count, and fanout_<N>_blocks_s: one Generate trace with --fanout blocks;
* vs_peer_<tmpfs|disk> (with --peer): foylectl analyze's lines/s over another
  analyzer's (Foyle's, issue 23) on the --size corpus, state on tmpfs and on the
  work dir's disk, runs interleaved, the median of --peer-runs each
  (peer_/ours_<place>_lines_per_s and _cpu_s; hack/bench_peer.py).

One JSON object goes to stdout, a table with the targets to stderr. A figure that
fails is reported under "errors" (exit status 1) and the others are still measured.
Waiting is always polling a condition with a deadline; the only sleeps pace the appends.

    python hack/bench.py                         # full: 100MB, 10MB vs 1GB, 100k BlockLogs
    python hack/bench.py --quick                 # CI: tiny sizes, checks the harness
    python hack/bench.py --only fanin --fanin 1000,10000
    python hack/bench.py --only peer --size 10MB --peer '/path/foyle-harness {logs} {state}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    REPO,
    Config,
    children_cpu_s,
    compile_package,
    flags_text,
    learn_flags,
)
from bench_live import (  # noqa: E402
    freshness_ms,
    incremental_s,
    percentile,
    running,
    state_file_bytes,
    store_bytes,
)
from bench_peer import measure_peer  # noqa: E402
from bench_shapes import (  # noqa: E402
    SHORT_RUN_S,
    analyze_s,
    floor_lines_per_s,
    make_corpus,
    measure_blocklogs,
    measure_fanin,
    measure_fanout,
)
from gen_logs import parse_size  # noqa: E402

MEASUREMENTS = (
    "floor", "analyze", "catchup", "store", "incremental", "freshness", "rss",
    "history", "blocklog", "fanin", "fanout", "peer",
)  # fmt: skip
NOT_FIGURES = {"sizes", "machine", "git", "flags", "errors", "quick"}
# key -> (target as text, check); the check gets the whole result (issues 10 and 13).
TARGETS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "analyze_floor_ratio": (">= 0.35", lambda r: r["analyze_floor_ratio"] >= 0.35),
    "catchup_floor_ratio": (">= 0.35", lambda r: r["catchup_floor_ratio"] >= 0.35),
    "store_bytes_per_log_byte": ("<= 1.0", lambda r: r["store_bytes_per_log_byte"] <= 1.0),
    "incremental_ratio": ("<= 1.25", lambda r: r["incremental_ratio"] <= 1.25),
    "freshness_p50_ms": ("<= 10", lambda r: r["freshness_p50_ms"] <= 10),
    "freshness_p99_ms": ("<= 50", lambda r: r["freshness_p99_ms"] <= 50),
    "peak_rss_mb": ("<= 200", lambda r: r["peak_rss_mb"] <= 200),
    "peak_rss_large_mb": ("<= 200", lambda r: r["peak_rss_large_mb"] <= 200),
    "peak_rss_ratio": ("<= 1.25", lambda r: r["peak_rss_ratio"] <= 1.25),
    "history_cpu_ratio": (">= 0.8", lambda r: r["history_cpu_ratio"] >= 0.8),
    "get_blocklog_ms": ("<= 300 at 100k", lambda r: r["get_blocklog_ms"] <= 300),
    "fanin_ratio": ("~1, linear (<= 1.25)", lambda r: r["fanin_ratio"] <= 1.25),
    "vs_peer_tmpfs": (">= 2 (Foyle)", lambda r: r["vs_peer_tmpfs"] >= 2),
    "vs_peer_disk": (">= 3 (Foyle)", lambda r: r["vs_peer_disk"] >= 3),
}


def attempt(result: dict[str, Any], figure: str, measure: Callable[[], None]) -> None:
    """Run one group of figures; a failure is recorded as one line and the run goes on."""
    try:
        measure()
    except Exception as e:  # any failure of a measured program is a finding, not a crash
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        result.setdefault("errors", {})[figure] = message
        print(f"{figure}: FAILED: {message}", file=sys.stderr)


def main_corpus(cfg: Config, result: dict[str, Any]) -> None:
    """Floor, analyze, catch-up, store size and RSS on the --size corpus."""
    wants = cfg.only.__contains__
    logs, stats = make_corpus(cfg, "size", cfg.size, seed=1)
    result["corpus_lines"], result["corpus_bytes"] = stats.lines, stats.bytes
    if wants("floor") or wants("analyze") or wants("catchup"):
        result["floor_lines_per_s"] = floor_lines_per_s(stats)
    if wants("analyze"):

        def analyze() -> None:
            flags = learn_flags(cfg, "analyze")
            result["flags"]["analyze"] = flags_text(cfg)
            cpu_before = children_cpu_s()
            result["analyze_lines_per_s"] = stats.lines / analyze_s(cfg, logs, "analyze", flags)
            # CPU seconds (user + system): on a shared machine, what the work itself costs
            result["analyze_cpu_s"] = children_cpu_s() - cpu_before
            result["analyze_floor_ratio"] = (
                result["analyze_lines_per_s"] / result["floor_lines_per_s"]
            )

        attempt(result, "analyze", analyze)
    if wants("catchup") or wants("store") or wants("rss"):

        def catchup() -> None:
            flags = learn_flags(cfg, "size")
            result["flags"]["run"] = flags_text(cfg)
            with running(cfg, logs, "size", flags) as run:
                result["catchup_lines_per_s"] = stats.lines / run.wait_ready()
                result["peak_rss_mb"] = run.peak_rss_mb()
                caught_up = state_file_bytes(run.state)
            stopped = state_file_bytes(run.state)  # after SIGTERM: as `run` leaves them
            result["state_file_bytes"] = caught_up
            result["store_bytes_per_log_byte"] = store_bytes(caught_up) / stats.bytes
            result["state_file_bytes_stopped"] = stopped
            result["store_bytes_per_log_byte_stopped"] = store_bytes(stopped) / stats.bytes
            if "floor_lines_per_s" in result:
                result["catchup_floor_ratio"] = (
                    result["catchup_lines_per_s"] / result["floor_lines_per_s"]
                )

        attempt(result, "catchup", catchup)


def live_history(cfg: Config, result: dict[str, Any], name: str, size: int, seed: int) -> None:
    """Incremental convergence (and freshness or RSS) with `size` of history already read."""
    wants = cfg.only.__contains__
    logs, _ = make_corpus(cfg, name, size, seed=seed)
    flags = learn_flags(cfg, name)
    result["flags"]["run"] = flags_text(cfg)
    with running(cfg, logs, name, flags) as run:
        run.wait_ready()
        if wants("rss") and name == "large":
            result["peak_rss_large_mb"] = run.peak_rss_mb()
        if wants("incremental"):
            result[f"incremental_{name}_ms"] = incremental_s(cfg, run, logs, seed=3) * 1000
        if wants("freshness") and name == "small":
            latencies = freshness_ms(cfg, run, logs)
            result["freshness_p50_ms"] = percentile(latencies, 0.50)
            result["freshness_p99_ms"] = percentile(latencies, 0.99)


def history_cpu(cfg: Config, result: dict[str, Any]) -> None:
    """Lines per CPU second of `analyze` with --small and with --large of history (issue
    23): the work per line must not grow with what was read before it. CPU seconds, not
    wall: on a shared machine they are what the work costs."""
    result["flags"]["history"] = flags_text(cfg)
    for name, size, seed in (("small", cfg.small, 2), ("large", cfg.large, 4)):
        logs, stats = make_corpus(cfg, f"history-{name}", size, seed=seed)
        cpu_s = [analyze_cpu_s(cfg, logs, f"history-{name}")]
        if cpu_s[0] < SHORT_RUN_S:  # a 2 s run varies by 10-25 % here: the median of 3
            cpu_s += [analyze_cpu_s(cfg, logs, f"history-{name}-{i}") for i in (2, 3)]
        result[f"history_{name}_lines_per_cpu_s"] = stats.lines / statistics.median(cpu_s)
        shutil.rmtree(logs)  # a --large corpus is the largest thing in the work dir
    result["history_cpu_ratio"] = (
        result["history_large_lines_per_cpu_s"] / result["history_small_lines_per_cpu_s"]
    )


def analyze_cpu_s(cfg: Config, logs: Path, name: str) -> float:
    """CPU seconds (user + system) of one `analyze_s` into a new state dir."""
    cpu_before = children_cpu_s()
    analyze_s(cfg, logs, name, learn_flags(cfg, name))
    return children_cpu_s() - cpu_before


def measure(cfg: Config, result: dict[str, Any]) -> None:
    """Fill `result` figure by figure, so a failed run still shows what it measured."""
    wants = cfg.only.__contains__
    if {"floor", "analyze", "catchup", "store", "rss"} & cfg.only:
        attempt(result, "corpus", lambda: main_corpus(cfg, result))
    if wants("incremental") or wants("freshness"):
        attempt(result, "small", lambda: live_history(cfg, result, "small", cfg.small, seed=2))
    if wants("incremental") or wants("rss"):
        attempt(result, "large", lambda: live_history(cfg, result, "large", cfg.large, seed=4))
    if "incremental_large_ms" in result and "incremental_small_ms" in result:
        result["incremental_ratio"] = (
            result["incremental_large_ms"] / result["incremental_small_ms"]
        )
    if "peak_rss_large_mb" in result and "peak_rss_mb" in result:
        result["peak_rss_ratio"] = result["peak_rss_large_mb"] / result["peak_rss_mb"]
    if wants("history"):
        attempt(result, "history", lambda: history_cpu(cfg, result))
    if wants("blocklog"):
        attempt(result, "blocklog", lambda: measure_blocklogs(cfg, result))
    if wants("fanin"):
        attempt(result, "fanin", lambda: measure_fanin(cfg, result))
    if wants("fanout"):
        attempt(result, "fanout", lambda: measure_fanout(cfg, result))
    if wants("peer") and cfg.peer is not None:
        attempt(result, "peer", lambda: measure_peer(cfg, result))


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),  # 1, 5 and 15 minutes
    }


def git_commit() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD") or "unknown"
        return {"commit": commit, "dirty": bool(git("status", "--porcelain", "-uno"))}
    except (OSError, subprocess.SubprocessError):  # no git here: the figures still count
        return {"commit": "unknown", "dirty": None}


def figure_rows(result: dict[str, Any]) -> list[tuple[str, float]]:
    """Numbers to show: top-level ones, and each entry of a dict of numbers."""
    rows: list[tuple[str, float]] = []
    for key, value in result.items():
        if key in NOT_FIGURES or isinstance(value, str | bool):
            continue
        if isinstance(value, dict):
            rows.extend((f"{key}[{sub}]", v) for sub, v in value.items())
        else:
            rows.append((key, value))
    return rows


def table(result: dict[str, Any]) -> str:
    rows = [("measurement", "value", "target", "")]
    for key, value in figure_rows(result):
        target, check = TARGETS.get(key, ("", None))
        verdict = "" if check is None else ("ok" if check(result) else "MISSED")
        shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        rows.append((key, shown, target, verdict))
    for figure, message in result.get("errors", {}).items():
        rows.append((figure, "FAILED", message, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i != 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def counts(text: str) -> list[int]:
    """'1000,10000,100000' -> [1000, 10000, 100000] (each > 0)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"bad counts {text!r}: use e.g. 1000,10000,100000")
    return sorted(set(values))


def positive(text: str) -> int:
    value = counts(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"bad count {text!r}: one number > 0")
    return value[0]


FULL = {"size": "100MB", "small": "10MB", "large": "1GB"}
FULL_COUNTS = {"sessions": 1000, "blocklogs": 100_000, "fanin": [1000, 10_000, 100_000], "fanout": 10_000}  # fmt: skip
QUICK = {"size": "1MB", "small": "300KB", "large": "2MB"}
QUICK_COUNTS = {"sessions": 20, "blocklogs": 300, "fanin": [100, 300], "fanout": 200}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, help="corpus for floor/analyze/catch-up (100MB)")
    p.add_argument("--small", type=parse_size, help="small history for incremental (10MB)")
    p.add_argument("--large", type=parse_size, help="large history, 2nd RSS size (1GB)")
    p.add_argument("--sessions", type=positive, help="sessions appended for freshness (1000)")
    p.add_argument("--rate", type=float, default=200.0, help="sessions per second appended (200)")
    p.add_argument(
        "--samples", type=positive, default=5, help="sessions per incremental figure (5)"
    )
    p.add_argument(
        "--blocklogs", type=positive, help="BlockLogs in the get-blocklog store (100000)"
    )
    p.add_argument("--fanin", type=counts, help="executions of one block (1000,10000,100000)")
    p.add_argument("--fanout", type=positive, help="blocks of one suggestion (10000)")
    p.add_argument("--no-learn", action="store_true", help="measure with learning off")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds any one wait may take")
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks the harness, not targets"
    )
    p.add_argument(
        "--only", choices=MEASUREMENTS, action="append", help="run only these (repeatable)"
    )
    p.add_argument(
        "--workdir", type=Path, help="where corpora and state dirs go (default: a temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument(
        "--peer",
        metavar="COMMAND",
        help="another analyzer to run side by side on the --size corpus (e.g. Foyle's, built"
        " elsewhere): a command line with {logs} and {state} in it, which exits 0 once caught"
        " up (see hack/bench_peer.py); without it the peer figure is skipped",
    )
    p.add_argument("--peer-runs", type=positive, default=3, help="runs of each side (3)")
    args = p.parse_args(argv)
    if args.peer is not None and not {"{logs}", "{state}"} <= set(re.findall(r"{\w+}", args.peer)):
        p.error("--peer: the command needs {logs} and {state}")
    if args.peer is None and args.only and "peer" in args.only:
        p.error("--only peer needs --peer COMMAND")
    sizes, numbers = (QUICK, QUICK_COUNTS) if args.quick else (FULL, FULL_COUNTS)
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, parse_size(value))
    for key, value in numbers.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.samples = min(args.samples, 2)
    workdir = Path(tempfile.mkdtemp(prefix="foyle-bench-", dir=args.workdir))
    cfg = Config(
        size=args.size,
        small=args.small,
        large=args.large,
        sessions=args.sessions,
        rate=args.rate,
        samples=args.samples,
        blocklogs=args.blocklogs,
        fanin=args.fanin,
        fanout=args.fanout,
        learn=not args.no_learn,
        timeout=args.timeout,
        only=set(args.only or MEASUREMENTS),
        workdir=workdir,
        peer=args.peer,
        peer_runs=args.peer_runs,
    )
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    result: dict[str, Any] = {"machine": machine(), "git": git_commit(), "flags": {}}
    compile_package()
    try:
        measure(cfg, result)
    except KeyboardInterrupt:
        result.setdefault("errors", {})["interrupted"] = "KeyboardInterrupt"
    settings = {"size_bytes": cfg.size, "small_bytes": cfg.small, "large_bytes": cfg.large,
                "sessions": cfg.sessions, "rate": cfg.rate, "blocklogs": cfg.blocklogs,
                "fanin": cfg.fanin, "fanout": cfg.fanout, "learn": cfg.learn}  # fmt: skip
    result |= {"sizes": settings, "quick": args.quick}
    print(json.dumps(result), flush=True)  # first: the figures must survive a table bug
    print(table(result), file=sys.stderr)
    if "errors" in result or args.keep:
        print(f"work dir kept (run logs, state dirs): {cfg.workdir}", file=sys.stderr)
    else:
        shutil.rmtree(cfg.workdir, ignore_errors=True)
    return 1 if "errors" in result else 0


if __name__ == "__main__":
    sys.exit(main())
