"""The work queue: client-go semantics under real threads, and its metrics."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from controller.runtime.metrics import MetricsRegistry, QueueMetrics
from controller.runtime.ratelimit import ItemExponentialFailureRateLimiter
from controller.runtime.workqueue import WorkQueue
from tests.fakes import FakeClock

DEADLINE = 5.0


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.001)


@pytest.fixture(autouse=True)
def queues_shut_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shut down every queue a test made, so no delay thread outlives its test.

    Daemon threads still running when the interpreter finalizes are how a passing
    suite once ended in exit 134 (tests/conftest.py's pytest_unconfigure).
    """
    made: list[WorkQueue[object]] = []
    init = WorkQueue.__init__

    def tracking_init(self: WorkQueue[object], *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(WorkQueue, "__init__", tracking_init)
    yield
    for queue in made:
        queue.shutdown()


def ready_items(queue: WorkQueue[str]) -> list[str]:
    """Take every item that is ready now, marking each done."""
    items = []
    while True:
        item, shutdown = queue.get(timeout=0)
        if item is None:
            return items
        items.append(item)
        queue.done(item)


# -- de-duplication and processing ------------------------------------------


def test_item_added_many_times_before_processing_is_processed_once() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    for _ in range(3):
        queue.add("a")

    assert len(queue) == 1
    assert ready_items(queue) == ["a"]


def test_distinct_items_are_handed_out_in_fifo_order() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    for item in ("c", "a", "b"):
        queue.add(item)

    assert ready_items(queue) == ["c", "a", "b"]


def test_item_re_added_while_processing_runs_once_more_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add("a")
    item, _ = queue.get(timeout=0)

    queue.add("a")
    queue.add("a")

    assert queue.get(timeout=0) == (None, False)  # not handed out while processing
    queue.done("a")
    assert ready_items(queue) == ["a"]
    assert queue.is_idle()


def test_done_for_an_item_not_being_processed_raises() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add("a")

    with pytest.raises(ValueError):
        queue.done("a")


def test_is_idle_counts_queued_delayed_and_processing_items() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("q", clock=clock)
    assert queue.is_idle()

    queue.add_after("a", 1.0)
    assert not queue.is_idle()
    clock.advance(1.0)
    assert not queue.is_idle()  # queued
    queue.get(timeout=0)
    assert not queue.is_idle()  # processing
    queue.done("a")
    assert queue.is_idle()


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads often, so races show up within a short test."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_no_item_is_processed_by_two_workers_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue("q")
    keys = range(24)  # few keys, so items are often re-added while being processed
    adds_per_producer = 1000
    active: set[int] = set()
    overlaps: list[int] = []
    errors: list[BaseException] = []
    processed: Counter[int] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        try:
            while True:
                item, shutdown = queue.get()
                if shutdown:
                    return
                assert item is not None
                with lock:
                    if item in active:
                        overlaps.append(item)
                    active.add(item)
                sum(range(200))  # a little work, to widen the window for overlaps
                with lock:
                    active.discard(item)
                    processed[item] += 1
                queue.done(item)
        except BaseException as exc:  # surfaced by the asserts below, not lost in the thread
            errors.append(exc)

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(adds_per_producer):
            queue.add(rng.choice(keys))
        for key in keys:
            queue.add(key)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    producers = [threading.Thread(target=producer, args=(seed,)) for seed in range(8)]
    for thread in workers + producers:
        thread.start()
    for thread in producers:
        thread.join(DEADLINE)
    wait_until(lambda: queue.is_idle() or bool(errors))
    queue.shutdown()
    for thread in workers:
        thread.join(DEADLINE)

    assert errors == []
    assert overlaps == []
    assert set(processed) == set(keys)
    assert sum(processed.values()) < 8 * (adds_per_producer + len(keys))  # de-duplicated
    assert not any(thread.is_alive() for thread in workers)


# -- delayed and rate-limited adds ------------------------------------------


def test_add_after_hands_out_the_item_only_when_due() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("q", clock=clock)
    queue.add_after("a", 5.0)

    clock.advance(4.5)
    assert ready_items(queue) == []
    clock.advance(0.5)
    assert ready_items(queue) == ["a"]


def test_add_after_hands_out_items_in_due_order() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("q", clock=clock)
    queue.add_after("late", 3.0)
    queue.add_after("early", 1.0)
    queue.add_after("middle", 2.0)

    clock.advance(3.0)

    assert ready_items(queue) == ["early", "middle", "late"]


def test_add_after_earlier_time_wins() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("q", clock=clock)
    queue.add_after("sooner", 10.0)
    queue.add_after("sooner", 2.0)
    queue.add_after("kept", 2.0)
    queue.add_after("kept", 10.0)

    clock.advance(2.0)
    assert sorted(ready_items(queue)) == ["kept", "sooner"]
    clock.advance(8.0)
    assert ready_items(queue) == []  # the superseded times do not fire again
    assert queue.is_idle()


def test_add_after_without_delay_adds_now() -> None:
    queue: WorkQueue[str] = WorkQueue("q", clock=FakeClock())
    queue.add_after("a", 0.0)
    queue.add_after("b", -1.0)

    assert ready_items(queue) == ["a", "b"]


def test_blocked_getter_receives_a_delayed_item_when_due() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add_after("late", 60.0)
    # Once the delay thread sleeps until "late", an earlier item must wake it.
    wait_until(lambda: len(queue._due._waiters) == 1)  # type: ignore[attr-defined]
    start = time.monotonic()
    queue.add_after("a", 0.05)

    item, shutdown = queue.get(timeout=DEADLINE)

    assert (item, shutdown) == ("a", False)
    # Well before the getter's own timeout (which would also promote the item).
    assert 0.05 <= time.monotonic() - start < DEADLINE / 2
    queue.shutdown()


def test_add_rate_limited_backs_off_exponentially_and_forget_resets() -> None:
    clock = FakeClock()
    limiter = ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=4.0)
    queue: WorkQueue[str] = WorkQueue("q", rate_limiter=limiter, clock=clock)

    def seconds_until_ready() -> int:
        queue.add_rate_limited("a")
        for waited in range(1, 10):
            clock.advance(1.0)
            if ready_items(queue):
                return waited
        raise AssertionError("never became ready")

    assert [seconds_until_ready() for _ in range(4)] == [1, 2, 4, 4]
    assert queue.num_requeues("a") == 4

    queue.forget("a")

    assert queue.num_requeues("a") == 0
    assert seconds_until_ready() == 1


