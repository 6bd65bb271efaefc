"""The scan of the log directories: every log file under them, in a stable order."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from controller.logs.opening import is_log_file

log = logging.getLogger(__name__)

_unlistable: set[tuple[str, int]] = set()  # (directory, errno) said already


def _say_unlistable(err: OSError) -> None:
    """A directory the scan cannot list is said once (every rescan meets it again):
    its log files are not read, and a silent skip looked like an empty directory."""
    key = (str(err.filename), err.errno or 0)
    if key not in _unlistable:
        _unlistable.add(key)
        log.warning("cannot list %r, its log files are not read: %s", err.filename, err.strerror)


def scan(directories: list[Path]) -> Iterator[str]:
    """Every log file under the directories, recursively, in a stable order."""
    for directory in directories:
        for root, dirs, files in os.walk(directory, onerror=_say_unlistable):
            dirs.sort()
            for name in sorted(files):
                if is_log_file(name):
                    yield os.path.join(root, name)
