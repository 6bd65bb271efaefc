"""What a reconcile asks of the worker loop that called it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """`requeue`: run again at once (more work left); `requeue_after`: look again in N seconds.

    Reconcilers never sleep or re-add themselves: only the worker loop decides
    (controller-runtime's reconcile.Result).
    """

    requeue: bool = False
    requeue_after: float | None = None


DONE = Result()