# -- shutdown -----------------------------------------------------------------


def test_shutdown_wakes_every_blocked_getter() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    results: list[tuple[str | None, bool]] = []
    getters = [threading.Thread(target=lambda: results.append(queue.get())) for _ in range(4)]
    for thread in getters:
        thread.start()
    # Peek at the condition's waiters so the test proves a wake-up, not a late call.
    wait_until(lambda: len(queue._ready._waiters) == 4)  # type: ignore[attr-defined]

    queue.shutdown()
    for thread in getters:
        thread.join(DEADLINE)

    assert results == [(None, True)] * 4


def test_adds_after_shutdown_are_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.shutdown()

    queue.add("a")
    queue.add_after("b", 1.0)

    assert queue.shutting_down()
    assert queue.is_idle()
    assert queue.get(timeout=0) == (None, True)


def test_shutdown_drops_items_still_queued() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add("a")

    queue.shutdown()

    assert queue.get() == (None, True)
    assert len(queue) == 0


def test_shutdown_with_drain_waits_for_in_flight_items() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add("a")
    item, _ = queue.get(timeout=0)
    drained: list[bool] = []
    # A drain timeout far beyond the join deadline: only a wake-up by done() ends it in time.
    drainer = threading.Thread(
        target=lambda: drained.append(queue.shutdown_with_drain(60.0)), daemon=True
    )
    drainer.start()
    # shutting_down() takes the queue's lock, so once it says True the drainer is waiting.
    wait_until(queue.shutting_down)

    assert drainer.is_alive()
    queue.add("b")  # refused while draining
    queue.done("a")
    drainer.join(DEADLINE)

    assert not drainer.is_alive()
    assert drained == [True]
    assert queue.is_idle()


