"""The worker loop's retry rules for a key that keeps failing (issue 13, item 3)."""

from __future__ import annotations

import logging
import threading

import pytest

from controller.api.result import Outcome, TerminalError
from controller.pipeline import ONESHOT
from controller.runtime.controller import Controller
from controller.runtime.metrics import MetricsRegistry
from tests.cli_helpers import wait_for


class Flaky:
    """A reconcile that raises for every key until `healed` is set, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.healed = threading.Event()

    def __call__(self, keys: list[str]) -> Outcome:
        self.calls += 1
        if not self.healed.is_set():
            raise ValueError(f"cannot reconcile {keys[0]} (call {self.calls})")
        return Outcome()


def test_oneshot_gives_up_after_a_bounded_number_of_attempts_and_reports_the_first_error() -> None:
    reconcile = Flaky()
    controller = Controller("trace", reconcile, MetricsRegistry(), policy=ONESHOT)
    controller.start()
    controller.add("t1")

    wait_for(lambda: any(f.gave_up for f in controller.failing()), 10, "giving up")
    wait_for(controller.is_idle, 10, "an idle queue")
    controller.stop(timeout=1)

    [failing] = controller.failing()
    assert (failing.key, failing.failures, failing.gave_up) == ("t1", ONESHOT.give_up_after, True)
    assert failing.first_error == "ValueError: cannot reconcile t1 (call 1)"
    assert reconcile.calls == ONESHOT.give_up_after


def test_run_keeps_retrying_a_failing_key_and_reports_it_until_it_succeeds() -> None:
    registry = MetricsRegistry()
    reconcile = Flaky()
    controller = Controller("trace", reconcile, registry)
    controller.start()
    controller.add("t1")
    gauge = {"controller": "trace"}

    wait_for(lambda: reconcile.calls > ONESHOT.give_up_after, 20, "retries past the one-shot bound")
    assert registry.value("controller_failing_keys", gauge) == 1
    assert [f.gave_up for f in controller.failing()] == [False]

    reconcile.healed.set()
    wait_for(lambda: not controller.failing(), 30, "recovery")
    controller.stop(timeout=1)
    assert registry.value("controller_failing_keys", gauge) == 0


def test_a_terminal_error_is_not_retried_but_counted_and_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = MetricsRegistry()
    calls: list[str] = []

    def rejected(keys: list[str]) -> Outcome:
        calls.extend(keys)
        raise TerminalError(f"{keys[0]} can never be learned")

    controller = Controller("example", rejected, registry)
    controller.start()
    with caplog.at_level(logging.WARNING, logger="controller.runtime.controller"):
        controller.add("e1")
        wait_for(lambda: controller.failing() and controller.is_idle(), 10, "giving up")
        controller.add("e1")  # a new hint tries again, and is not logged twice
        wait_for(lambda: len(calls) == 2 and controller.is_idle(), 10, "the second try")
    controller.stop(timeout=1)

    [failing] = controller.failing()
    assert (failing.failures, failing.gave_up) == (2, True)
    assert failing.first_error == "TerminalError: e1 can never be learned"
    terminal = {"controller": "example"}
    assert registry.value("controller_terminal_errors_total", terminal) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "example e1: gave up after 1 failed reconciles: e1 can never be learned"
    ]


def test_an_error_without_a_message_is_named_by_its_type_in_the_retry_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 24: out of memory, the warning said "retrying with back-off: " and nothing."""

    def out_of_memory(keys: list[str]) -> Outcome:
        raise MemoryError

    controller = Controller("logfile", out_of_memory, MetricsRegistry(), policy=ONESHOT)
    with caplog.at_level(logging.WARNING):
        controller.start()
        controller.add("/logs/huge.jsonl")
        wait_for(lambda: any(f.gave_up for f in controller.failing()), 10, "giving up")
        controller.stop(timeout=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(w.endswith(": MemoryError") for w in warnings), warnings


class FullDisk:
    """Every key fails with the one error a full disk gives, until `healed` is set."""

    def __init__(self) -> None:
        self.healed = threading.Event()

    def __call__(self, keys: list[str]) -> Outcome:
        if not self.healed.is_set():
            raise OSError(28, "No space left on device")
        return Outcome()


def test_many_keys_failing_alike_are_one_warning_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reconcile = FullDisk()
    controller = Controller("trace", reconcile, MetricsRegistry(), batch_size=7)
    with caplog.at_level(logging.INFO, logger="controller.runtime.controller"):
        controller.start()
        controller.add_all(f"t{n}" for n in range(50))
        wait_for(lambda: len(controller.failing()) == 50, 20, "every key to fail")
        reconcile.healed.set()
        wait_for(lambda: not controller.failing(), 30, "recovery")
        controller.stop(timeout=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "No space left on device" in warnings[0]
    assert warnings[1] == "trace: 49 more keys failed alike meanwhile"


def test_a_failure_after_a_recovery_is_said_again(caplog: pytest.LogCaptureFixture) -> None:
    reconcile = FullDisk()
    controller = Controller("trace", reconcile, MetricsRegistry())
    with caplog.at_level(logging.WARNING, logger="controller.runtime.controller"):
        controller.start()
        for key in ("t1", "t2"):  # the disk full again soon after it recovered
            reconcile.healed.clear()
            controller.add(key)
            wait_for(lambda k=key: [f.key for f in controller.failing()] == [k], 20, "a failure")
            reconcile.healed.set()
            wait_for(lambda: not controller.failing(), 30, "recovery")
        controller.stop(timeout=1)
    said = [r.getMessage() for r in caplog.records if "No space left" in r.getMessage()]
    assert [m.split(":")[0] for m in said] == ["trace t1", "trace t2"]
