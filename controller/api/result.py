"""What a reconcile asks of the worker loop that called it: the one reconciler contract.

Every reconciler is `reconcile(keys: list[str]) -> Outcome` (controller-runtime
has one `Reconcile`, too; ours takes a batch because every stage works
set-wise). The worker loop alone acts on the Outcome: it forgets the keys that
are done, re-adds or delays the others, retries the failed ones with back-off
(never a `TerminalError`), and marks and queues the keys handed downstream.
Reconcilers never sleep, re-add themselves or touch another stage's queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Result:
    """What comes next for one key: `requeue`: again at once (more work left);
    `requeue_after`: look again in N seconds. The default, DONE, is nothing."""

    requeue: bool = False
    requeue_after: float | None = None


DONE = Result()


@dataclass
class Outcome:
    """What the reconcile of a batch came to. A key it does not name is done.

    `results`: the keys with more to come (a `Result` other than DONE);
    `failed`: the keys whose reconcile failed, with the error (the others' work
    stands, and so does what a failed key wrote before failing: reconciles are
    level-triggered, so its retry converges from there);
    `downstream`: queue name -> keys that stage must look at now.
    Raising instead fails the whole batch: its unit of work rolls back and each
    key runs again on its own.
    """

    results: dict[str, Result] = field(default_factory=dict)
    failed: dict[str, Exception] = field(default_factory=dict)
    downstream: dict[str, set[str]] = field(default_factory=dict)

    def set_result(self, key: str, result: Result) -> None:
        if result == DONE:
            self.results.pop(key, None)
        else:
            self.results[key] = result

    def result(self, key: str) -> Result:
        return self.results.get(key, DONE)

    def hand_on(self, stage: str, keys: Iterable[str]) -> None:
        """Ask `stage` to look at `keys` (the worker loop marks them durably and queues them)."""
        keys = set(keys)
        if keys:
            self.downstream.setdefault(stage, set()).update(keys)


class TerminalError(Exception):
    """A failure that retrying cannot fix (e.g. input the embeddings API rejects).

    The worker loop does not retry the key: it counts it, logs it once and
    reports it with the keys given up on. A new hint for the key tries again.
    """
