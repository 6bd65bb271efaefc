"""The generic manager: runs any controllers and timers, knows no pipeline."""

from __future__ import annotations

import threading

from controller.api.result import Outcome
from controller.runtime.controller import Controller
from controller.runtime.manager import Manager
from controller.runtime.metrics import MetricsRegistry
from tests.cli_helpers import wait_for


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, keys: list[str]) -> Outcome:
        with self.lock:
            self.seen.extend(keys)
        return Outcome()


def test_run_until_idle_runs_the_hooks_and_every_key_they_queue() -> None:
    manager = Manager(MetricsRegistry())
    recorder = Recorder()
    controller = manager.add(Controller("things", recorder, manager.registry))
    queue_three = lambda: [controller.add(k) for k in ("a", "b", "c")]  # noqa: E731

    assert manager.run_until_idle(queue_three, timeout=10)
    manager.stop(timeout=1)
    assert sorted(recorder.seen) == ["a", "b", "c"]


def test_ready_once_the_condition_holds_and_every_controller_settled() -> None:
    manager = Manager(MetricsRegistry())
    recorder = Recorder()
    controller = manager.add(Controller("things", recorder, manager.registry))
    gate = threading.Event()
    manager.ready_when(gate.is_set, "gate open")
    ticks = threading.Event()
    manager.every(0.01, ticks.set, "tick")

    manager.start(lambda: controller.add("a"))
    wait_for(ticks.is_set, 10, "a timer tick")
    wait_for(lambda: recorder.seen == ["a"], 10, "the hook's key")
    assert not manager.ready
    gate.set()
    wait_for(lambda: manager.ready, 10, "readiness")
    assert manager.stop(timeout=1)


def test_a_failing_timer_is_logged_and_runs_again() -> None:
    manager = Manager(MetricsRegistry())
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise OSError("disk full")

    manager.every(0.01, failing, "flaky")
    manager.start()
    wait_for(lambda: len(calls) >= 3, 10, "three runs of a failing timer")
    manager.stop(timeout=1)
