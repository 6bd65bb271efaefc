"""`foylectl run` as a real subprocess: watching, freshness, shutdown, restart, metrics, watch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from controller.store.journal import Journal
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import RunningController, free_port, wait_for

RUNME_BLOCK = "01HF7B0KJM3HHFDVSX9YFTZ8PE"


def renamed_session(testdata: Path, suffix: str) -> list[bytes]:
    """The RunMe sample's lines with a fresh trace id and block id (a new execution)."""
    text = (testdata / "runme_traces_lines.jsonl").read_text()
    text = text.replace("01HYRKRJETPVQA84VQR9AR6J30", f"01HYRKRJETPVQA84VQR9AR{suffix}")
    text = text.replace(RUNME_BLOCK, f"01HF7B0KJM3HHFDVSX9YFT{suffix}")
    return [line.encode() + b"\n" for line in text.splitlines()]


def blocklog_ids(store: SQLiteStore) -> set[str]:
    return {o["spec"]["id"] for o in store.list("BlockLog")}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def start(tmp_path: Path, testdata: Path, *extra: str) -> tuple[Path, Path, RunningController]:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir(exist_ok=True)
    if not (logs / "runme_traces_lines.jsonl").exists():
        shutil.copy(testdata / "runme_traces_lines.jsonl", logs)
    return logs, state, RunningController(logs, state, *extra)


def start_with_metrics(
    tmp_path: Path, testdata: Path
) -> tuple[Path, SQLiteStore, RunningController, int]:
    """`run` serving /metrics, once ready: its log dir, its store (read-only use), port."""
    port = free_port()
    logs, state, run = start(tmp_path, testdata, "--metrics-addr", f"127.0.0.1:{port}")
    wait_for(lambda: ready(port), 30, "readiness")
    return logs, SQLiteStore(state / "store.db"), run, port


def test_appended_session_appears_as_a_blocklog_readable_from_another_process(
    tmp_path: Path, testdata: Path
) -> None:
    logs, state, run = start(tmp_path, testdata)
    try:
        wait_for(lambda: (state / "store.db").exists(), 20, "the store")
        store = SQLiteStore(state / "store.db")
        wait_for(lambda: RUNME_BLOCK in blocklog_ids(store), 20, "the initial scan")
        lines = renamed_session(testdata, "AAAA")
        with open(logs / "runme_traces_lines.jsonl", "ab") as f:
            f.write(b"\n")  # the sample ends without a newline
            for line in lines:
                f.write(line)
                f.flush()
        new_block = "01HF7B0KJM3HHFDVSX9YFTAAAA"
        blocklog = wait_for(
            lambda: next((o for o in store.list("BlockLog") if o["spec"]["id"] == new_block), None),
            30,
            "the appended execution's block log",
        )
        wait_for(
            lambda: (
                store.get("BlockLog", blocklog["metadata"]["name"])["status"].get("exitCode") == 0
            ),
            30,
            "its status",
        )
        # A new file created after start is picked up too.
        (logs / "sub").mkdir()
        (logs / "sub" / "later.jsonl").write_bytes(b"".join(renamed_session(testdata, "BBBB")))
        wait_for(
            lambda: "01HF7B0KJM3HHFDVSX9YFTBBBB" in blocklog_ids(store), 30, "a file created later"
        )
    finally:
        assert run.terminate() == 0, run.output()


def test_sigterm_exits_0_promptly_and_a_restart_rereads_nothing(
    tmp_path: Path, testdata: Path
) -> None:
    logs, state, run = start(tmp_path, testdata)
    wait_for(lambda: (state / "store.db").exists(), 20, "the store")
    store = SQLiteStore(state / "store.db")
    wait_for(lambda: RUNME_BLOCK in blocklog_ids(store), 20, "the initial scan")
    assert run.terminate(timeout=10) == 0, run.output()
    journal = Journal(state / "journal.db")
    before = journal.counts()
    versions = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in store.list("Trace")
    }

    port = free_port()
    run = RunningController(logs, state, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: ready(port), 20, "readiness after restart")
        assert journal.counts()["entries"] == before["entries"]
        assert journal.counts()["files"] == before["files"]
        after = {
            o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in store.list("Trace")
        }
        assert after == versions, "a restart rewrote traces"
    finally:
        assert run.terminate() == 0, run.output()


def test_metrics_health_and_readiness_endpoints(tmp_path: Path, testdata: Path) -> None:
    port = free_port()
    _, _, run = start(tmp_path, testdata, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: ready(port), 20, "readiness")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        for name in (
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_queue_duration_seconds",
            "workqueue_work_duration_seconds",
            "workqueue_unfinished_work_seconds",
            "workqueue_longest_running_processor_seconds",
            "workqueue_retries_total",
        ):
            assert (
                f'{name}{{name="logfile"}}' in text or f'{name}_count{{name="logfile"}}' in text
            ), name
        assert 'workqueue_adds_total{name="trace"}' in text
    finally:
        assert run.terminate() == 0, run.output()


