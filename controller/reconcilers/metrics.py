"""What reconcilers need of a metrics registry, without importing the runtime above them.

`runtime.metrics.MetricsRegistry` fits `Metrics`; a reconciler built without one
counts into `NullCounter`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Counter(Protocol):
    def labels(self, *values: str) -> Counter: ...

    def inc(self, amount: float = 1) -> None: ...


class Metrics(Protocol):
    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Any: ...


class NullCounter:
    """Counts nothing: for a reconciler built without a registry (tests, one-off tools)."""

    def labels(self, *values: str) -> NullCounter:
        return self

    def inc(self, amount: float = 1) -> None:
        pass
