"""What every bench figure shares: the run's settings, foylectl's command line, waiting."""

from __future__ import annotations

import compileall
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    size: int  # corpus for floor, analyze, catch-up, store size, RSS
    small: int  # histories for the incremental figure
    large: int
    sessions: int  # appended for the freshness figure
    rate: float  # sessions per second while appending
    samples: int  # appended sessions per history size for the incremental figure
    blocklogs: int  # BlockLogs in the store `get blocklog` is timed on
    fanin: list[int]  # executions of one block, one analyze each
    fanout: int  # blocks of the one Generate trace
    learn: bool  # learning on for analyze and run (foylectl's default)
    timeout: float  # seconds any one wait may take
    only: set[str]
    workdir: Path
    peer: str | None = None  # another analyzer's command line (bench_peer)
    peer_runs: int = 3  # runs of each side for the peer figure


def learn_flags(cfg: Config, name: str, learn: bool | None = None) -> list[str]:
    """Flags that keep a measured foylectl inside the work dir (training files, no
    ~/.foyle/config.yaml), with --no-learn unless learning is measured."""
    learn = cfg.learn if learn is None else learn
    isolation = [
        "--training-dir",
        str(cfg.workdir / f"training-{name}"),
        "--foyle-config",
        str(cfg.workdir / "absent-foyle-config.yaml"),  # never created: Foyle's defaults
    ]
    return isolation if learn else [*isolation, "--no-learn"]


def flags_text(cfg: Config, learn: bool | None = None) -> str:
    """learn_flags as recorded in the JSON: <workdir> for the work dir, NAME for the figure."""
    return " ".join(learn_flags(cfg, "NAME", learn)).replace(str(cfg.workdir), "<workdir>")


def compile_package() -> None:
    """Write the package's bytecode as `pip install .` does, before anything is timed.

    `python -m controller` from a clone compiles every module it imports on each start
    when the bytecode is missing or cannot be written (PYTHONDONTWRITEBYTECODE): ~70 ms
    a process, which an installed foylectl never pays.
    """
    if not compileall.compile_dir(REPO / "controller", quiet=1):
        raise RuntimeError("compileall failed on controller/")


def children_cpu_s() -> float:
    """User + system seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def foylectl(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "controller", *map(str, args)]


def timed_foylectl(cfg: Config, *args: str | Path) -> float:
    """Seconds one whole `foylectl` process takes; a failure raises with its last stderr line."""
    return timed(foylectl(*args), cfg, REPO, f"foylectl {args[0]}")[0]


def timed(argv: list[str], cfg: Config, cwd: Path | None, what: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process run in `cwd`; a failure
    raises with `what` and its last stderr line. The bench runs one child at a time, so
    the children's rusage grows by this one's alone."""
    cpu_before = children_cpu_s()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=cfg.timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["(no stderr)"]
        raise RuntimeError(f"{what} exited {proc.returncode}: {lines[-1]}")
    return elapsed, children_cpu_s() - cpu_before


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
