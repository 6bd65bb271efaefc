"""`foylectl get -w` that fell behind the kept history prints what it missed (issue 24, item 5).

A real `get -w` process is stopped (SIGSTOP) while more changes are written
than the store keeps; resumed, its watch is Gone. It must re-list and print
the objects changed since the last version it printed, as kubectl's watch
does, not drop them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import wait_for
from tests.store_contract import _trace

pytestmark = pytest.mark.timeout(60)


def test_a_watch_resumed_after_its_history_was_pruned_prints_what_changed(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = SQLiteStore(state / "store.db", keep_changes=5)  # the writer prunes its history
    store.create(_trace("before"))
    out = tmp_path / "watch.out"
    with out.open("wb") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "controller", "get", "traces", "-w", "-o", "name"]
            + ["--state-dir", str(state)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "/before" in out.read_text(), 30, "the first listing")
        watcher.send_signal(signal.SIGSTOP)
        for n in range(50):  # ten times what the store keeps
            store.create(_trace(f"during-{n}"))
        watcher.send_signal(signal.SIGCONT)
        wait_for(
            lambda: all(f"/during-{n}\n" in out.read_text() for n in range(50)),
            30,
            "every trace written while the watch was stopped",
        )
        assert out.read_text().count("/before\n") == 1  # nothing printed twice
    finally:
        watcher.kill()
        watcher.wait()
        store.close()
