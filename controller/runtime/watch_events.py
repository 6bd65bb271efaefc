"""watchdog's events as the paths to look at again (controller.runtime.watcher).

A module of its own so that only a started watcher imports watchdog.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from controller.logs.opening import is_log_file
from controller.logs.scanning import scan

# Our own reads open and close the files: reacting to that would re-read them forever.
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


class PathEventHandler(FileSystemEventHandler):
    """Hands on each path an event names (a directory's log files when one appears)."""

    def __init__(self, on_path: Callable[[str], None]) -> None:
        self._on_path = on_path

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        for raw in paths:
            path = os.fsdecode(raw) if raw else ""
            if not path:
                continue
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    for found in scan([Path(path)]):
                        self._on_path(found)
            elif is_log_file(path):
                self._on_path(path)
        if event.event_type == "moved" and not event.is_directory:
            source, dest = (os.fsdecode(raw) for raw in paths)
            if is_log_file(source) and not is_log_file(dest):
                # Rotated to a name nobody watches (logrotate's `create`): read as a
                # rotated file if its log name was never looked at (issue 24).
                self._on_path(dest)
