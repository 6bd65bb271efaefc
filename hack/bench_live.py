"""Figures of a live `foylectl run`: catch-up, store size, RSS, incremental convergence
and freshness, each read from this (another) process while run follows the logs."""

from __future__ import annotations

import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench_common import REPO, Config, foylectl, wait_for
from gen_logs import Appender, Session

from controller.api.names import name_for_id
from controller.store.base import NotFound, StoreUnavailable
from controller.store.sqlite import SQLiteStore

STORE_FILES = ("store.db", "journal.db")  # with their -wal and -shm files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunProcess:
    """`foylectl run` (with `flags`) on one log dir with its own empty state dir."""

    def __init__(self, cfg: Config, logs: Path, name: str, flags: list[str]) -> None:
        self.cfg = cfg
        self.state = cfg.workdir / f"state-{name}"
        self.port = free_port()
        self.stderr = open(cfg.workdir / f"run-{name}.log", "wb")  # noqa: SIM115
        args = ("run", "--logs", logs, "--state-dir", self.state, *flags)
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
def running(cfg: Config, logs: Path, name: str, flags: list[str]) -> Iterator[RunProcess]:
    run = RunProcess(cfg, logs, name, flags)
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


def state_file_bytes(state: Path) -> dict[str, int]:
    """Size of each file of a state dir now (a WAL may come and go meanwhile)."""
    sizes = {}
    for path in sorted(state.iterdir()):
        with suppress(FileNotFoundError):
            sizes[path.name] = path.stat().st_size
    return sizes


def store_bytes(sizes: dict[str, int]) -> int:
    """Bytes of the store and the journal, WAL and shared-memory files included."""
    return sum(n for name, n in sizes.items() if name.startswith(STORE_FILES))
