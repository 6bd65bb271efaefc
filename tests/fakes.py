"""Test doubles at our own boundaries: a clock the test moves by hand."""

from __future__ import annotations


class FakeClock:
    """A clock for injection (`clock=`): it moves only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
