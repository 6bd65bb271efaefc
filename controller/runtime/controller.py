"""A controller: one work queue, one reconcile function, N worker threads.

The one contract (api/result.py): `reconcile(keys) -> Outcome`. A worker takes
the keys already waiting, up to `batch_size` or `batch_seconds`, and hands them
to one call inside one unit of work (controller.store.unit: one commit for
all; queue adds run after it). The worker loop alone acts on the Outcome
(controller-runtime's reconcileHandler): done keys are forgotten, requeued ones
re-added at once or later, failed ones retried with per-item exponential
back-off; one failing key is logged with its key, counted, and retried, and
never stops the loop. If the call raises (or the commit fails), the unit rolls
back and each key runs again in a unit of its own, so one bad key costs its
batch a retry, never another key's writes.

The controller also owns the durable dirty marks (the journal's "look at this
again" per stage, which make a restart resume what was left): it reads the
marks' sequence numbers of a batch before the call, marks the keys the Outcome
hands downstream in the same unit of work, clears the batch's own marks after
success (only those no later batch set meanwhile), and queues the downstream
keys once the unit commits.

What to do with a key that keeps failing, and with "look again later", is a
`RetryPolicy` chosen by whoever builds the controller: by default a failing
key is retried with back-off for ever (the `controller_failing_keys` gauge
and `failing()` report it); a one-shot run gives up after a few attempts and
reports it, so `foylectl analyze` always ends (issue 13). A `TerminalError`
is never retried: counted, logged once, reported as given up.

A `gate` applies back-pressure: while it is shut the workers take no key.
A worker with an empty queue takes the one key it got, so batching adds no latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.api.result import Outcome, Result, TerminalError
from controller.runtime.metrics import MetricsRegistry, QueueMetrics, reconcile_time
from controller.runtime.ratelimit import default_controller_rate_limiter
from controller.runtime.workqueue import WorkQueue
from controller.store.unit import Transactional, after_commit, unit_of_work

log = logging.getLogger(__name__)

Reconcile = Callable[[list[str]], Outcome]
GATE_POLL_SECONDS = 0.01


class DirtyMarks(Protocol):
    """Durable per-queue "look at this key again" marks (the journal keeps them)."""

    def dirty_seqs(self, queue: str, keys: Iterable[str]) -> dict[str, int]: ...

    def mark_dirty(self, queue: str, keys: Iterable[str]) -> None: ...

    def clear_dirty(self, queue: str, seqs: Mapping[str, int]) -> None: ...


@dataclass(frozen=True)
class Downstream:
    """A stage this controller hands keys to: the marks queue the worker loop writes for it
    (None when the reconciler's own commit marks them, as the journal's file reads do), and
    its controller (None while it does not run: the marks wait for it)."""

    marks_queue: str | None
    controller: Controller | None


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
        marks: DirtyMarks | None = None,
        marks_queue: str | None = None,
    ) -> None:
        self.name = name
        self._policy = policy
        self._reconcile = reconcile
        self._unit = tuple(unit)
        self._marks = marks
        self._marks_queue = marks_queue  # this stage's own durable marks, if it has any
        self._downstream: dict[str, Downstream] = {}
        self._batch_size = batch_size
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
        self._reconcile_time = reconcile_time(registry).labels(name)
        self._threads: list[threading.Thread] = []
        self._failing: dict[str, Failing] = {}
        self._failing_lock = threading.Lock()
        self._alike = _AlikeFailures()
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

    def add_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.queue.add(key)

    def connect(self, stage: str, downstream: Downstream) -> None:
        """Let this controller's Outcomes hand keys to `stage`."""
        if downstream.marks_queue is not None and self._marks is None:
            raise ValueError(f"{self.name}: no DirtyMarks to mark {stage}'s queue with")
        self._downstream[stage] = downstream

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
        deadline = time.monotonic() + timeout
        drained = self.queue.shutdown_with_drain(timeout)
        self.queue.shutdown()
        for thread in self._threads:  # one deadline in all: a pod's grace period is short
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return drained

    def process(self, keys: list[str]) -> None:
        """Reconcile `keys` in one unit of work and apply the retry rules; on a failure of
        the whole batch, each key again in a unit of its own (to find the failing one)."""
        try:
            with unit_of_work(*self._unit):
                self._reconcile_in_unit(keys)
        except Exception as err:
            if len(keys) == 1:
                self._failed(keys[0], err)
                return
            for key in keys:
                self.process([key])

    def _reconcile_in_unit(self, keys: list[str]) -> None:
        """One call of the contract; marks, retries and queue adds wait for the commit
        (only a commit is a success: a unit that fails to commit, on a full disk, fails its keys)."""
        marks, own_queue = self._marks, self._marks_queue
        seqs = marks.dirty_seqs(own_queue, keys) if marks and own_queue else {}
        self._reconciles.inc(len(keys))
        outcome = self._reconcile(keys)
        self.reconciled += len(keys)
        for stage, wanted in outcome.downstream.items():
            self._hand_on(self._downstream[stage], wanted)
        succeeded = [k for k in keys if k not in outcome.failed]
        finished = {k: seqs[k] for k in succeeded if k in seqs and k not in outcome.results}
        if marks and own_queue and finished:
            marks.clear_dirty(own_queue, finished)
        after_commit(lambda: self._succeeded(succeeded))
        for key, result in outcome.results.items():
            after_commit(lambda k=key, r=result: self._requeue(k, r))
        for key, err in outcome.failed.items():
            after_commit(lambda k=key, e=err: self._failed(k, e))

    def _hand_on(self, downstream: Downstream, keys: set[str]) -> None:
        if downstream.marks_queue is not None and self._marks is not None:
            self._marks.mark_dirty(downstream.marks_queue, keys)
        controller = downstream.controller
        if controller is not None:
            after_commit(lambda: controller.add_all(keys))

    def _requeue(self, key: str, result: Result) -> None:
        if result.requeue:
            self.queue.add(key)
        elif result.requeue_after is not None and self._policy.requeue_later:
            self.queue.add_after(key, result.requeue_after)

    def _succeeded(self, keys: list[str]) -> None:
        recovered = []
        with self._failing_lock:
            for key in keys:
                self.queue.forget(key)
                if self._failing.pop(key, None) is not None:
                    recovered.append(key)
            self._failing_gauge.set(len(self._failing))
        alike = self._alike.recovered() if recovered else 0
        if alike:
            log.warning("%s: %d more keys failed alike meanwhile", self.name, alike)
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
        if failing.failures == 1 and self._alike.say(_described(err)):
            alike = self._alike.take()
            log.warning(
                "%s %s: reconcile failed, retrying with back-off: %s%s",
                self.name,
                key,
                _described(err),
                f" ({alike} more keys failed since the last such warning)" if alike else "",
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
            started = time.monotonic()
            try:
                self.process(keys)
            finally:
                self._reconcile_time.observe(time.monotonic() - started)
                for key in keys:
                    self.queue.done(key)


class _AlikeFailures:
    """One warning per error, not per key: a full disk fails every key of every batch
    with one message (a warning per trace key). The same message within
    `window` seconds is counted instead, and the count said with the next warning."""

    def __init__(self, window: float = 60.0) -> None:
        self._window = window
        self._last: tuple[str, float] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def say(self, message: str) -> bool:
        """Whether to log `message` now (else it is counted)."""
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is not None and last[0] == message and now - last[1] < self._window:
                self._count += 1
                return False
            self._last = (message, now)
            return True

    def take(self) -> int:
        """The failures counted since the last warning, counting again from 0."""
        with self._lock:
            count, self._count = self._count, 0
            return count

    def recovered(self) -> int:
        """`take()`, and the next failure is said whatever its message (a new outage)."""
        with self._lock:
            count, self._count, self._last = self._count, 0, None
            return count


def _described(err: Exception) -> str:
    """The error's message, or its type when it has none (a MemoryError says nothing)."""
    return str(err) or type(err).__name__
