"""`foylectl analyze / get / describe` end to end: real files, real SQLite, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from controller.analyze.oneshot import analyze as pure_analyze
from controller.logs.framing import read_all
from tests.cli_helpers import comparable, foylectl, get_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from gen_logs import generate  # noqa: E402


def analyzed(tmp_path: Path, *files: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    for f in files:
        shutil.copy(f, logs / f.name)
    state = tmp_path / "state"
    foylectl("analyze", "--logs", logs, "--state-dir", state)
    return state


def by_id(items: list[dict]) -> dict[str, dict]:
    return {o["spec"]["id"]: o for o in items}


def test_generate_trace_gives_one_complete_trace_and_a_blocklog_per_response_block(
    tmp_path: Path, testdata: Path
) -> None:
    state = analyzed(tmp_path, testdata / "generate_trace_lines.jsonl")
    traces = by_id(get_json(state, "traces"))
    assert list(traces) == ["2c4efb9372de3bb51d66d3f7e9c3a76a"]
    trace = traces["2c4efb9372de3bb51d66d3f7e9c3a76a"]
    assert trace["spec"]["kind"] == "Generate" and trace["status"]["phase"] == "Complete"
    response_ids = [b["id"] for b in trace["spec"]["response"]["blocks"] if b.get("id")]
    blocklogs = by_id(get_json(state, "blocklogs"))
    assert sorted(blocklogs) == sorted(response_ids) and response_ids
    for block_id, blocklog in blocklogs.items():
        assert blocklog["spec"]["genTraceId"] == "2c4efb9372de3bb51d66d3f7e9c3a76a"
        assert blocklog["status"]["generatedBlock"]["id"] == block_id
        assert blocklog["status"]["doc"]["blocks"], "the doc the suggestion was made for"
        assert blocklog["status"]["evalMode"] is False


@pytest.mark.parametrize(
    ("name", "eval_mode"),
    [
        ("execute_traces_lines.jsonl", False),
        ("execute_traces_lines_eval_mode.jsonl", True),
        ("execute_traces_lines_eval_mode_false.jsonl", False),
    ],
)
def test_execute_trace_carries_exit_code_and_eval_mode(
    tmp_path: Path, testdata: Path, name: str, eval_mode: bool
) -> None:
    state = analyzed(tmp_path, testdata / name)
    (trace,) = get_json(state, "traces")
    assert trace["spec"]["kind"] == "Execute"
    assert trace["spec"]["exitCode"] == 0
    assert trace["spec"]["evalMode"] is eval_mode
    assert get_json(state, "blocklogs") == [], "the executed block has an empty id"


def test_generate_eval_mode_variant_sets_eval_mode_on_trace_and_blocklogs(
    tmp_path: Path, testdata: Path
) -> None:
    state = analyzed(tmp_path, testdata / "generate_trace_lines_eval_mode.jsonl")
    (trace,) = get_json(state, "traces")
    assert trace["spec"]["evalMode"] is True
    assert all(b["status"]["evalMode"] is True for b in get_json(state, "blocklogs"))


def test_runme_trace_uses_ts_and_joins_commands_with_newlines(
    tmp_path: Path, testdata: Path
) -> None:
    state = analyzed(tmp_path, testdata / "runme_traces_lines.jsonl")
    (trace,) = get_json(state, "traces")
    assert trace["spec"]["id"] == "01HYRKRJETPVQA84VQR9AR6J30"
    assert trace["spec"]["kind"] == "RunMe" and trace["spec"]["exitCode"] == 0
    assert trace["spec"]["startTime"].startswith("2024-05-25T"), "time comes from `ts`"
    (blocklog,) = get_json(state, "blocklogs")
    assert blocklog["spec"]["id"] == "01HF7B0KJM3HHFDVSX9YFTZ8PE"
    executed = blocklog["status"]["executedBlock"]
    assert executed["kind"] == "CODE"
    assert executed["contents"] == 'echo "Hello World!"\n'
    assert blocklog["status"]["exitCode"] == 0


def test_server_log_analyses_with_no_bad_lines_and_logevents_set_status(
    tmp_path: Path, testdata: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(testdata / "foyle.logs.2024-04-16T19:06:47.json", logs)
    state = tmp_path / "state"
    summary = foylectl("analyze", "--logs", logs, "--state-dir", state).stdout
    assert "78 lines, 0 bad lines" in summary
    (logfile,) = get_json(state, "logfiles")
    assert logfile["status"]["badLines"] == 0 and logfile["status"]["lines"] == 78
    assert logfile["status"]["offset"] == logfile["status"]["size"] == 23487
    blocklogs = by_id(get_json(state, "blocklogs"))
    accepted = blocklogs["23706965-8e3b-440d-ba1a-1e1cc035fbd4"]
    assert accepted["spec"]["genTraceId"] == "8038339848652bc1b97789cd9aa98341"
    assert accepted["status"]["suggestionStatus"] == "Accepted"
    assert accepted["status"]["executions"] == 1
    assert "exitCode" not in accepted["status"], "an EXECUTE event carries no exit code"


def test_cli_result_equals_the_pure_one_shot_analysis(tmp_path: Path, testdata: Path) -> None:
    state = analyzed(tmp_path, *sorted(testdata.iterdir()))
    entries = []
    for path in sorted(testdata.iterdir()):
        with open(path, "rb") as f:
            for batch in read_all(f):
                entries.extend(batch.entries)
    traces, blocklogs = pure_analyze(entries)
    assert comparable(get_json(state, "traces")) == comparable(traces)
    assert comparable(get_json(state, "blocklogs")) == comparable(blocklogs)


def test_analyze_again_on_unchanged_files_changes_nothing(tmp_path: Path, testdata: Path) -> None:
    state = analyzed(tmp_path, *sorted(testdata.iterdir()))
    before = {k: get_json(state, k) for k in ("logfiles", "traces", "blocklogs")}
    foylectl("analyze", "--logs", tmp_path / "logs", "--state-dir", state)
    after = {k: get_json(state, k) for k in ("logfiles", "traces", "blocklogs")}
    for kind in before:
        versions = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in before[kind]}
        assert versions == {
            o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in after[kind]
        }


def test_a_20_mib_line_is_skipped_and_the_rest_of_the_file_processed(
    tmp_path: Path, testdata: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (testdata / "runme_traces_lines.jsonl").read_bytes().splitlines(keepends=True)
    huge = b'{"msg": "' + b"x" * (20 << 20) + b'"}\n'
    (logs / "big.jsonl").write_bytes(b"".join(lines[:6]) + huge + b"".join(lines[6:]))
    state = tmp_path / "state"
    summary = foylectl("analyze", "--logs", logs, "--state-dir", state).stdout
    assert "1 bad line," in summary
    (trace,) = get_json(state, "traces")
    assert trace["spec"]["exitCode"] == 0 and trace["status"]["phase"] == "Complete"
    (logfile,) = get_json(state, "logfiles")
    assert logfile["status"]["lastBadOffset"] == sum(len(x) for x in lines[:6])


def test_get_finds_a_blocklog_by_raw_id_and_by_name(tmp_path: Path, testdata: Path) -> None:
    state = analyzed(tmp_path, testdata / "runme_traces_lines.jsonl")
    by_raw = json.loads(
        foylectl(
            "get", "blocklog", "01HF7B0KJM3HHFDVSX9YFTZ8PE", "-o", "json", "--state-dir", state
        ).stdout
    )
    name = by_raw["metadata"]["name"]
    assert name != "01HF7B0KJM3HHFDVSX9YFTZ8PE", "upper case is not a valid name"
    by_name = json.loads(foylectl("get", "bl", name, "-o", "json", "--state-dir", state).stdout)
    assert by_name == by_raw
    table = foylectl("get", "blocklogs", "--state-dir", state).stdout
    assert table.splitlines()[0].split() == [
        "NAME",
        "GEN-TRACE",
        "EXECUTIONS",
        "EXIT",
        "EVAL",
        "STATUS",
        "AGE",
    ]
    assert name in table
    names = foylectl("get", "bl", "-o", "name", "--state-dir", state).stdout.split()
    assert names == [f"blocklog.foyle.io/{name}"]  # as kubectl prints it


def test_describe_blocklog_shows_its_traces(tmp_path: Path, testdata: Path) -> None:
    state = analyzed(tmp_path, testdata / "runme_traces_lines.jsonl")
    text = foylectl(
        "describe", "blocklog", "01HF7B0KJM3HHFDVSX9YFTZ8PE", "--state-dir", state
    ).stdout
    assert "Traces:" in text and "01HYRKRJETPVQA84VQR9AR6J30  RunMe  Complete" in text


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["get", "widgets"], "unknown resource kind", 2),
        (["analyze", "--logs", "/nonexistent/dir"], "does not exist", 2),
        (["get", "bl", "nope"], 'Error (NotFound): blocklogs.foyle.io "nope" not found in', 1),
    ],
)
def test_usage_errors_exit_2_and_not_found_exits_1_with_one_line(
    tmp_path: Path, testdata: Path, args: list[str], message: str, code: int
) -> None:
    state = analyzed(tmp_path, testdata / "runme_traces_lines.jsonl")
    proc = foylectl(*args, "--state-dir", state, check=False)
    assert proc.returncode == code
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path, testdata: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = foylectl("analyze", "--logs", testdata, "--state-dir", blocker / "state", check=False)
    assert proc.returncode == 1 and "state dir" in proc.stderr and "Traceback" not in proc.stderr


def test_store_file_is_private(tmp_path: Path, testdata: Path) -> None:
    state = analyzed(tmp_path, testdata / "runme_traces_lines.jsonl")
    for db in ("store.db", "journal.db"):
        assert os.stat(state / db).st_mode & 0o777 == 0o600


def test_store_and_journal_take_less_room_than_the_logs(tmp_path: Path) -> None:
    """Issue 23: every Trace, BlockLog (each with its suggestion's notebook), Session and
    Example of a generated corpus, and the journal's accumulators, in fewer bytes than the
    logs they came from (they took 3 to 5 times as many), while `get` shows them whole."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    stats = generate(logs, size_bytes=3 << 20, seed=5)
    foylectl("analyze", "--logs", logs, "--state-dir", state, "--no-progress")
    log_bytes = sum(f.stat().st_size for f in logs.rglob("*.json*"))
    state_bytes = sum(f.stat().st_size for f in state.glob("*.db*") if "index" not in f.name)
    assert state_bytes <= log_bytes, (state_bytes, log_bytes)
    suggested = [b for b in get_json(state, "blocklogs") if b["spec"].get("genTraceId")]
    assert len(suggested) >= stats.sessions and all(b["status"].get("doc") for b in suggested)
