"""One token bucket, for the API client's request rate and the work queues' overall rate.

client-go has the same bucket in two places (flowcontrol's token bucket for
requests, the work queue's BucketRateLimiter); here both use this one.
`burst` takes go at once; after that one per 1/qps seconds. A caller that
finds no token reserves the next one (the bucket goes negative) and is told
how long until it exists, so concurrent callers are spaced out rather than
released together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """A blocking token bucket, like client-go's flowcontrol.NewTokenBucketRateLimiter.

    `burst` requests go at once; after that one request per 1/qps seconds. A caller
    that finds no token reserves the next one and sleeps until it exists, so
    concurrent callers are spaced out rather than released together.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be positive and burst at least 1")
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; returns how many seconds the caller must wait for it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self._qps)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
