"""Benchmark foylectl against the floor of its own work (issue 6).

All figures come from one run, on corpora generated here by gen_logs.py:

* floor_lines_per_s: a bare loop reading every file and parsing every line with
  orjson, the work no design can avoid;
* analyze_lines_per_s / catchup_lines_per_s: `foylectl analyze`, and `foylectl run`
  until /readyz says it caught up, each from an empty state dir, whole process;
* incremental_ratio: time for `run` to converge after appending one session with
  --large of history vs --small (cost must follow new bytes, not history);
* freshness_p50_ms / p99_ms: sessions appended at a steady rate while `run` runs,
  from writing a Generate trace's end line to its BlockLog being readable from
  this (another) process;
* peak_rss_mb at --size and --large (VmHWM of the run process) and their ratio.

One JSON object goes to stdout, a table with the targets to stderr. Waiting is
always polling a condition with a deadline; the only sleeps pace the appends.

    python hack/bench.py                         # full: 100MB, 10MB vs 1GB
    python hack/bench.py --quick                 # CI: tiny sizes, checks the harness
    python hack/bench.py --only freshness
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

from gen_logs import Appender, GenStats, Session, generate, parse_size  # noqa: E402

from controller.api.names import name_for_id  # noqa: E402
from controller.store.base import NotFound, StoreUnavailable  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402

MEASUREMENTS = ("floor", "analyze", "catchup", "incremental", "freshness", "rss")
# (key, target as text, check) from issue 6; the check gets the whole result.
TARGETS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "catchup_lines_per_s": (
        ">= 0.35 x floor",
        lambda r: r["catchup_lines_per_s"] >= 0.35 * r["floor_lines_per_s"],
    ),
    "incremental_ratio": ("<= 1.5", lambda r: r["incremental_ratio"] <= 1.5),
    "freshness_p50_ms": ("<= 50", lambda r: r["freshness_p50_ms"] <= 50),
    "freshness_p99_ms": ("<= 200", lambda r: r["freshness_p99_ms"] <= 200),
    "peak_rss_mb": ("<= 200", lambda r: r["peak_rss_mb"] <= 200),
    "peak_rss_large_mb": ("<= 200", lambda r: r["peak_rss_large_mb"] <= 200),
    "peak_rss_ratio": ("<= 1.25", lambda r: r["peak_rss_ratio"] <= 1.25),
}


@dataclass
class Config:
    size: int
    small: int
    large: int
    sessions: int  # appended for the freshness figure
    rate: float  # sessions per second while appending
    samples: int  # appended sessions per history size for the incremental figure
    timeout: float  # seconds any one wait may take
    only: set[str]
    workdir: Path


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.002
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return value


def foylectl(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "controller", *map(str, args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_corpus(cfg: Config, name: str, size: int, seed: int) -> tuple[Path, GenStats]:
    out = cfg.workdir / name
    start = time.perf_counter()
    stats = generate(out, size_bytes=size, seed=seed, foyle_files=3, runme_files=3, bad_lines=3)
    elapsed = time.perf_counter() - start
    print(
        f"corpus {name}: {stats.bytes / 1e6:.0f} MB, {stats.lines} lines in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return out, stats


def floor_lines_per_s(stats: GenStats) -> float:
    """Read and parse every line with orjson: the least work any design must do."""
    lines = 0
    start = time.perf_counter()
    for path in stats.files:
        with open(path, "rb") as f:
            for line in f:
                with suppress(orjson.JSONDecodeError):
                    orjson.loads(line)
                lines += 1
    return lines / (time.perf_counter() - start)


def analyze_lines_per_s(cfg: Config, logs: Path, stats: GenStats) -> float:
    state = cfg.workdir / "state-analyze"
    args = ("analyze", "--logs", logs, "--state-dir", state, "--no-learn", "--no-progress")
    start = time.perf_counter()
    subprocess.run(foylectl(*args), cwd=REPO, check=True, capture_output=True, timeout=cfg.timeout)
    return stats.lines / (time.perf_counter() - start)


class RunProcess:
    """`foylectl run --no-learn` on one log dir with its own empty state dir."""

    def __init__(self, cfg: Config, logs: Path, name: str) -> None:
        self.cfg = cfg
        self.state = cfg.workdir / f"state-{name}"
        self.port = free_port()
        self.stderr = open(cfg.workdir / f"run-{name}.log", "wb")  # noqa: SIM115
        args = ("run", "--logs", logs, "--state-dir", self.state, "--no-learn")
        addr = f"127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            foylectl(*args, "--metrics-addr", addr),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        self._store: SQLiteStore | None = None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"foylectl run exited {self.proc.returncode}; see {self.stderr.name}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self) -> float:
        """Seconds from start to /readyz 200 (caught up with the initial scan)."""
        wait_for(self._ready, self.cfg.timeout, "foylectl run to be ready", interval=0.01)
        return time.perf_counter() - self.started

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kb / 1024

    @property
    def store(self) -> SQLiteStore:
        """The run's store, opened read-only in spirit: this process only ever reads it."""
        if self._store is None:
            self._store = SQLiteStore(self.state / "store.db")
        return self._store

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@contextmanager
def running(cfg: Config, logs: Path, name: str) -> Iterator[RunProcess]:
    run = RunProcess(cfg, logs, name)
    try:
        yield run
    finally:
        run.stop()


