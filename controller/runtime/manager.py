"""A manager runs controllers and timers, and knows no pipeline (controller-runtime's Manager).

Whoever builds it adds the controllers, the periodic jobs, the hooks to run
once the workers are up (resync, the first scan) and the condition that,
with every controller settled, makes it ready. `run_until_idle()` drives the
same controllers to completion for a one-shot run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from controller.runtime.controller import Controller
from controller.runtime.metrics import MetricsRegistry

log = logging.getLogger(__name__)

Hook = Callable[[], object]
READINESS_POLL_SECONDS = 0.05
IDLE_POLL_SECONDS = 0.005


class Manager:
    def __init__(self, registry: MetricsRegistry | None = None) -> None:
        self.registry = registry or MetricsRegistry()
        self.controllers: list[Controller] = []
        self._timers: list[tuple[float, Hook, str]] = []
        self._ready_when: Callable[[], bool] = lambda: True
        self._ready_what: str | None = None  # said in the log once ready, when a builder named it
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def every(self, interval: float, fn: Hook, name: str) -> None:
        """Run `fn` every `interval` seconds once started; a failure is logged, not fatal."""
        self._timers.append((interval, fn, name))

    def ready_when(self, condition: Callable[[], bool], what: str) -> None:
        """Ready once `condition()` holds and every controller has settled (logged as `what`)."""
        self._ready_when, self._ready_what = condition, what

    def start(self, *hooks: Hook) -> None:
        """Start the workers, run `hooks` in order, then the timers and the readiness check."""
        for controller in self.controllers:
            controller.start()
        for hook in hooks:
            hook()
        for interval, fn, name in self._timers:
            self._loop(interval, fn, name)
        self._loop(READINESS_POLL_SECONDS, self._check_ready, "readiness", until_ready=True)

    def run_until_idle(self, *hooks: Hook, timeout: float | None = None) -> bool:
        """Start the workers, run `hooks`, wait until every queue is idle (no timers)."""
        for controller in self.controllers:
            controller.start()
        for hook in hooks:
            hook()
        deadline = None if timeout is None else time.monotonic() + timeout
        stable = 0
        while deadline is None or time.monotonic() < deadline:
            # Idle twice in a row: a reconcile that just finished may have queued more.
            stable = stable + 1 if self.idle() else 0
            if stable >= 2:
                return True
            self._stop.wait(IDLE_POLL_SECONDS)
        return False

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def idle(self) -> bool:
        return all(c.is_idle() for c in self.controllers)

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop the timers, let in-flight reconciles finish; True when everything drained."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        drained = True
        for controller in self.controllers:
            drained &= controller.stop(max(0.1, deadline - time.monotonic()))
        return drained

    def _check_ready(self) -> None:
        if self._ready_when() and all(c.is_settled() for c in self.controllers):
            if not self._ready.is_set() and self._ready_what is not None:
                log.info("%s; ready", self._ready_what)
            self._ready.set()

    def _loop(self, interval: float, fn: Hook, name: str, until_ready: bool = False) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                if until_ready and self._ready.is_set():
                    return
                try:
                    fn()
                except Exception:
                    log.exception("%s failed; trying again in %.0f s", name, interval)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
