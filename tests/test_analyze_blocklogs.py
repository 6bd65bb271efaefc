"""Traces -> BlockLog: membership, status, and the one-shot analysis of the real samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_analyze_traces import load_entries

from controller.analyze.blocklogs import (
    MAX_LISTED,
    blocklog_status,
    membership_add,
    membership_remove,
)
from controller.analyze.blocks import cell_to_block, exit_code_from_outputs, normalise_block
from controller.analyze.oneshot import analyze
from controller.api.kinds import Resource
from controller.api.names import name_for_id

FOYLE_LOG = "foyle.logs.2024-04-16T19:06:47.json"
CELL = "23706965-8e3b-440d-ba1a-1e1cc035fbd4"


def by_id(resources: list[Resource]) -> dict[str, Resource]:
    return {r["spec"]["id"]: r for r in resources}


def trace(trace_id: str, kind: str, start: str, **spec: Any) -> dict[str, Any]:
    return {"id": trace_id, "kind": kind, "startTime": start, **spec}


def fold(block_id: str, traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Membership of `traces`, added in the given order."""
    spec = None
    for t in traces:
        spec = membership_add(spec, block_id, t)
    assert spec is not None
    return spec


def execute(trace_id: str, start: str, contents: str, **spec: Any) -> dict[str, Any]:
    block = {"kind": "CODE", "contents": contents, "id": "b"}
    return trace(trace_id, "Execute", start, request={"block": block}, **spec)


def event(trace_id: str, start: str, event_type: str, **request: Any) -> dict[str, Any]:
    request = {"eventType": event_type, "selectedCellId": "b", **request}
    return trace(trace_id, "LogEvent", start, request=request)


# -- blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_kind", "kind"),
    [
        ("CODE", "CODE"),
        (2, "CODE"),
        ("CELL_KIND_CODE", "CODE"),
        ("MARKUP", "MARKUP"),
        (1, "MARKUP"),
        ("CELL_KIND_MARKUP", "MARKUP"),
        (0, "UNKNOWN_BLOCK_KIND"),
        (True, "UNKNOWN_BLOCK_KIND"),
        ("weird", "UNKNOWN_BLOCK_KIND"),
        (["CODE"], "UNKNOWN_BLOCK_KIND"),
        (None, "UNKNOWN_BLOCK_KIND"),
    ],
)
def test_normalise_block_accepts_every_kind_spelling(raw_kind: Any, kind: str) -> None:
    assert normalise_block({"kind": raw_kind})["kind"] == kind


def test_normalise_block_reads_snake_and_camel_output_items() -> None:
    raw = {
        "kind": "CODE",
        "contents": "ls",
        "trace_ids": ["t"],
        "outputs": [{"items": [{"mime": "text/plain", "text_data": "a"}, {"textData": "b"}]}],
    }
    assert normalise_block(raw) == {
        "kind": "CODE",
        "language": "",
        "contents": "ls",
        "outputs": [
            {"items": [{"mime": "text/plain", "textData": "a"}, {"mime": "", "textData": "b"}]}
        ],
        "id": "",
        "traceIds": ["t"],
    }
    assert normalise_block("not a block")["outputs"] == []


def test_cell_to_block_maps_a_vscode_cell() -> None:
    cell = {"kind": 2, "value": "echo hi", "languageId": "sh", "metadata": {"id": "c1"}}
    assert cell_to_block(cell) == {
        "kind": "CODE",
        "language": "sh",
        "contents": "echo hi",
        "outputs": [],
        "id": "c1",
        "metadata": {"id": "c1"},
    }


def test_exit_code_from_outputs_reads_first_exit_code_item() -> None:
    outputs = [{"items": [{"textData": "hello"}, {"text_data": "exitCode: -1"}]}]
    assert exit_code_from_outputs(outputs) == -1
    assert exit_code_from_outputs([{"items": [{"textData": "exitCode: x"}]}]) is None
    assert exit_code_from_outputs(None) is None


# -- membership -----------------------------------------------------------------------------


def test_membership_keeps_the_latest_generate_trace() -> None:
    old = trace("g-old", "Generate", "2024-01-01T00:00:00.000000Z")
    new = trace("g-new", "Generate", "2024-01-02T00:00:00.000000Z")
    assert fold("b", [old, new])["genTraceId"] == "g-new"
    assert fold("b", [new, old])["genTraceId"] == "g-new"


def test_membership_breaks_generate_ties_on_time_by_id() -> None:
    a = trace("a", "Generate", "2024-01-01T00:00:00.000000Z")
    z = trace("z", "Generate", "2024-01-01T00:00:00.000000Z")
    assert fold("b", [z, a])["genTraceId"] == "z"