def _get(store: SQLiteStore, kind: str, raw_id: str) -> dict[str, Any] | None:
    try:
        return store.get(kind, name_for_id(raw_id))
    except (NotFound, StoreUnavailable):
        return None


def has_suggestion(store: SQLiteStore, session: Session) -> bool:
    """The first suggested block's BlockLog shows this session's suggestion."""
    blocklog = _get(store, "BlockLog", session.block_ids[0])
    return (
        blocklog is not None
        and blocklog["spec"].get("genTraceId") == session.gen_trace_id
        and "generatedBlock" in blocklog.get("status", {})
    )


def converged(store: SQLiteStore, session: Session) -> bool:
    """Every block of the session joined its traces and has an up-to-date status."""
    executions: set[str] = set()
    for block_id in session.block_ids:
        blocklog = _get(store, "BlockLog", block_id)
        if blocklog is None or blocklog["spec"].get("genTraceId") != session.gen_trace_id:
            return False
        status, meta = blocklog.get("status", {}), blocklog["metadata"]
        if status.get("observedGeneration") != meta.get("generation"):
            return False
        executions.update(blocklog["spec"].get("execTraceIds", []))
    return set(session.trace_ids[1:]) <= executions


def incremental_s(cfg: Config, run: RunProcess, logs: Path, seed: int) -> float:
    """Median seconds from appending one session to the store having converged on it."""
    times = []
    with Appender(logs, seed=seed) as appender:
        for _ in range(cfg.samples):
            start = time.perf_counter()
            session = appender.append().session
            wait_for(lambda s=session: converged(run.store, s), cfg.timeout, "convergence")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def freshness_ms(cfg: Config, run: RunProcess, logs: Path) -> list[float]:
    """Latency of each appended session's suggestion, appended at a steady rate."""
    pending: dict[str, tuple[Session, float]] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        while not (done.is_set() and not pending):
            with lock:
                items = list(pending.items())
            for key, (session, written) in items:
                if has_suggestion(run.store, session):
                    latencies.append((time.time() - written) * 1000)
                    with lock:
                        del pending[key]
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    with Appender(logs, seed=99) as appender:
        next_at = time.monotonic()
        for _ in range(cfg.sessions):
            appended = appender.append()
            with lock:
                pending[appended.session.gen_trace_id] = (
                    appended.session,
                    appended.gen_end_written,
                )
            next_at += 1 / cfg.rate
            time.sleep(max(0.0, next_at - time.monotonic()))  # load pacing, not synchronisation
    done.set()
    poller.join(cfg.timeout)
    if poller.is_alive():
        raise TimeoutError(f"{len(pending)} appended sessions never showed their BlockLog")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
        "loadavg_at_start": os.getloadavg()[0],
    }


