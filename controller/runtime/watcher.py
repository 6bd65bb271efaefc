"""Watching log directories: watchdog events as wake-up hints, plus scans.

Events coalesce and can overflow silently (inotify drops them when its queue
is full), so an event only says "look at this path again". The initial scan
and a periodic rescan are the backstop that makes a lost event cost a delay,
never data.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # watchdog is imported when a watcher starts: `analyze` never pays for it
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

# The per-user limit each failure means (shared with every program: editors and IDEs often
# take most of them), so the warning names the one to raise.
_INOTIFY_LIMITS = {
    errno.ENOSPC: "/proc/sys/fs/inotify/max_user_watches",
    errno.EMFILE: "/proc/sys/fs/inotify/max_user_instances",
}


def inotify_advice(err: OSError) -> str:
    """How a user gets inotify back after `err`, in one clause."""
    limit = _INOTIFY_LIMITS.get(err.errno or 0)
    if limit is None:
        return "see the error above, or pass --poll to poll on purpose"
    knob = limit.removeprefix("/proc/sys/").replace("/", ".")
    return f"raise {limit} (e.g. `sysctl {knob}=524288`), or pass --poll to poll on purpose"


class LogWatcher:
    """A watchdog observer (inotify, or polling with `poll=True`) over every log directory.

    inotify can fail at any step (no instance left, no watch left for a sub-directory, no
    kernel memory): whatever fails, the watcher polls instead, says so once and counts it
    (`on_fallback` gets the errno's name: ENOSPC, EMFILE, ENOMEM).
    Reaching a per-user limit must cost latency, never a crash.
    """

    def __init__(
        self,
        directories: list[Path],
        on_path: Callable[[str], None],
        *,
        poll: bool = False,
        poll_interval: float = 1.0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.directories = directories
        self._on_path = on_path
        self._poll = poll
        self._poll_interval = poll_interval
        self._on_fallback = on_fallback
        self._observer: BaseObserver | None = None
        self.polling = poll

    def start(self) -> None:
        if not self._poll:
            try:
                self._observer = self._started(self._inotify_observer())
                return
            except OSError as err:
                self._fall_back(err)
        from watchdog.observers.polling import PollingObserver

        self.polling = True
        self._observer = self._started(PollingObserver(timeout=self._poll_interval))

    def _inotify_observer(self) -> BaseObserver:
        from watchdog.observers import Observer

        return Observer()

    def _started(self, observer: BaseObserver) -> BaseObserver:
        """`observer` watching every directory and running; on OSError nothing is left running."""
        from controller.runtime.watch_events import PathEventHandler

        handler = PathEventHandler(self._on_path)
        try:
            for directory in self.directories:
                observer.schedule(handler, str(directory), recursive=True)
            observer.daemon = True
            observer.start()
        except OSError:
            _discard(observer)
            raise
        return observer

    def _fall_back(self, err: OSError) -> None:
        log.warning(
            "cannot watch the log dirs with inotify (%s); polling for changes every %.0f s "
            "instead. To watch again: %s",
            err.strerror or err,
            self._poll_interval,
            inotify_advice(err),
        )
        if self._on_fallback is not None:
            self._on_fallback(errno.errorcode.get(err.errno or 0, "unknown"))

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


def _discard(observer: BaseObserver) -> None:
    """Release what a half-started observer holds (its inotify descriptor, its emitters)."""
    try:
        if observer.is_alive():
            observer.stop()
            observer.join(timeout=5)
        else:  # never started: stop its emitters and inotify reader as the thread's end would
            observer.on_thread_stop()
    except (OSError, RuntimeError):
        log.debug("discarding a half-started observer", exc_info=True)