def test_shutdown_with_drain_reports_timeout() -> None:
    queue: WorkQueue[str] = WorkQueue("q")
    queue.add("a")
    queue.get(timeout=0)

    assert queue.shutdown_with_drain(timeout=0.01) is False


# -- metrics ------------------------------------------------------------------


def test_queue_metrics_after_a_known_sequence() -> None:
    clock = FakeClock()
    registry = MetricsRegistry()
    metrics = QueueMetrics.for_queue("logfile", registry, clock=clock)
    limiter = ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=10.0)
    queue: WorkQueue[str] = WorkQueue("logfile", rate_limiter=limiter, metrics=metrics, clock=clock)
    labels = {"name": "logfile"}

    def value(name: str) -> float | None:
        return registry.value(name, labels)

    queue.add("a")
    queue.add("a")  # de-duplicated: not an add
    queue.add("b")
    queue.get(timeout=0)  # a
    queue.add("a")  # re-added while processing: dirty again
    queue.add_rate_limited("c")  # a retry, not yet an add
    clock.advance(2.0)

    assert value("workqueue_adds_total") == 3
    assert value("workqueue_depth") == 2
    assert value("workqueue_retries_total") == 1
    assert value("workqueue_unfinished_work_seconds") == 2.0
    assert value("workqueue_longest_running_processor_seconds") == 2.0

    queue.done("a")

    assert value("workqueue_work_duration_seconds_count") == 1
    assert value("workqueue_work_duration_seconds_sum") == 2.0
    assert value("workqueue_unfinished_work_seconds") == 0.0
    assert len(queue) == 3  # b, a again, and c (now due)
    assert value("workqueue_adds_total") == 4
    assert value("workqueue_depth") == 3

    queue.shutdown()

    assert value("workqueue_depth") == 0
    assert b'workqueue_queue_duration_seconds_bucket{le="1e-08",name="logfile"}' in (
        registry.render()
    )


def test_queue_metrics_are_one_object_per_queue_name() -> None:
    registry = MetricsRegistry()

    assert QueueMetrics.for_queue("a", registry) is QueueMetrics.for_queue("a", registry)
    assert QueueMetrics.for_queue("a", registry) is not QueueMetrics.for_queue("b", registry)


def test_registry_returns_the_cached_metric_and_refuses_a_different_one() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("foyle_lines_total", "Lines read.", ("file",))

    assert registry.counter("foyle_lines_total", "Lines read.", ("file",)) is counter
    with pytest.raises(ValueError):
        registry.gauge("foyle_lines_total", "Lines read.", ("file",))
    with pytest.raises(ValueError):
        registry.counter("foyle_lines_total", "Lines read.", ("node",))

    counter.labels("x").inc(2)
    assert registry.value("foyle_lines_total", {"file": "x"}) == 2
    assert b'foyle_lines_total{file="x"} 2.0' in registry.render()


def test_a_delayed_item_leaves_the_queue_settled_but_not_idle() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("settled", clock=clock)
    queue.add_after("later", 600)
    assert queue.is_settled() and not queue.is_idle()
    queue.add("now")
    assert not queue.is_settled()
    item, _ = queue.get()
    assert item == "now" and not queue.is_settled()
    queue.done(item)
    assert queue.is_settled()
    clock.advance(600)
    assert not queue.is_settled(), "the delayed item is due"
    queue.shutdown()
