"""Catch-up progress: how much of the work is done, for `analyze`'s bar and `run`'s log.

Bytes read alone would reach 100 % long before the work does (reading runs
ahead of the reconcilers up to the back-pressure limit), so the fraction done
is the fraction read times the fraction of reconciles done among those known
(done + still queued). `measure` is pure; `ProgressReporter` samples the
journal and the pipeline on a timer and hands each sample to a sink.
"""

from __future__ import annotations

import logging
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.runtime.watcher import scan
from controller.store.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One look at the catch-up."""

    elapsed: float
    files_total: int
    files_read: int
    bytes_total: int
    bytes_read: int
    lines: int
    reconciled: int
    queued: int


def measure(sample: Sample) -> tuple[float, float | None]:
    """(fraction of the work done, seconds left or None while unknown)."""
    read = min(1.0, sample.bytes_read / sample.bytes_total) if sample.bytes_total else 1.0
    known = sample.reconciled + sample.queued
    worked = sample.reconciled / known if known else 1.0
    done = read * worked
    if done <= 0.0 or sample.elapsed <= 0.0:
        return done, None
    return done, sample.elapsed * (1.0 - done) / done


def describe(sample: Sample) -> str:
    done, left = measure(sample)
    rate = sample.lines / sample.elapsed if sample.elapsed > 0 else 0.0
    eta = "ETA ?" if left is None else f"ETA {left:.0f}s"
    return (
        f"{done:6.1%} done: {sample.files_read}/{sample.files_total} files,"
        f" {sample.lines:,} lines ({rate:,.0f}/s), {sample.reconciled:,} reconciled,"
        f" {sample.queued:,} queued, {eta}"
    )


class Work(Protocol):
    """What the reporter reads of the pipeline."""

    def reconciled(self) -> int: ...

    def queued(self) -> int: ...


class ProgressReporter:
    """Samples every `interval` seconds (the first after `delay`) until stopped or `until()`."""

    def __init__(
        self,
        directories: list[Path],
        journal: Journal,
        work: Work,
        sink: Callable[[Sample], None],
        *,
        interval: float,
        delay: float,
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        self._journal = journal
        self._work = work
        self._sink = sink
        self._interval, self._delay, self._until = interval, delay, until
        self._sizes = {str(p): _size(Path(p)) for p in scan(directories)}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.shown = False

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> Sample:
        rows = [r for r in self._journal.files() if r.path in self._sizes]
        read = {r.path: r.watermark for r in rows}
        return Sample(
            elapsed=time.monotonic() - self._started,
            files_total=len(self._sizes),
            files_read=sum(1 for p, size in self._sizes.items() if read.get(p, -1) >= size),
            bytes_total=sum(self._sizes.values()),
            bytes_read=sum(min(read.get(p, 0), size) for p, size in self._sizes.items()),
            lines=sum(r.lines for r in rows),
            reconciled=self._work.reconciled(),
            queued=self._work.queued(),
        )

    def _loop(self) -> None:
        if self._stop.wait(self._delay):
            return
        while not self._until():
            self._sink(self.sample())
            self.shown = True
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _size(path: Path) -> int:
    """A regular file's size; 0 for anything else (a dangling link, a FIFO, a device)."""
    try:
        st = path.stat()
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def terminal_bar(sample: Sample) -> None:
    """Redraw one line on stderr (analyze on a terminal)."""
    done, _ = measure(sample)
    bar = "#" * int(done * 30)
    sys.stderr.write(f"\r[{bar:<30}] {describe(sample)}\x1b[K")
    sys.stderr.flush()


def log_line(sample: Sample) -> None:
    """A log line (run, or analyze when stderr is not a terminal)."""
    log.info("catching up: %s", describe(sample))
