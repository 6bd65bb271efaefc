"""Rate limiters: per-item exponential back-off, the token bucket, and their maximum."""

from __future__ import annotations

import pytest

from controller.runtime.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from tests.fakes import FakeClock


def test_backoff_doubles_from_5ms_and_is_capped() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=0.04)

    delays = [limiter.when("a") for _ in range(6)]

    assert delays == [0.005, 0.01, 0.02, 0.04, 0.04, 0.04]
    assert limiter.num_requeues("a") == 6


def test_backoff_is_counted_per_item() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=100.0)
    limiter.when("a")
    limiter.when("a")

    assert limiter.when("b") == 1.0
    assert limiter.num_requeues("a") == 2


def test_forget_resets_backoff() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)
    for _ in range(5):
        limiter.when("a")

    limiter.forget("a")

    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.005


def test_backoff_stays_capped_past_float_range() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)

    delays = [limiter.when("a") for _ in range(1100)]

    assert delays[-1] == 1000.0


def test_bucket_allows_burst_then_spaces_by_qps() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10.0, burst=3, clock=clock)

    delays = [limiter.when(i) for i in range(5)]

    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:] == pytest.approx([0.1, 0.2])


def test_bucket_refills_at_qps_after_reservations() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10.0, burst=3, clock=clock)
    for i in range(5):
        limiter.when(i)  # two tokens reserved beyond the burst

    clock.advance(0.3)  # three tokens: two repay the reservations, one is free

    assert limiter.when("x") == 0.0
    assert limiter.when("y") == pytest.approx(0.1)


def test_bucket_never_holds_more_than_burst() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10.0, burst=2, clock=clock)
    clock.advance(1000.0)

    delays = [limiter.when(i) for i in range(3)]

    assert delays == pytest.approx([0.0, 0.0, 0.1])


def test_bucket_keeps_no_per_item_state() -> None:
    limiter = BucketRateLimiter(qps=1.0, burst=1, clock=FakeClock())
    limiter.when("a")
    limiter.when("a")

    assert limiter.num_requeues("a") == 0


def test_max_of_returns_the_longest_delay_and_forwards_forget() -> None:
    clock = FakeClock()
    backoff = ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=100.0)
    bucket = BucketRateLimiter(qps=0.1, burst=2, clock=clock)
    limiter = MaxOfRateLimiter(backoff, bucket)

    assert limiter.when("a") == 1.0  # back-off 1 s, bucket free
    assert limiter.when("a") == 2.0  # back-off 2 s, bucket free
    assert limiter.when("b") == pytest.approx(10.0)  # back-off 1 s, bucket 10 s
    assert limiter.num_requeues("a") == 2

    limiter.forget("a")

    assert backoff.num_requeues("a") == 0


def test_default_controller_limiter_combines_backoff_and_bucket() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(qps=1.0, burst=2, clock=clock)

    assert limiter.when("a") == 0.005
    assert limiter.when("a") == 0.01
    assert limiter.when("b") == pytest.approx(1.0)  # the bucket is empty


@pytest.mark.parametrize(("qps", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_rejects_impossible_settings(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=qps, burst=burst)
