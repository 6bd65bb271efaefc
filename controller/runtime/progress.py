"""A progress bar on stderr for long one-shot analyses (only on a terminal)."""

from __future__ import annotations

import os
import stat
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
            self._total = sum(_size(p) for p in scan(directories))
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
        """Draw the final state and end the line (once; again is a no-op)."""
        if self._active and not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._draw()
            sys.stderr.write("\n")


def _size(path: str) -> int:
    """A regular file's size; 0 for anything else (a dangling link, a FIFO, a device)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
