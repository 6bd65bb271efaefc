"""Catch-up progress: how much of the work is done, for `analyze`'s bar and `run`'s log.

Bytes read alone would reach 100 % long before the work does (reading runs
ahead of the reconcilers up to the back-pressure limit), so the fraction done
is the fraction read times the fraction of reconciles done among those known
(done + still queued). That estimate falls when one batch queues thousands of
keys at once (issue 22: 58.6 % then 0.0 %), so `Progress` shows the highest
fraction reached: the bar only goes forward. The ETA comes from the rates
measured over the last `window` seconds (bytes read per second, reconciles
per second) applied to what is left of each, not from the elapsed time
scaled by the fraction, which assumed the rate of the first seconds held
(issue 22: "ETA 4 s" for 11 s). `ProgressReporter` samples the journal and
the pipeline on a timer and hands each estimate to a sink.
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

from controller.logs.scanning import scan
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


@dataclass(frozen=True)
class Estimate:
    """A sample with how much is done (never less than before) and the seconds left."""

    sample: Sample
    done: float
    left: float | None  # None until two samples a little apart measured the rates


def _read_fraction(sample: Sample) -> float:
    return min(1.0, sample.bytes_read / sample.bytes_total) if sample.bytes_total else 1.0


class Progress:
    """Samples in, estimates out: a fraction that only goes forward and an ETA from rates."""

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._history: list[Sample] = []
        self._done = 0.0
        self._keys_per_byte = 0.0

    def update(self, sample: Sample) -> Estimate:
        read = _read_fraction(sample)
        known = sample.reconciled + sample.queued
        finished = read >= 1.0 and sample.queued == 0
        done = 1.0 if finished else read * (sample.reconciled / known if known else 0.0)
        self._done = max(self._done, min(done, 1.0))
        self._history.append(sample)
        while len(self._history) > 2 and sample.elapsed - self._history[1].elapsed >= self._window:
            self._history.pop(0)  # keep one sample at least `window` old
        return Estimate(sample, self._done, 0.0 if finished else self._left(sample, read))

    def _left(self, now: Sample, read: float) -> float | None:
        """Seconds until the slower of reading and reconciling is done, at the recent rates."""
        then = self._history[0]
        span = now.elapsed - then.elapsed
        if span <= 0.0:
            return None
        byte_rate = (now.bytes_read - then.bytes_read) / span
        reconcile_rate = (now.reconciled - then.reconciled) / span
        bytes_left = max(0, now.bytes_total - now.bytes_read)
        # Reconciles per byte read: the highest seen, since the keys of the latest bytes are
        # queued in bursts, after them. All bytes' reconciles less those done are left.
        if now.bytes_read:
            seen = (now.reconciled + now.queued) / now.bytes_read
            self._keys_per_byte = max(self._keys_per_byte, seen)
        expected = self._keys_per_byte * now.bytes_total
        reconciles_left = max(float(now.queued), expected - now.reconciled)
        if (bytes_left and byte_rate <= 0) or (reconciles_left and reconcile_rate <= 0):
            return None  # stalled over the whole window: no honest figure
        reading = bytes_left / byte_rate if bytes_left else 0.0
        reconciling = reconciles_left / reconcile_rate if reconciles_left else 0.0
        return max(reading, reconciling)


def describe(estimate: Estimate) -> str:
    sample = estimate.sample
    rate = sample.lines / sample.elapsed if sample.elapsed > 0 else 0.0
    eta = "ETA ?" if estimate.left is None else f"ETA {estimate.left:.0f}s"
    return (
        f"{estimate.done:6.1%} done: {sample.files_read}/{sample.files_total} files,"
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
        sink: Callable[[Estimate], None],
        *,
        interval: float,
        delay: float,
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        self._journal = journal
        self._work = work
        self._sink = sink
        self._progress = Progress()
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
        read: dict[str, int] = {}
        for r in rows:  # a path read again after a rotation has several rows: the furthest
            read[r.path] = max(read.get(r.path, 0), r.watermark)
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
            self._sink(self._progress.update(self.sample()))
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


def terminal_bar(estimate: Estimate) -> None:
    """Redraw one line on stderr (analyze on a terminal)."""
    bar = "#" * int(estimate.done * 30)
    sys.stderr.write(f"\r[{bar:<30}] {describe(estimate)}\x1b[K")
    sys.stderr.flush()


def log_line(estimate: Estimate) -> None:
    """A log line (run, or analyze when stderr is not a terminal)."""
    log.info("catching up: %s", describe(estimate))