def test_get_watch_prints_blocklogs_as_run_creates_them(tmp_path: Path, testdata: Path) -> None:
    logs, state, run = start(tmp_path, testdata)
    watcher = None
    try:
        wait_for(lambda: (state / "store.db").exists(), 20, "the store")
        store = SQLiteStore(state / "store.db")
        wait_for(lambda: RUNME_BLOCK in blocklog_ids(store), 20, "the initial scan")
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "get",
                "bl",
                "-w",
                "-o",
                "name",
                "--state-dir",
                str(state),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        first = watcher.stdout.readline()  # the initial list
        assert first.startswith("blocklog.foyle.io/")
        (logs / "new.jsonl").write_bytes(b"".join(renamed_session(testdata, "CCCC")))
        line = watcher.stdout.readline()
        while "01hf7b0kjm3hhfdvsx9yftcccc" not in line:
            assert line, "get -w ended before showing the new block log"
            line = watcher.stdout.readline()
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        assert run.terminate() == 0, run.output()


def test_get_reads_while_run_writes_without_lock_errors(tmp_path: Path, testdata: Path) -> None:
    logs, state, run = start(tmp_path, testdata)
    try:
        wait_for(lambda: (state / "store.db").exists(), 20, "the store")
        store = SQLiteStore(state / "store.db")
        with open(logs / "busy.jsonl", "ab") as f:
            for i in range(40):
                for line in renamed_session(testdata, f"D{i:03d}"):
                    f.write(line)
                f.flush()
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "controller",
                        "get",
                        "traces",
                        "-o",
                        "json",
                        "--state-dir",
                        str(state),
                    ],
                    capture_output=True,
                    text=True,
                )
                assert proc.returncode == 0, proc.stderr
                json.loads(proc.stdout)
        wait_for(
            lambda: "01HF7B0KJM3HHFDVSX9YFTD039" in blocklog_ids(store), 20, "the last session"
        )
    finally:
        assert run.terminate() == 0, run.output()


def reconciles(port: int, controller: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'controller_reconcile_total{{controller="{controller}"}}'):
                return float(line.split()[-1])
    return 0.0


def test_reading_a_file_does_not_wake_the_watcher_again(tmp_path: Path, testdata: Path) -> None:
    """inotify reports our own open/close: reacting to them would re-read files forever."""
    logs, store, run, port = start_with_metrics(tmp_path, testdata)
    try:
        before = reconciles(port, "logfile")
        (logs / "one.jsonl").write_bytes(b"".join(renamed_session(testdata, "EEEE")))
        wait_for(lambda: "01HF7B0KJM3HHFDVSX9YFTEEEE" in blocklog_ids(store), 30, "the new file")
        after = reconciles(port, "logfile")
        assert after - before < 10, f"{after - before} logfile reconciles for one new file"
    finally:
        assert run.terminate() == 0, run.output()


def test_ready_while_an_unfinished_trace_waits_for_its_abandonment_check(
    tmp_path: Path, testdata: Path
) -> None:
    """An InProgress trace waits for the abandonment sweep: that is not work to catch up on."""
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = renamed_session(testdata, "FFFF")
    (logs / "unfinished.jsonl").write_bytes(
        b"".join(line for line in lines if b"final response" not in line)
    )
    port = free_port()
    run = RunningController(logs, tmp_path / "state", "--metrics-addr", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: ready(port), 30, "readiness with an InProgress trace")
        store = SQLiteStore(tmp_path / "state" / "store.db")
        (trace,) = store.list("Trace")
        assert trace["status"]["phase"] == "InProgress"
    finally:
        assert run.terminate() == 0, run.output()


def test_a_burst_of_appends_costs_a_few_reconciles_not_one_per_event(
    tmp_path: Path, testdata: Path
) -> None:
    logs, store, run, port = start_with_metrics(tmp_path, testdata)
    try:
        before = reconciles(port, "logfile")
        sessions = [renamed_session(testdata, f"G{i:03d}") for i in range(60)]
        with open(logs / "burst.jsonl", "ab") as f:
            for lines in sessions:
                for line in lines:  # one write (and one inotify event) per line
                    f.write(line)
                    f.flush()
        writes = sum(len(lines) for lines in sessions)
        wait_for(lambda: "01HF7B0KJM3HHFDVSX9YFTG059" in blocklog_ids(store), 30, "the last one")
        spent = reconciles(port, "logfile") - before
        assert spent < writes / 10, f"{spent} logfile reconciles for {writes} appended lines"
    finally:
        assert run.terminate() == 0, run.output()
