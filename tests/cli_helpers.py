"""Running `foylectl` as a real subprocess, and reading what it stored."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from controller.store.base import strip_server_fields


def run_command(
    argv: list[str], *, check: bool = True, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run a command to completion; with `check`, a failure is an assertion with its stderr."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def foylectl(
    *args: str | Path, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "controller", *map(str, args)]
    return run_command(argv, check=check, timeout=timeout)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for --metrics-addr and the like)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    out = foylectl("get", kind, "-o", "json", "--state-dir", state_dir).stdout
    doc = json.loads(out)
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    return doc["items"]


def comparable(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Resources by name without what the store itself sets (versions, uids, timestamps)."""
    out = {}
    for obj in items:
        clean = strip_server_fields(obj)
        clean.get("status", {}).pop("observedGeneration", None)
        out[obj["metadata"]["name"]] = clean
    return out


def kube_view(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`comparable` for custom resources, beside what analyze's SQLite store holds: without
    the namespace only they have, nor what a BlockLog or Session keeps of its settled
    members (Traces `run --store kube` deleted) to join them again."""
    view = comparable(items)
    for obj in view.values():
        obj["metadata"].pop("namespace", None)
        obj.get("spec", {}).pop("settled", None)
    return view


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.02,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline,
    and with `detail()` (e.g. what the controller logged) so the failure explains itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{said}")
        time.sleep(interval)


_instances = itertools.count()


class RunningController:
    """`foylectl run` as a subprocess, with its stderr kept in a file for failures."""

    def __init__(
        self, log_dir: Path, state_dir: Path, *extra: str, env: dict | None = None
    ) -> None:
        self.log_path = state_dir.parent / f"run-{state_dir.name}-{next(_instances)}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in kill()/terminate()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "run",
                "--logs",
                str(log_dir),
                "--state-dir",
                str(state_dir),
                "--no-learn",
                *extra,
            ],
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def wait_started(self, timeout: float = 30) -> None:
        """Until the controller logged that it started (its signal handlers are in place)."""
        wait_for(
            lambda: "INFO    foylectl: started" in self.output(),
            timeout,
            "start-up",
            detail=self.tail,
        )

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM once started; the exit code."""
        self.wait_started()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        """The last `lines` lines the controller logged, for a failure's message."""
        said = self.output().splitlines()[-lines:]
        return "the controller's last lines:\n" + "\n".join(said)


@contextlib.contextmanager
def running(log_dir: Path, state_dir: Path, *extra: str) -> Iterator[RunningController]:
    """A running controller, killed (stopped by SIGSTOP or not) if the block fails, else
    left for the caller to stop."""
    run = RunningController(log_dir, state_dir, *extra)
    try:
        yield run
    except BaseException:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGCONT)
            run.kill()
        raise
