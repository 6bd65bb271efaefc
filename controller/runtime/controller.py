"""A controller: one work queue, one reconcile function, N worker threads.

The worker loop owns retries (controller-runtime's reconcileHandler): a
reconcile returns a Result or raises; only the loop decides to forget the
key, re-add it at once, later, or with per-item exponential back-off. One
failing key is logged with its key, counted, and retried; it never stops the
loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.reconcilers.result import Result
from controller.runtime.metrics import MetricsRegistry, QueueMetrics
from controller.runtime.ratelimit import default_controller_rate_limiter
from controller.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Result | None]


class Controller:
    def __init__(
        self,
        name: str,
        reconcile: Reconcile,
        registry: MetricsRegistry,
        *,
        workers: int = 1,
        qps: float = 1000.0,
        burst: int = 10000,
        after: Callable[[str], None] | None = None,
        oneshot: bool = False,
    ) -> None:
        self.name = name
        self._oneshot = oneshot  # a one-shot run ignores "look again later" (it exits when idle)
        self._reconcile = reconcile
        self._after = after
        self.workers = workers
        self.queue: WorkQueue[str] = WorkQueue(
            name,
            rate_limiter=default_controller_rate_limiter(qps=qps, burst=burst),
            metrics=QueueMetrics.for_queue(name, registry),
        )
        self._errors = registry.counter(
            "controller_reconcile_errors_total", "Reconciles that raised.", ("controller",)
        ).labels(name)
        self._reconciles = registry.counter(
            "controller_reconcile_total", "Reconciles run.", ("controller",)
        ).labels(name)
        self._threads: list[threading.Thread] = []
        self._failing: set[str] = set()

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def add(self, key: str) -> None:
        self.queue.add(key)

    def is_idle(self) -> bool:
        return self.queue.is_idle()

    def stop(self, timeout: float) -> bool:
        """Stop taking work, let in-flight reconciles finish; True if they did in time."""
        drained = self.queue.shutdown_with_drain(timeout)
        self.queue.shutdown()
        for thread in self._threads:
            thread.join(timeout=max(0.1, timeout))
        return drained

    def process_one(self, key: str) -> None:
        """Reconcile one key and apply the loop's retry rules (also used by tests)."""
        self._reconciles.inc()
        try:
            result = self._reconcile(key) or Result()
        except Exception as err:
            self._errors.inc()
            if key not in self._failing:
                log.warning(
                    "%s %s: reconcile failed, retrying with back-off: %s",
                    self.name,
                    key,
                    err,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self._failing.add(key)
            self.queue.add_rate_limited(key)
            return
        if key in self._failing:
            self._failing.discard(key)
            log.info("%s %s: reconcile succeeded again", self.name, key)
        self.queue.forget(key)
        if result.requeue:
            self.queue.add(key)
        elif result.requeue_after is not None and not self._oneshot:
            self.queue.add_after(key, result.requeue_after)
        if self._after is not None:
            self._after(key)

    def _work(self) -> None:
        while True:
            key, shutdown = self.queue.get()
            if shutdown or key is None:
                return
            try:
                self.process_one(key)
            finally:
                self.queue.done(key)
