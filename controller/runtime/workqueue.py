"""A work queue of keys with client-go semantics, for threads.

State (all under one lock):

* `queue`: FIFO of items ready to be handed out;
* `dirty`: items that need processing (everything in `queue`, plus items
  re-added while being processed);
* `processing`: items a worker holds between `get()` and `done()`;
* `waiting`: delayed items, a heap of ready times plus each item's earliest
  time; a daemon thread (started by the first delayed add) moves them into
  the queue when due. `get`, `len` and `is_idle` also move due items, so an
  injected clock takes effect as soon as it is advanced.

Rules that follow: an item added many times before it is processed is queued
once (`dirty`); an item is never handed to two workers (`processing`); an
item added while it is processed is queued again by `done()`, and only then.

Shutdown stops promptly: adds are ignored from then on, and `get()` returns
(None, True) at once, even to items still queued, which are dropped. (client-go
hands queued items out until the queue is empty; here every queue entry is a
hint that the pipeline re-derives on start, so dropping them is safe and keeps
shutdown time bounded by the work already in progress.)
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from controller.runtime.ratelimit import RateLimiter, default_controller_rate_limiter

T = TypeVar("T", bound=Hashable)


class _Hooks(Protocol):
    def add(self, item: Hashable) -> None: ...
    def get(self, item: Hashable) -> None: ...
    def done(self, item: Hashable) -> None: ...
    def discard(self, item: Hashable) -> None: ...
    def retry(self) -> None: ...


class _NoMetrics:
    """Stands in for QueueMetrics when the queue is not measured."""

    def add(self, item: Hashable) -> None:
        return None

    def get(self, item: Hashable) -> None:
        return None

    def done(self, item: Hashable) -> None:
        return None

    def discard(self, item: Hashable) -> None:
        return None

    def retry(self) -> None:
        return None


class WorkQueue(Generic[T]):
    """De-duplicating, rate-limited, delaying work queue (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        rate_limiter: RateLimiter | None = None,
        metrics: _Hooks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._limiter = rate_limiter or default_controller_rate_limiter(clock=clock)
        self._metrics: _Hooks = metrics or _NoMetrics()
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # getters wait here
        self._idle_workers = threading.Condition(self._lock)  # drainers wait here
        self._due = threading.Condition(self._lock)  # the delay thread waits here
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._heap: list[tuple[float, int, T]] = []
        self._waiting: dict[T, float] = {}
        self._seq = 0  # heap tie-breaker: items need not be orderable
        self._shutting_down = False
        self._delay_thread: threading.Thread | None = None

    # -- adding -------------------------------------------------------------

    def add(self, item: T) -> None:
        with self._lock:
            self._add_locked(item)

    def add_after(self, item: T, delay: float) -> None:
        """Add `item` after `delay` seconds; if it already waits, the earlier time wins."""
        if delay <= 0:
            self.add(item)
            return
        with self._lock:
            if self._shutting_down:
                return
            # client-go counts every delayed add as a retry (AddAfter), so do we.
            self._metrics.retry()
            ready_at = self._clock() + delay
            if item in self._waiting and self._waiting[item] <= ready_at:
                return
            self._waiting[item] = ready_at
            self._seq += 1
            heapq.heappush(self._heap, (ready_at, self._seq, item))
            self._start_delay_thread_locked()
            if self._heap[0][1] == self._seq:  # the new entry is the earliest
                self._due.notify()

    def add_rate_limited(self, item: T) -> None:
        """Add `item` once the rate limiter allows it (back-off after a failure)."""
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: T) -> None:
        """The item succeeded: reset its back-off."""
        self._limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._limiter.num_requeues(item)

    # -- processing ---------------------------------------------------------

    def get(self, timeout: float | None = None) -> tuple[T | None, bool]:
        """Block for the next item: (item, False), (None, True) on shutdown, (None, False) on timeout.

        The caller must call `done(item)` when it has finished with the item.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._shutting_down:
                    return None, True
                self._promote_due_locked()
                if self._queue:
                    item = self._queue.popleft()
                    self._dirty.discard(item)
                    self._processing.add(item)
                    self._metrics.get(item)
                    return item, False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None, False
                self._ready.wait(remaining)

    def done(self, item: T) -> None:
        """The worker has finished `item`; if it was re-added meanwhile, queue it again."""
        with self._lock:
            if item not in self._processing:
                raise ValueError(f"done({item!r}) for an item that is not being processed")
            self._processing.remove(item)
            self._metrics.done(item)
            if item in self._dirty and not self._shutting_down:
                self._queue.append(item)
                self._ready.notify()
            if not self._processing:
                self._idle_workers.notify_all()

    # -- state --------------------------------------------------------------

    def len(self) -> int:
        """Items ready to be handed out (not the delayed or in-progress ones)."""
        with self._lock:
            self._promote_due_locked()
            return len(self._queue)

    def __len__(self) -> int:
        return self.len()

    def is_idle(self) -> bool:
        """Nothing queued, waiting for its time, or being processed."""
        with self._lock:
            self._promote_due_locked()
            return not (self._queue or self._waiting or self._processing)

    def is_settled(self) -> bool:
        """Nothing queued or being processed; delayed items ("look again at T") may wait."""
        with self._lock:
            self._promote_due_locked()
            return not (self._queue or self._processing)

    def shutting_down(self) -> bool:
        with self._lock:
            return self._shutting_down

    # -- shutdown -----------------------------------------------------------

    def shutdown(self) -> None:
        """Ignore further adds, drop queued and delayed items, and release every getter."""
        with self._lock:
            self._shutdown_locked()

    def shutdown_with_drain(self, timeout: float | None = None) -> bool:
        """Shut down, then wait until the items being processed are done; True if they are."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._shutdown_locked()
            while self._processing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle_workers.wait(remaining)
            return True

    # -- internals (call with the lock held) --------------------------------

    def _add_locked(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        self._metrics.add(item)
        if item in self._processing:
            return  # done() queues it again
        self._queue.append(item)
        self._ready.notify()

    def _promote_due_locked(self) -> None:
        """Move delayed items whose time has come into the queue, earliest first."""
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            ready_at, _, item = heapq.heappop(self._heap)
            if self._waiting.get(item) == ready_at:  # else a superseded, later entry
                del self._waiting[item]
                self._add_locked(item)

    def _shutdown_locked(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        for item in self._dirty:
            self._metrics.discard(item)
        self._dirty.clear()
        self._queue.clear()
        self._heap.clear()
        self._waiting.clear()
        self._ready.notify_all()
        self._due.notify_all()
        self._idle_workers.notify_all()

    def _start_delay_thread_locked(self) -> None:
        if self._delay_thread is None:
            self._delay_thread = threading.Thread(
                target=self._delay_loop, name=f"workqueue-{self.name}-delay", daemon=True
            )
            self._delay_thread.start()

    def _delay_loop(self) -> None:
        """Promote delayed items when due; sleeps until the next one or a new earlier one."""
        with self._lock:
            while not self._shutting_down:
                self._promote_due_locked()
                wait = self._heap[0][0] - self._clock() if self._heap else None
                self._due.wait(wait)
