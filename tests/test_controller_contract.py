"""The one reconciler contract (issue 21): `reconcile(keys) -> Outcome`, with the worker loop
owning retries, requeues and the durable dirty marks, on a real journal (SQLite)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from controller.api.result import Outcome, Result, TerminalError
from controller.runtime.controller import Controller, Downstream
from controller.runtime.metrics import MetricsRegistry
from controller.store.journal import BLOCKLOGS, TRACES, Journal
from tests.cli_helpers import wait_for


class Scripted:
    """A reconcile whose Outcome per key is scripted; it records every batch it was given."""

    def __init__(self, script: dict[str, str] | None = None) -> None:
        self.script = script or {}
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, keys: list[str]) -> Outcome:
        with self.lock:
            self.batches.append(list(keys))
        outcome = Outcome()
        for key in keys:
            what = self.script.get(key, "done")
            if what == "raise":
                raise RuntimeError(f"{key} breaks the batch")
            if what == "fail":
                outcome.failed[key] = ValueError(f"{key} failed")
            elif what == "terminal":
                outcome.failed[key] = TerminalError(f"{key} never works")
            elif what == "later":
                outcome.set_result(key, Result(requeue_after=60))
            outcome.hand_on(BLOCKLOGS, {f"{key}-block"})
        return outcome

    def seen(self) -> list[str]:
        with self.lock:
            return [key for batch in self.batches for key in batch]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.db")
    yield journal
    journal.close()


def _controller(journal: Journal, reconcile: Scripted, downstream: Controller | None) -> Controller:
    controller = Controller(
        "trace",
        reconcile,
        MetricsRegistry(),
        unit=(journal,),
        marks=journal,
        marks_queue=TRACES,
        batch_seconds=0.2,
    )
    controller.connect(BLOCKLOGS, Downstream(BLOCKLOGS, downstream))
    return controller


def _run_batch(controller: Controller, keys: list[str]) -> None:
    """Queue `keys` before any worker starts, so they are taken as one batch."""
    for key in keys:
        controller.add(key)
    controller.start()


def test_a_key_failing_alone_keeps_its_mark_and_is_retried_while_the_batch_stands(
    journal: Journal,
) -> None:
    reconcile = Scripted({"b": "fail"})
    blocklogs = Controller("blocklog", Scripted(), MetricsRegistry())
    trace = _controller(journal, reconcile, blocklogs)
    journal.mark_dirty(TRACES, ["a", "b", "c"])

    _run_batch(trace, ["a", "b", "c"])
    wait_for(lambda: reconcile.seen().count("b") >= 2, 10, "b retried")
    trace.stop(timeout=1)

    assert reconcile.batches[0] == ["a", "b", "c"]  # one call for the batch
    assert "a" not in reconcile.seen()[3:] and "c" not in reconcile.seen()[3:]
    assert journal.dirty_keys(TRACES) == ["b"]  # the others' marks were cleared
    # every key's downstream work was marked durably and queued, the failed one's too
    assert sorted(journal.dirty_keys(BLOCKLOGS)) == ["a-block", "b-block", "c-block"]
    wait_for(lambda: {"a-block", "c-block"} <= set(_taken(blocklogs)), 10, "downstream queued")


def _taken(controller: Controller) -> list[str]:
    """Keys waiting in a controller's queue (it is not started)."""
    keys = []
    while len(controller.queue):
        key, _ = controller.queue.get(timeout=0)
        if key is not None:
            keys.append(key)
            controller.queue.done(key)
    return keys


def test_a_raising_batch_rolls_back_and_each_key_runs_alone(journal: Journal) -> None:
    reconcile = Scripted({"b": "raise"})
    trace = _controller(journal, reconcile, None)
    journal.mark_dirty(TRACES, ["a", "b", "c"])

    _run_batch(trace, ["a", "b", "c"])
    wait_for(lambda: reconcile.seen().count("b") >= 3, 10, "b alone, then retried")
    trace.stop(timeout=1)

    assert reconcile.batches[0] == ["a", "b", "c"]
    assert ["a"] in reconcile.batches and ["c"] in reconcile.batches
    assert journal.dirty_keys(TRACES) == ["b"]
    # the rolled-back batch left no downstream marks of b; a and c made theirs alone
    assert sorted(journal.dirty_keys(BLOCKLOGS)) == ["a-block", "c-block"]


def test_a_terminal_failure_is_given_up_and_a_requeued_key_keeps_its_mark(
    journal: Journal,
) -> None:
    reconcile = Scripted({"t": "terminal", "l": "later"})
    trace = _controller(journal, reconcile, None)
    journal.mark_dirty(TRACES, ["t", "l", "d"])

    _run_batch(trace, ["t", "l", "d"])
    wait_for(lambda: any(f.gave_up for f in trace.failing()), 10, "giving t up")
    trace.stop(timeout=1)

    assert reconcile.seen().count("t") == 1  # never retried
    assert sorted(journal.dirty_keys(TRACES)) == ["l", "t"]  # only d is finished
    assert [f.key for f in trace.failing()] == ["t"]


def test_a_mark_set_while_the_batch_ran_survives_it(journal: Journal) -> None:
    def remark_during(keys: list[str]) -> Outcome:
        journal.mark_dirty(TRACES, ["a"])  # new lines for a arrive meanwhile
        return Outcome()

    trace = Controller(
        "trace",
        remark_during,
        MetricsRegistry(),
        unit=(journal,),
        marks=journal,
        marks_queue=TRACES,
    )
    journal.mark_dirty(TRACES, ["a"])
    trace.process(["a"])
    assert journal.dirty_keys(TRACES) == ["a"]


def test_marking_a_downstream_queue_needs_marks() -> None:
    unmarked = Controller("trace", Scripted(), MetricsRegistry())
    with pytest.raises(ValueError, match="no DirtyMarks"):
        unmarked.connect(BLOCKLOGS, Downstream(BLOCKLOGS, None))
