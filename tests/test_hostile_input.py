"""Hostile input never stalls the controller (issue 13, items 1-5).

Each test writes what a hostile or broken writer could put behind a `*.jsonl`
name, followed by a good trace, and runs the real `foylectl analyze` with a
deadline: it must end, count the bad input as bad lines or skipped paths, and
still read everything good.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from controller.logs.framing import MAX_BATCH_LINES, read_batch
from controller.logs.normalise import MAX_DEPTH
from controller.logs.opening import open_log_file
from tests.cli_helpers import RunningController, foylectl, get_json, wait_for

pytestmark = pytest.mark.timeout(120)

EXECUTE = "github.com/jlewi/foyle/app/pkg/executor.(*Executor).Execute"
GOOD_ID = "b" * 32
DEADLINE = 60  # seconds any one analyze may take; each takes about one


def execute_lines(
    trace_id: str, *, time_: object = 1713303870.4, exit_text: str = "exitCode: 0"
) -> bytes:
    """A complete Foyle Execute trace: the request line and the response line."""
    request = {
        "time": time_,
        "function": EXECUTE,
        "message": "Executor.Execute",
        "traceId": trace_id,
        "request": {"block": {"kind": "CODE", "contents": "ls\n", "id": "cell-1"}},
    }
    response = {
        "time": 1713303872.5,
        "function": EXECUTE,
        "message": "Executed instructions",
        "traceId": trace_id,
        "response": {"outputs": [{"items": [{"mime": "text/plain", "text_data": exit_text}]}]},
    }
    return orjson.dumps(request) + b"\n" + orjson.dumps(response) + b"\n"


def nested_line(trace_id: str, depth: int) -> bytes:
    """An Execute request whose payload nests `depth` objects deep (orjson reads 1024)."""
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    head = orjson.dumps({"time": 1713303870.4, "function": EXECUTE, "traceId": trace_id})
    return head[:-1] + b',"request":' + payload + b"}\n"


def analyze(logs: Path, state: Path, *extra: str) -> tuple[int, str, str]:
    started = time.monotonic()
    proc = foylectl(
        "analyze",
        "--logs",
        logs,
        "--state-dir",
        state,
        "--no-learn",
        "--no-progress",
        *extra,
        check=False,
        timeout=DEADLINE,
    )
    assert time.monotonic() - started < DEADLINE
    return proc.returncode, proc.stdout, proc.stderr


def trace_ids(state: Path) -> set[str]:
    return {t["spec"]["id"] for t in get_json(state, "traces")}


def logfile_paths(state: Path) -> set[str]:
    return {lf["spec"]["path"] for lf in get_json(state, "logfiles")}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


# -- issue 24, item 6: memory follows bytes, not lines ------------------------------------


def test_a_batch_of_tiny_lines_stops_at_its_line_bound_and_the_next_goes_on() -> None:
    data = b"\n" * (MAX_BATCH_LINES * 2 + 5)
    first = read_batch(io.BytesIO(data), 0, max_bytes=1 << 20)
    assert (first.lines, len(first.bad), first.next_offset) == (MAX_BATCH_LINES,) * 3
    second = read_batch(io.BytesIO(data), first.next_offset, max_bytes=1 << 20)
    assert second.lines == MAX_BATCH_LINES


@pytest.mark.parametrize("line", ["", "{}"], ids=["blank-lines", "empty-objects"])
def test_peak_memory_of_analyze_follows_bytes_not_lines(line: str) -> None:
    """2 MiB of tiny lines (2 million objects per batch before: 300 MB) stays small."""
    proc = subprocess.run(
        [sys.executable, "hack/line_shape_rss.py", "--mib", "2", "--line", line],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        timeout=DEADLINE,
        check=True,
    )
    figures = orjson.loads(proc.stdout)
    assert figures["exit"] == 0
    assert figures["peak_rss_mb"] < 150, figures


# -- 1. a line that parses but cannot be written again ----------------------------------


def test_line_nested_past_the_write_depth_is_one_bad_line_and_the_file_goes_on(
    tmp_path: Path, logs: Path
) -> None:
    (logs / "x.jsonl").write_bytes(nested_line("a" * 32, 300) + execute_lines(GOOD_ID))

    rc, out, err = analyze(logs, tmp_path / "state")

    assert rc == 0, err
    assert "3 lines, 1 bad line" in out
    assert trace_ids(tmp_path / "state") == {GOOD_ID}


@pytest.mark.parametrize(("depth", "good"), [(MAX_DEPTH - 8, True), (MAX_DEPTH + 8, False)])
def test_framing_keeps_lines_within_the_depth_limit_and_counts_deeper_ones_bad(
    depth: int, good: bool
) -> None:
    data = nested_line("a" * 32, depth) + execute_lines(GOOD_ID)

    batch = read_batch(io.BytesIO(data), 0)

    assert batch.lines == 3
    assert [b.reason for b in batch.bad] == ([] if good else ["too-deep"])
    assert len(batch.entries) == (3 if good else 2)


# -- 2. values no resource can hold ------------------------------------------------------


def test_times_and_exit_codes_out_of_range_do_not_stall_their_trace(
    tmp_path: Path, logs: Path
) -> None:
    far = "c" * 32
    huge_exit = "d" * 32
    (logs / "x.jsonl").write_bytes(
        execute_lines(far, time_=1e300)
        + execute_lines("e" * 32, time_=253402300800)  # the first second of year 10000
        + execute_lines(huge_exit, exit_text="exitCode: " + "9" * 35)
        + execute_lines(GOOD_ID)
    )

    rc, _, err = analyze(logs, tmp_path / "state")

    assert rc == 0, err
    traces = {t["spec"]["id"]: t for t in get_json(tmp_path / "state", "traces")}
    assert set(traces) == {far, "e" * 32, huge_exit, GOOD_ID}
    assert traces[far]["spec"]["startTime"].startswith("1970-01-01")  # an absent time
    assert "exitCode" not in traces[huge_exit]["spec"]
    assert traces[GOOD_ID]["spec"]["exitCode"] == 0


# -- 3. a reconcile that keeps failing ---------------------------------------------------


def test_analyze_gives_up_on_a_key_that_keeps_failing_and_exits_1_with_a_summary(
    tmp_path: Path, logs: Path
) -> None:
    state = tmp_path / "state"
    assert analyze(logs, state)[0] == 0  # an empty store
    with sqlite3.connect(state / "store.db") as db:  # a garbage object where the trace goes
        db.execute(
            "INSERT INTO changes (rv, kind, name, type, body)"
            " VALUES (1000000, 'Trace', ?, 'ADDED', '{garbage')",
            (GOOD_ID,),
        )
        db.execute("INSERT INTO objects VALUES ('Trace', ?, 1000000)", (GOOD_ID,))
    (logs / "x.jsonl").write_bytes(execute_lines("a" * 32) + execute_lines(GOOD_ID))

    rc, out, err = analyze(logs, state)

    assert rc == 1
    assert "analyzed 1 file" in out
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("foylectl: error: 1 item could not be processed")
    assert f"trace {GOOD_ID}, failed 6 times: " in summary
    assert "JSON" in summary.split("failed 6 times: ")[1]  # the cause: the garbage object
    assert "Traceback" not in err


# -- 4. paths that are no regular files ----------------------------------------------------


def test_fifo_and_devices_behind_a_log_name_are_reported_once_and_never_read(
    tmp_path: Path, logs: Path
) -> None:
    os.mkfifo(logs / "fifo.jsonl")
    (logs / "zero.jsonl").symlink_to("/dev/zero")
    (logs / "random.json").symlink_to("/dev/urandom")
    (logs / "good.jsonl").write_bytes(execute_lines(GOOD_ID))
    state = tmp_path / "state"

    # Allowed to leave the log dir, the links still lead to no regular file.
    rc, out, err = analyze(logs, state, "--follow-symlinks-anywhere")

    assert rc == 0, err
    assert "analyzed 1 file" in out
    assert logfile_paths(state) == {str(logs / "good.jsonl")}
    assert trace_ids(state) == {GOOD_ID}
    assert err.count("not reading") == 3
    assert "fifo.jsonl: not a regular file (a FIFO)" in err
    assert "zero.jsonl: not a regular file (a character device)" in err


def test_run_with_a_fifo_in_the_log_dir_reads_the_rest_and_stops_promptly(
    tmp_path: Path, logs: Path
) -> None:
    os.mkfifo(logs / "fifo.jsonl")
    (logs / "good.jsonl").write_bytes(execute_lines(GOOD_ID))
    state = tmp_path / "state"
    run = RunningController(logs, state)
    try:
        wait_for(lambda: "caught up" in run.output(), 30, "readiness")
        assert trace_ids(state) == {GOOD_ID}
    finally:
        started = time.monotonic()
        assert run.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert run.output().count("not reading") == 1


# -- 5. symlinks out of the log dir ---------------------------------------------------------


def test_symlink_out_of_the_log_dir_is_skipped_unless_allowed(tmp_path: Path, logs: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.json"
    secret.parent.mkdir()
    secret.write_bytes(execute_lines("5" * 32))
    (logs / "x.jsonl").symlink_to(secret)
    (logs / "inside.jsonl").symlink_to(logs / "sub" / "real.log")
    (logs / "sub").mkdir()
    (logs / "sub" / "real.log").write_bytes(execute_lines(GOOD_ID))

    rc, _, err = analyze(logs, tmp_path / "confined")

    assert rc == 0, err
    assert f"x.jsonl: a symlink to {secret}, outside the watched directories" in err
    assert trace_ids(tmp_path / "confined") == {GOOD_ID}  # a link inside the dir is followed

    rc, _, err = analyze(logs, tmp_path / "anywhere", "--follow-symlinks-anywhere")

    assert rc == 0, err
    assert trace_ids(tmp_path / "anywhere") == {GOOD_ID, "5" * 32}


def test_files_read_before_from_other_log_dirs_are_no_symlinks_to_skip(
    tmp_path: Path, logs: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "old.jsonl").write_bytes(execute_lines("6" * 32))
    state = tmp_path / "state"
    assert analyze(other, state)[0] == 0
    (logs / "new.jsonl").write_bytes(execute_lines(GOOD_ID))

    rc, _, err = analyze(logs, state)

    assert rc == 0, err
    assert "not reading" not in err
    assert trace_ids(state) == {"6" * 32, GOOD_ID}


def test_a_dir_dropped_from_the_log_dirs_is_no_longer_tailed(tmp_path: Path, logs: Path) -> None:
    """Issue 24, item 9: after a restart with other dirs, a dropped dir's files are not read."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "old.jsonl").write_bytes(execute_lines("6" * 32))
    state = tmp_path / "state"
    assert analyze(other, state)[0] == 0
    with (other / "old.jsonl").open("ab") as f:
        f.write(execute_lines("7" * 32))  # written after the dir was dropped
    (logs / "new.jsonl").write_bytes(execute_lines(GOOD_ID))

    rc, _, err = analyze(logs, state)

    assert rc == 0, err
    assert trace_ids(state) == {"6" * 32, GOOD_ID}