def measure(cfg: Config, result: dict[str, Any]) -> None:
    """Fill `result` figure by figure, so a failed run still shows what it measured."""
    wants = cfg.only.__contains__
    if wants("floor") or wants("analyze") or wants("catchup") or wants("rss"):
        logs, stats = make_corpus(cfg, "size", cfg.size, seed=1)
        result["corpus_lines"] = stats.lines
        if wants("floor") or wants("catchup"):
            result["floor_lines_per_s"] = floor_lines_per_s(stats)
        if wants("analyze"):
            result["analyze_lines_per_s"] = analyze_lines_per_s(cfg, logs, stats)
        if wants("catchup") or wants("rss"):
            with running(cfg, logs, "size") as run:
                result["catchup_lines_per_s"] = stats.lines / run.wait_ready()
                result["peak_rss_mb"] = run.peak_rss_mb()
    if wants("incremental") or wants("freshness"):
        logs, _ = make_corpus(cfg, "small", cfg.small, seed=2)
        with running(cfg, logs, "small") as run:
            run.wait_ready()
            if wants("incremental"):
                result["incremental_small_ms"] = incremental_s(cfg, run, logs, seed=3) * 1000
            if wants("freshness"):
                latencies = freshness_ms(cfg, run, logs)
                result["freshness_p50_ms"] = percentile(latencies, 0.50)
                result["freshness_p99_ms"] = percentile(latencies, 0.99)
    if wants("incremental") or wants("rss"):
        logs, _ = make_corpus(cfg, "large", cfg.large, seed=4)
        with running(cfg, logs, "large") as run:
            run.wait_ready()
            if wants("rss"):
                result["peak_rss_large_mb"] = run.peak_rss_mb()
            if wants("incremental"):
                result["incremental_large_ms"] = incremental_s(cfg, run, logs, seed=3) * 1000
    if "incremental_large_ms" in result:
        result["incremental_ratio"] = (
            result["incremental_large_ms"] / result["incremental_small_ms"]
        )
    if "peak_rss_large_mb" in result and "peak_rss_mb" in result:
        result["peak_rss_ratio"] = result["peak_rss_large_mb"] / result["peak_rss_mb"]


def table(result: dict[str, Any]) -> str:
    rows = [("measurement", "value", "target", "")]
    for key, value in result.items():
        if isinstance(value, dict | str | bool):
            continue
        target, check = TARGETS.get(key, ("", None))
        try:
            verdict = "" if check is None else ("ok" if check(result) else "MISSED")
        except KeyError:  # a partial run (--only): the figure it is compared with is absent
            verdict = "n/a"
        shown = f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"
        rows.append((key, shown, target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i != 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, help="corpus for floor/analyze/catch-up (100MB)")
    p.add_argument("--small", type=parse_size, help="small history for incremental (10MB)")
    p.add_argument("--large", type=parse_size, help="large history, 2nd RSS size (1GB)")
    p.add_argument("--sessions", type=int, help="sessions appended for freshness (200)")
    p.add_argument("--rate", type=float, default=20.0, help="sessions per second appended (20)")
    p.add_argument("--samples", type=int, default=5, help="sessions per incremental figure (5)")
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
    args = p.parse_args(argv)
    defaults = (
        {"size": "1MB", "small": "300KB", "large": "2MB", "sessions": 20}
        if args.quick
        else {"size": "100MB", "small": "10MB", "large": "1GB", "sessions": 200}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value if key == "sessions" else parse_size(value))
    if args.quick:
        args.samples, args.rate = min(args.samples, 2), max(args.rate, 50.0)
    workdir = Path(tempfile.mkdtemp(prefix="foyle-bench-", dir=args.workdir))
    cfg = Config(
        size=args.size,
        small=args.small,
        large=args.large,
        sessions=args.sessions,
        rate=args.rate,
        samples=args.samples,
        timeout=args.timeout,
        only=set(args.only or MEASUREMENTS),
        workdir=workdir,
    )
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    info = machine()
    result: dict[str, Any] = {}
    try:
        measure(cfg, result)
    except BaseException:
        print(f"measured so far: {json.dumps(result)}", file=sys.stderr)
        print(f"work dir kept for the run logs: {cfg.workdir}", file=sys.stderr)
        raise
    if not args.keep:
        shutil.rmtree(cfg.workdir, ignore_errors=True)
    sizes = {"size_bytes": cfg.size, "small_bytes": cfg.small, "large_bytes": cfg.large}
    result |= {"sizes": sizes, "machine": info, "quick": args.quick}
    print(json.dumps(result), flush=True)  # first: the figures must survive a table bug
    print(table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
