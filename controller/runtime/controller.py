"""A controller: one work queue, one reconcile function, N worker threads.

The worker loop owns retries (controller-runtime's reconcileHandler): a
reconcile returns a Result or raises; only the loop decides to forget the
key, re-add it at once, later, or with per-item exponential back-off. One
failing key is logged with its key, counted, and retried; it never stops the
loop.

With `unit` resources (the journal, the SQLite store) or a `reconcile_many`,
a worker takes the keys already waiting, up to `batch_size` or
`batch_seconds`, and reconciles them in one unit of work
(controller.store.unit): one commit for all. `reconcile_many` takes the whole
batch in one call, so a reconciler can read and write it set-wise. If any
key fails, the whole unit rolls back and each key runs again in a unit of its
own, so one bad key costs its batch a retry, never another key's writes.

What to do with a key that keeps failing, and with "look again later", is a
`RetryPolicy` chosen by whoever builds the controller: by default a failing
key is retried with back-off for ever (the `controller_failing_keys` gauge
and `failing()` report it); a one-shot run gives up after a few attempts and
reports it, so `foylectl analyze` always ends (issue 13). A `TerminalError`
is never retried: counted, logged once, reported as given up.

A `gate` applies back-pressure: while it is shut the workers take no key.
Savepoints per key would do the same at a cost paid by every key. A worker
with an empty queue takes the one key it got, so batching adds no latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.api.result import Result, TerminalError
from controller.runtime.metrics import MetricsRegistry, QueueMetrics
from controller.runtime.ratelimit import default_controller_rate_limiter
from controller.runtime.workqueue import WorkQueue
from controller.store.unit import Transactional, after_commit, unit_of_work

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Result]
ReconcileMany = Callable[[list[str]], None]  # a whole batch at once; raises on failure
GATE_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class RetryPolicy:
    """What the worker loop does with failures and with `Result.requeue_after`."""

    give_up_after: int | None = None  # failed attempts before a key is dropped and reported
    requeue_later: bool = True  # False: ignore requeue_after (a one-shot run exits when idle)

    def gives_up(self, failures: int) -> bool:
        return self.give_up_after is not None and failures >= self.give_up_after


RETRY_FOR_EVER = RetryPolicy()


@dataclass
class Failing:
    """A key whose reconciles keep failing: how often, and the first error (the cause)."""

    key: str
    failures: int
    first_error: str
    gave_up: bool = False


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
        policy: RetryPolicy = RETRY_FOR_EVER,
        unit: Sequence[Transactional] = (),
        batch_size: int = 256,
        batch_seconds: float = 0.05,
        gate: Callable[[], bool] | None = None,
        reconcile_many: ReconcileMany | None = None,
    ) -> None:
        self.name = name
        self._reconcile_many = reconcile_many
        self._policy = policy
        self._reconcile = reconcile
        self._unit = tuple(unit)
        self._batch_size = batch_size if unit or reconcile_many else 1
        self._batch_seconds = batch_seconds
        self._gate = gate
        self._gate_closed = threading.Event()  # never set: a wait that wakes on its timeout
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
        self._terminal = registry.counter(
            "controller_terminal_errors_total",
            "Reconciles that raised a TerminalError (not retried).",
            ("controller",),
        ).labels(name)
        self._failing_gauge = registry.gauge(
            "controller_failing_keys",
            "Keys whose last reconcile failed (retried with back-off).",
            ("controller",),
        ).labels(name)
        self._threads: list[threading.Thread] = []
        self._failing: dict[str, Failing] = {}
        self._failing_lock = threading.Lock()
        self.reconciled = 0  # keys reconciled so far (progress reports)

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def add(self, key: str) -> None:
        self.queue.add(key)

    def failing(self) -> list[Failing]:
        """The keys failing now, and those the policy gave up on."""
        with self._failing_lock:
            return [Failing(**vars(f)) for f in self._failing.values()]

    def is_idle(self) -> bool:
        return self.queue.is_idle()

    def is_settled(self) -> bool:
        """Caught up: nothing to do now (timers such as abandonment checks may wait)."""
        return self.queue.is_settled()

    def stop(self, timeout: float) -> bool:
        """Stop taking work, let in-flight reconciles finish; True if they did in time."""
        drained = self.queue.shutdown_with_drain(timeout)
        self.queue.shutdown()
        for thread in self._threads:
            thread.join(timeout=max(0.1, timeout))
        return drained

    def process_one(self, key: str) -> None:
        """Reconcile one key in a unit of its own and apply the retry rules."""
        try:
            with unit_of_work(*self._unit):
                self._reconcile_and_follow_up(key)
        except Exception as err:
            self._failed(key, err)

    def _process_batch(self, keys: list[str]) -> None:
        if len(keys) == 1:
            self.process_one(keys[0])
            return
        try:
            with unit_of_work(*self._unit):
                if self._reconcile_many is not None:
                    self._reconciles.inc(len(keys))
                    self._reconcile_many(keys)
                    self.reconciled += len(keys)
                    after_commit(lambda: self._succeeded(keys))
                else:
                    for key in keys:
                        self._reconcile_and_follow_up(key)
        except Exception:  # rolled back: find the failing key(s) one by one
            for key in keys:
                self.process_one(key)

    def _reconcile_and_follow_up(self, key: str) -> None:
        """Reconcile; queue follow-ups to run once the unit commits; raise on failure."""
        self._reconciles.inc()
        result = self._reconcile(key)
        self.reconciled += 1
        # Only a commit is a success: a unit that fails to commit (a full disk) fails its keys.
        after_commit(lambda: self._succeeded([key]))
        if result.requeue:
            after_commit(lambda: self.queue.add(key))
        elif result.requeue_after is not None and self._policy.requeue_later:
            delay = result.requeue_after
            after_commit(lambda: self.queue.add_after(key, delay))

    def _succeeded(self, keys: list[str]) -> None:
        recovered = []
        with self._failing_lock:
            for key in keys:
                self.queue.forget(key)
                if self._failing.pop(key, None) is not None:
                    recovered.append(key)
            self._failing_gauge.set(len(self._failing))
        for key in recovered:
            log.info("%s %s: reconcile succeeded again", self.name, key)

    def _failed(self, key: str, err: Exception) -> None:
        self._errors.inc()
        terminal = isinstance(err, TerminalError)
        if terminal:
            self._terminal.inc()
        with self._failing_lock:
            failing = self._failing.get(key)
            if failing is None:
                failing = self._failing[key] = Failing(key, 0, f"{type(err).__name__}: {err}")
            had_given_up = failing.gave_up
            failing.failures += 1
            failing.gave_up = terminal or self._policy.gives_up(failing.failures)
            self._failing_gauge.set(len(self._failing))
        if failing.gave_up:
            if not had_given_up:
                log.warning(
                    "%s %s: gave up after %d failed reconciles: %s",
                    self.name,
                    key,
                    failing.failures,
                    _described(err),
                )
            self.queue.forget(key)
            return
        if failing.failures == 1:
            log.warning(
                "%s %s: reconcile failed, retrying with back-off: %s",
                self.name,
                key,
                _described(err),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
        self.queue.add_rate_limited(key)

    def _take_batch(self, first: str) -> list[str]:
        keys = [first]
        deadline = time.monotonic() + self._batch_seconds
        while len(keys) < self._batch_size and time.monotonic() < deadline:
            key, shutdown = self.queue.get(timeout=0)
            if key is None or shutdown:
                break
            keys.append(key)
        return keys

    def _wait_for_gate(self) -> None:
        """Back-pressure: hold off taking work while the gate is shut (e.g. a full queue
        downstream), so a backlog of keys never grows with the size of the input."""
        while self._gate is not None and not self._gate() and not self.queue.shutting_down():
            self._gate_closed.wait(GATE_POLL_SECONDS)

    def _work(self) -> None:
        while True:
            self._wait_for_gate()
            first, shutdown = self.queue.get()
            if shutdown or first is None:
                return
            keys = self._take_batch(first)
            try:
                self._process_batch(keys)
            finally:
                for key in keys:
                    self.queue.done(key)


def _described(err: Exception) -> str:
    """The error's message, or its type when it has none (a MemoryError says nothing)."""
    return str(err) or type(err).__name__