def test_executions_arriving_before_generate_converge_to_same_spec() -> None:
    gen = trace("g", "Generate", "2024-01-01T00:00:00.000000Z")
    ex1 = trace("e1", "Execute", "2024-01-03T00:00:00.000000Z")
    ex2 = trace("e2", "RunMe", "2024-01-02T00:00:00.000000Z")
    ev = trace("v", "LogEvent", "2024-01-04T00:00:00.000000Z")
    expected = {
        "id": "b",
        "genTraceId": "g",
        "execTraceIds": ["e2", "e1"],
        "eventIds": ["v"],
        "startTimes": {t["id"]: t["startTime"] for t in (gen, ex1, ex2, ev)},
        "olderExecutions": 0,
    }
    assert fold("b", [ex1, ev, ex2, gen]) == expected
    assert fold("b", [gen, ex2, ex1, ev]) == expected


def test_readding_a_trace_whose_start_changed_resorts() -> None:
    a = trace("a", "Execute", "2024-01-01T00:00:00.000000Z")
    b = trace("b", "Execute", "2024-01-02T00:00:00.000000Z")
    spec = fold("blk", [a, b])
    assert spec["execTraceIds"] == ["a", "b"]
    moved = {**a, "startTime": "2024-01-03T00:00:00.000000Z"}
    spec = membership_add(spec, "blk", moved)
    assert spec["execTraceIds"] == ["b", "a"]


def test_membership_add_and_remove_do_not_mutate_their_input() -> None:
    spec = fold("b", [trace("g", "Generate", "t1"), trace("e", "Execute", "t2")])
    snapshot = {**spec, "execTraceIds": list(spec["execTraceIds"])}
    membership_add(spec, "b", trace("e2", "Execute", "t3"))
    removed = membership_remove(spec, "g")
    assert spec == snapshot
    assert "genTraceId" not in removed
    assert membership_remove(removed, "e")["execTraceIds"] == []


def _executions(n: int) -> list[dict[str, Any]]:
    return [
        trace(f"e{i:06d}", "Execute", f"2024-01-01T00:00:{i % 60:02d}.{i:06d}Z") for i in range(n)
    ]


def test_a_block_run_many_times_lists_the_latest_runs_and_counts_the_rest() -> None:
    runs = _executions(1000)
    spec = fold("b", runs)
    latest = sorted(runs, key=lambda t: (t["startTime"], t["id"]))[-MAX_LISTED:]
    assert spec["execTraceIds"] == [t["id"] for t in latest]
    assert spec["olderExecutions"] == 1000 - MAX_LISTED
    assert set(spec["startTimes"]) == set(spec["execTraceIds"])
    assert fold("b", list(reversed(runs))) == spec, "any order of adds gives the same spec"
    assert blocklog_status(spec, {})["executions"] == 1000


def test_readding_a_run_pushed_out_of_the_list_does_not_count_it_twice() -> None:
    runs = _executions(MAX_LISTED + 5)
    spec = fold("b", runs)
    oldest = min(runs, key=lambda t: (t["startTime"], t["id"]))
    assert oldest["id"] not in spec["execTraceIds"]
    assert membership_add(spec, "b", oldest, listed_before=True) == spec
    removed = membership_remove(spec, oldest["id"])
    assert removed["olderExecutions"] == spec["olderExecutions"] - 1


def test_execute_events_count_as_executions_and_feedback_stays_an_event() -> None:
    run = trace("e", "Execute", "2024-01-01T00:00:00.000000Z")
    executed = trace(
        "x", "LogEvent", "2024-01-02T00:00:00.000000Z", request={"eventType": "EXECUTE"}
    )
    accepted = trace(
        "a", "LogEvent", "2024-01-03T00:00:00.000000Z", request={"eventType": "ACCEPTED"}
    )
    spec = fold("b", [run, executed, accepted])
    assert spec["execTraceIds"] == ["e", "x"]
    assert spec["eventIds"] == ["a"]


# -- status ---------------------------------------------------------------------------------


def test_latest_execution_decides_executed_block_exit_code_and_eval_mode() -> None:
    first = execute("e1", "2024-01-01T00:00:00.000000Z", "ls", exitCode=0, evalMode=True)
    last = execute("e2", "2024-01-02T00:00:00.000000Z", "ls -l", exitCode=3)
    spec = fold("b", [last, first])
    status = blocklog_status(spec, {"e1": first, "e2": last})
    assert status["executedBlock"]["contents"] == "ls -l"
    assert status["exitCode"] == 3
    assert status["evalMode"] is False
    assert status["executions"] == 2


def test_latest_execution_ties_on_time_are_broken_by_id() -> None:
    a = execute("a", "2024-01-01T00:00:00.000000Z", "from a", exitCode=1)
    z = execute("z", "2024-01-01T00:00:00.000000Z", "from z", exitCode=2)
    status = blocklog_status(fold("b", [z, a]), {"a": a, "z": z})
    assert status["exitCode"] == 2


def test_execute_log_event_counts_as_an_execution_without_exit_code() -> None:
    ran = execute("e", "2024-01-01T00:00:00.000000Z", "ls", exitCode=0)
    block = {"kind": "CODE", "language": "", "contents": "ls -a", "outputs": [], "id": "b"}
    clicked = event("v", "2024-01-02T00:00:00.000000Z", "EXECUTE", block=block)
    status = blocklog_status(fold("b", [ran, clicked]), {"e": ran, "v": clicked})
    assert status["executions"] == 2
    assert status["executedBlock"] == block
    assert "exitCode" not in status


