"""A progress bar on stderr for long one-shot analyses (only on a terminal)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from controller.runtime.watcher import scan
from controller.store.journal import Journal

LARGE_INPUT_BYTES = 32 << 20


class Progress:
    def __init__(self, directories: list[Path], journal: Journal, *, enabled: bool = True) -> None:
        self._journal = journal
        self._total = 0
        if enabled and sys.stderr.isatty():
            self._total = sum(Path(p).stat().st_size for p in scan(directories))
        self._active = self._total >= LARGE_INPUT_BYTES
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> None:
        if self._active:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._draw()

    def _draw(self) -> None:
        done = sum(f.watermark for f in self._journal.files())
        fraction = min(1.0, done / self._total) if self._total else 1.0
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r[{bar:<30}] {fraction:6.1%} {done >> 20}/{self._total >> 20} MiB")
        sys.stderr.flush()

    def stop(self) -> None:
        if self._active:
            self._stop.set()
            self._thread.join()
            self._draw()
            sys.stderr.write("\n")
