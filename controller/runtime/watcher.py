"""Watching log directories: watchdog events as wake-up hints, plus scans.

Events coalesce and can overflow silently (inotify drops them when its queue
is full), so an event only says "look at this path again". The initial scan
and a periodic rescan are the backstop that makes a lost event cost a delay,
never data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

LOG_SUFFIXES = (".json", ".jsonl")
# Our own reads open and close the files: reacting to that would re-read them forever.
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


def is_log_file(path: str) -> bool:
    return path.endswith(LOG_SUFFIXES)


def scan(directories: list[Path]) -> Iterator[str]:
    """Every log file under the directories, recursively, in a stable order."""
    for directory in directories:
        for root, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(files):
                if is_log_file(name):
                    yield os.path.join(root, name)


class _Handler(FileSystemEventHandler):
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


class LogWatcher:
    """A watchdog observer (inotify, or polling with `poll=True`) over every log directory."""

    def __init__(
        self,
        directories: list[Path],
        on_path: Callable[[str], None],
        *,
        poll: bool = False,
        poll_interval: float = 1.0,
    ) -> None:
        self.directories = directories
        self._on_path = on_path
        self._poll = poll
        self._poll_interval = poll_interval
        self._observer = None

    def start(self) -> None:
        observer = self._observer_or_polling()
        handler = _Handler(self._on_path)
        for directory in self.directories:
            try:
                observer.schedule(handler, str(directory), recursive=True)
            except OSError as err:
                # e.g. the inotify watch limit: the periodic rescan still finds new lines.
                log.warning("cannot watch %s (%s); relying on the periodic rescan", directory, err)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _observer_or_polling(self) -> BaseObserver:
        """inotify, or polling when asked to or when no inotify instance is left.

        The inotify instance limit (fs.inotify.max_user_instances) is per user and
        shared with every other program: reaching it must cost latency, not a crash.
        """
        from watchdog.observers.polling import PollingObserver

        if not self._poll:
            from watchdog.observers import Observer

            try:
                return Observer()
            except OSError as err:
                log.warning(
                    "cannot use inotify (%s); polling for changes every %.0f s instead",
                    err,
                    self._poll_interval,
                )
        return PollingObserver(timeout=self._poll_interval)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