def test_last_feedback_event_sets_suggestion_status() -> None:
    accepted = event("v1", "2024-01-01T00:00:00.000000Z", "ACCEPTED")
    rejected = event("v2", "2024-01-02T00:00:00.000000Z", "REJECTED")
    traces = {"v1": accepted, "v2": rejected}
    status = blocklog_status(fold("b", [rejected, accepted]), traces)
    assert status["suggestionStatus"] == "Rejected"
    assert status["executions"] == 0


def test_missing_member_traces_are_ignored_and_unknowns_are_absent() -> None:
    spec = {"id": "b", "genTraceId": "g", "execTraceIds": ["e"], "eventIds": ["v"]}
    assert blocklog_status(spec, {}) == {
        "executions": 1,  # a count of the members listed, found or not
        "evalMode": False,
        "suggestionStatus": "Unknown",
    }


# -- one-shot analysis of the samples -------------------------------------------------------


def test_generate_sample_makes_a_blocklog_per_response_block(testdata: Path) -> None:
    traces, blocklogs = analyze(load_entries(testdata / "generate_trace_lines.jsonl"))
    (gen,) = traces
    response_blocks = gen["spec"]["response"]["blocks"]
    logs = by_id(blocklogs)
    assert sorted(logs) == sorted(b["id"] for b in response_blocks)
    for block in response_blocks:
        log = logs[block["id"]]
        assert log["metadata"]["name"] == name_for_id(block["id"])
        assert log["spec"] == {
            "id": block["id"],
            "genTraceId": "2c4efb9372de3bb51d66d3f7e9c3a76a",
            "execTraceIds": [],
            "eventIds": [],
            "startTimes": {"2c4efb9372de3bb51d66d3f7e9c3a76a": gen["spec"]["startTime"]},
            "olderExecutions": 0,
        }
        status = log["status"]
        assert status["generatedBlock"] == normalise_block(block)
        assert status["doc"]["blocks"][0]["kind"] == "MARKUP"
        assert "executedBlock" not in status and "exitCode" not in status
        assert status["suggestionStatus"] == "Unknown"


def test_execute_with_empty_block_id_makes_no_blocklog(testdata: Path) -> None:
    traces, blocklogs = analyze(load_entries(testdata / "execute_traces_lines_eval_mode.jsonl"))
    assert [t["spec"]["exitCode"] for t in traces] == [0]
    assert blocklogs == []


def test_runme_sample_blocklog_keeps_newlines_between_commands(testdata: Path) -> None:
    traces, blocklogs = analyze(load_entries(testdata / "runme_traces_lines.jsonl"))
    assert [t["spec"]["id"] for t in traces] == ["01HYRKRJETPVQA84VQR9AR6J30"]
    (log,) = blocklogs
    assert log["spec"]["id"] == "01HF7B0KJM3HHFDVSX9YFTZ8PE"
    assert log["spec"]["execTraceIds"] == ["01HYRKRJETPVQA84VQR9AR6J30"]
    assert log["status"]["executedBlock"] == {
        "kind": "CODE",
        "language": "sh",
        "contents": 'echo "Hello World!"\n',
        "outputs": [],
        "id": "01HF7B0KJM3HHFDVSX9YFTZ8PE",
    }
    assert log["status"]["exitCode"] == 0
    assert log["status"]["executions"] == 1


def test_foyle_sample_joins_generation_acceptance_and_execution(testdata: Path) -> None:
    traces, blocklogs = analyze(load_entries(testdata / FOYLE_LOG))
    assert "8038339848652bc1b97789cd9aa98341" in by_id(traces)
    assert [t["metadata"]["name"] for t in traces] == sorted(t["metadata"]["name"] for t in traces)
    log = by_id(blocklogs)[CELL]
    spec = {k: v for k, v in log["spec"].items() if k != "startTimes"}
    assert spec == {
        "id": CELL,
        "genTraceId": "8038339848652bc1b97789cd9aa98341",
        "execTraceIds": ["event/01J6GT7PJMZ0H6TXTEVZHXGXCH"],  # the EXECUTE event
        "eventIds": ["event/01J6GT7JMDA2Q4SWZQEQ2YPFYQ"],  # ACCEPTED
        "olderExecutions": 0,
    }
    assert set(log["spec"]["startTimes"]) == {
        spec["genTraceId"],
        *spec["execTraceIds"],
        *spec["eventIds"],
    }
    status = log["status"]
    assert status["suggestionStatus"] == "Accepted"
    assert status["executions"] == 1
    assert status["generatedBlock"]["contents"] == "git merge-base HEAD origin/main\n"
    assert status["executedBlock"]["contents"] == "curl"
    assert (
        status["doc"]["blocks"][0]["contents"] == "Use git to find the merge point with origin/main"
    )
    assert "exitCode" not in status
