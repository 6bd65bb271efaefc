"""How long a fixed suggestion takes to become a searchable Example (issue 4).

`foylectl run` (learning in-process, the default) follows a generated corpus.
N sessions, each with a suggestion the user edited before running it, are
appended at a steady pace. Per fix, the clock runs from writing the end line
of the block's last execution to `ExampleIndex.search` in this (another)
process returning its Example. Prints {"n", "p50_ms", "p95_ms", "p99_ms",
"max_ms"} as JSON (target p50 <= 100 ms). Waiting is polling with a deadline;
the only sleep paces the appends.

    python hack/learn_latency.py --fixes 50 --rate 5

The helpers (`append_fix`, `append_execution`, `searchable`, `Foylectl`) are
shared with tests/test_learn_cli.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

from bench_common import wait_for  # noqa: E402
from bench_live import percentile  # noqa: E402
from gen_logs import (  # noqa: E402
    END_RUNME,
    EXECUTE_FN,
    GENERATE_FN,
    RUNME,
    Appender,
    _SessionBuilder,
    build_session,
    generate,
    parse_size,
)

from controller.api.names import name_for_id  # noqa: E402
from controller.index.retrieval import ExampleIndex  # noqa: E402
from controller.learn.query import query_text  # noqa: E402

FOYLE_EXECUTE_END = "Executed instructions"


@dataclass(frozen=True)
class Fix:
    """One appended fix: the Example it must yield and when its execution ended."""

    block_id: str
    name: str  # the Example's (and its BlockLog's) metadata.name
    query: str  # the Example's query text, as the index stores it
    end_written: float  # time.perf_counter() right after the execution's end line


def append_fix(appender: Appender) -> Fix:
    """Append one session (not in eval mode) in which a suggestion was edited before it ran."""
    while True:  # most sessions execute something; skip the few that do not
        session = build_session(appender.rng, appender.t, eval_mode=False, edit_rate=1.0)
        appender.t = session.end_time + appender.rng.uniform(1, 10)
        if session.edited_block_ids:
            break
    entries = [orjson.loads(line) for _, line in session.lines]
    block_id = session.edited_block_ids[0]
    end = _end_of_last_execution(entries, block_id)
    runme_fd = appender.rng.choice(appender.runme_fds)
    end_written = 0.0
    for i, (role, line) in enumerate(session.lines):
        os.write(runme_fd if role == RUNME else appender.foyle_fd, line)
        if i == end:
            end_written = time.perf_counter()
    doc = next(e["request"]["doc"] for e in entries if e.get("function") == GENERATE_FN)
    return Fix(block_id, name_for_id(block_id), query_text(doc), end_written)


def _end_of_last_execution(entries: list[dict[str, Any]], block_id: str) -> int:
    """Index of the line that ends the block's last execution (RunMe or Foyle's executor)."""
    foyle_traces: set[str] = set()
    end = -1
    for i, entry in enumerate(entries):
        if entry.get("function") == EXECUTE_FN and entry.get("blockId") == block_id:
            foyle_traces.add(entry["traceId"])
        runme_end = entry.get("msg") == END_RUNME and entry.get("knownID") == block_id
        foyle_end = (
            entry.get("message") == FOYLE_EXECUTE_END and entry.get("traceId") in foyle_traces
        )
        if runme_end or foyle_end:
            end = i
    if end < 0:
        raise ValueError(f"no execution of {block_id} in the session")
    return end


def append_execution(appender: Appender, block_id: str, contents: str) -> float:
    """Append one RunMe execution of `block_id` running `contents`; perf_counter() after its end."""
    builder = _SessionBuilder(appender.rng, appender.t, False, 0.0)
    builder.runme_execute({"id": block_id}, contents)
    appender.t = builder.s.end_time + 1
    end_written = 0.0
    for _, line in builder.s.lines:
        os.write(appender.runme_fds[0], line)
        if END_RUNME.encode() in line:
            end_written = time.perf_counter()
    return end_written


def searchable(index: ExampleIndex, fix: Fix) -> bool:
    """A search for the fix's query returns its Example (all ties included)."""
    hits = index.search(fix.query, k=max(3, len(index)))
    return any(name == fix.name for name, _, _ in hits)


class Foylectl:
    """A long-running `foylectl` command as a subprocess; stdout and stderr go to `log_path`."""

    def __init__(self, *args: str | Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", *map(str, args)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"foylectl exited {self.proc.returncode}:\n{self.output()}")
            return text in self.output()

        wait_for(seen, timeout, repr(text), interval=0.01)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit code (SIGKILL if it does not exit in time)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


RUN_READY = "caught up with the initial scan; ready"


def measure(workdir: Path, size: int, fixes: int, rate: float, timeout: float) -> list[float]:
    """Milliseconds from each appended fix's end line to its Example being searchable."""
    logs, state = workdir / "logs", workdir / "state"
    generate(logs, size_bytes=size, seed=11)
    run = Foylectl(
        "run", "--logs", logs, "--state-dir", state, "--training-dir", workdir / "training",
        log_path=workdir / "run.log",
    )  # fmt: skip
    latencies = []
    try:
        run.wait_output(RUN_READY, timeout)
        index = ExampleIndex(state / "examples-index.db")
        with Appender(logs, seed=12) as appender:
            next_at = time.monotonic()
            for _ in range(fixes):
                fix = append_fix(appender)
                wait_for(lambda f=fix: searchable(index, f), timeout, f"{fix.name}", 0.001)
                latencies.append((time.perf_counter() - fix.end_written) * 1000)
                next_at += 1 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))  # load pacing only
        index.close()
    finally:
        run.stop()
    return latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixes", type=int, default=50, help="fixes appended (default 50)")
    p.add_argument("--rate", type=float, default=5.0, help="fixes appended per second (5)")
    p.add_argument("--size", type=parse_size, default=parse_size("300KB"), help="history (300KB)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds any one wait may take")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="foyle-learn-latency-") as workdir:
        latencies = measure(Path(workdir), args.size, args.fixes, args.rate, args.timeout)
    result = {"n": len(latencies)}
    for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        result[key] = round(percentile(latencies, q), 1)
    result["max_ms"] = round(max(latencies), 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
