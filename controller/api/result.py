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


class TerminalError(Exception):
    """A failure that retrying cannot fix (e.g. input the embeddings API rejects).

    The worker loop does not retry the key: it counts it, logs it once and
    reports it with the keys given up on. A new hint for the key tries again.
    """


class Unavailable(Exception):
    """A service the reconcile needs is down (e.g. the embeddings API is unreachable).

    Retried with back-off like any failure, but the worker loop does not warn per
    key: whoever watches the service reports the outage once, so a thousand keys
    waiting for one provider make one warning, not a thousand.
    """