def test_a_directory_swapped_for_a_symlink_while_opened_never_leads_outside(
    tmp_path: Path, logs: Path
) -> None:
    """Issue 24, item 8: the check-then-open race on an intermediate directory."""
    outside = tmp_path / "outside" / "sub"
    outside.mkdir(parents=True)
    (outside / "x.jsonl").write_bytes(b"SECRET\n")
    inner = logs / "sub"
    inner.mkdir()
    (inner / "x.jsonl").write_bytes(b"inside\n")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            inner.rename(logs / "sub.real")
            inner.symlink_to(outside)
            inner.unlink()
            (logs / "sub.real").rename(inner)

    swapper = threading.Thread(target=swap)
    swapper.start()
    read: Counter[bytes] = Counter()
    try:
        for _ in range(3000):
            try:
                with open_log_file(
                    str(inner / "x.jsonl"), [str(logs)], symlinks_anywhere=False
                ) as f:
                    read[f.read()] += 1
            except OSError:  # missing mid-swap, or refused: never read
                read[b"refused"] += 1
    finally:
        stop.set()
        swapper.join()
    assert read[b"SECRET\n"] == 0, read
    with open_log_file(str(inner / "x.jsonl"), [str(logs)], symlinks_anywhere=False) as f:
        assert f.read() == b"inside\n"  # once the dir stays put, the file is read
