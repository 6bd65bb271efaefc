"""Entries -> Trace: classification, keys, and the reduced specs of the real samples."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.analyze.traces import TraceAccumulator, classify, reduce_trace, trace_key
from controller.api.entry import Entry
from controller.api.resource import rfc3339

GEN_TRACE = "2c4efb9372de3bb51d66d3f7e9c3a76a"
RUNME_TRACE = "01HYRKRJETPVQA84VQR9AR6J30"
FOYLE_LOG = "foyle.logs.2024-04-16T19:06:47.json"
EXECUTE_FN = "github.com/jlewi/foyle/app/pkg/executor.(*Executor).Execute"
RUNME_FN = "github.com/stateful/runme/v3/internal/runner.(*runnerService).Execute"
GENERATE_FN = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).Generate"
_EVENT_KEYS = ("eventId", "eventType", "selectedCellId", "contextId", "event")


def _decoded(value: Any) -> Any:
    """A JSON object logged as a string, decoded (as controller.logs.normalise does)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _first(obj: dict[str, Any], *keys: str) -> Any:
    return next((obj[k] for k in keys if k in obj), None)


def to_entry(obj: dict[str, Any], offset: int, digest: int) -> Entry:
    """A stand-in for controller.logs.normalise (written in parallel), per its brief."""
    function = obj.get("function", "")
    time = _first(obj, "time", "ts")
    exit_code = obj.get("exitCode")
    known_id = _first(obj, "knownID", "knownId")
    block_ids = obj.get("blockIds")
    event = None
    if "agent.(*Agent).LogEvents" in function:
        event = {k: obj[k] for k in _EVENT_KEYS if k in obj}
        if "event" in event:
            event["event"] = _decoded(event["event"])
    return Entry(
        time=float(time) if isinstance(time, int | float) and not isinstance(time, bool) else 0.0,
        offset=offset,
        digest=digest,
        trace_id=str(_first(obj, "traceId", "_id") or ""),
        function=function,
        message=str(_first(obj, "message", "msg") or ""),
        eval_mode=obj.get("evalMode") is True,
        request=_decoded(_first(obj, "request", "req")),
        response=_decoded(_first(obj, "response", "resp")),
        exit_code=exit_code
        if isinstance(exit_code, int) and not isinstance(exit_code, bool)
        else None,
        known_id=known_id if isinstance(known_id, str) else "",
        block_ids=tuple(block_ids)
        if isinstance(block_ids, list) and all(isinstance(b, str) for b in block_ids)
        else (),
        event=event,
    )


def load_entries(path: Path) -> list[Entry]:
    """Every line of a sample file as an Entry keyed by its byte offset and CRC-32."""
    entries, offset = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        if body.strip():
            entries.append(to_entry(orjson.loads(body), offset, zlib.crc32(body)))
        offset += len(line)
    return entries


def reduce_all(entries: list[Entry]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """trace id -> (spec, status) for every trace the entries make."""
    accs: dict[str, TraceAccumulator] = {}
    for entry in entries:
        key = trace_key(entry)
        if key is not None:
            accs.setdefault(key, TraceAccumulator()).add(entry)
    reduced = {key: reduce_trace(key, acc) for key, acc in accs.items()}
    return {key: result for key, result in reduced.items() if result is not None}


def entry(**fields: Any) -> Entry:
    fields.setdefault("time", 100.0)
    fields.setdefault("offset", 0)
    fields.setdefault("digest", 0)
    return Entry(**fields)


@pytest.mark.parametrize(
    ("function", "kind"),
    [
        (GENERATE_FN, "Generate"),
        (EXECUTE_FN, "Execute"),
        (RUNME_FN, "RunMe"),
        (RUNME_FN + ".func5", "RunMe"),
        (RUNME_FN + ".func1.2", "RunMe"),
        ("github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents", "LogEvent"),
        ("github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents.func1", "LogEvent"),
        ("github.com/jlewi/foyle/app/pkg/agent.(*Agent).StreamGenerate", "Context"),
        ("github.com/jlewi/foyle/app/pkg/agent.(*Agent).completeWithRetries", None),
        ("github.com/jlewi/foyle/app/pkg/agent.(*Agent).GenerateCells", "Generate"),
        ("", None),
    ],
)
def test_classify_matches_function_prefixes(function: str, kind: str | None) -> None:
    assert classify(function) == kind


def test_trace_key_prefers_trace_id_then_event_id() -> None:
    assert trace_key(entry(trace_id="abc", event={"eventId": "E1"})) == "abc"
    assert trace_key(entry(event={"eventId": "E1"})) == "event/E1"
    assert trace_key(entry(message="server started")) is None


def test_trace_key_of_event_without_id_is_stable_per_line() -> None:
    line = entry(time=1.5, digest=0xBEEF, event={"eventType": "ACCEPTED"})
    assert trace_key(line) == "event/1.5-0000beef"
    assert trace_key(entry(time=1.5, digest=0xBEEF + 1, event={})) != trace_key(line)


def test_generate_sample_makes_one_complete_generate_trace(testdata: Path) -> None:
    entries = load_entries(testdata / "generate_trace_lines.jsonl")
    traces = reduce_all(entries)
    assert list(traces) == [GEN_TRACE]
    spec, status = traces[GEN_TRACE]
    assert status == {"phase": "Complete", "entries": 5}
    assert spec["kind"] == "Generate"
    assert spec["startTime"] == rfc3339(entries[0].time)
    assert spec["endTime"] == rfc3339(entries[-1].time)
    # The OpenAI request of completeWithRetries is not the trace's request.
    assert "doc" in spec["request"]
    assert spec["blockIds"] == [b["id"] for b in spec["response"]["blocks"]]
    assert len(spec["blockIds"]) == 7
    assert "exitCode" not in spec
    assert spec["evalMode"] is False


def test_generate_without_response_falls_back_to_returning_blocks_line(testdata: Path) -> None:
    entries = [
        e
        for e in load_entries(testdata / FOYLE_LOG)
        if e.trace_id and e.message != "Agent.Generate returning response"
    ]
    spec, status = reduce_all(entries)["8038339848652bc1b97789cd9aa98341"]
    assert status["phase"] == "InProgress"
    assert "endTime" not in spec and "response" not in spec
    assert spec["blockIds"] == [
        "9557680b-e08c-4d1d-b098-6dcd03e0e108",
        "23706965-8e3b-440d-ba1a-1e1cc035fbd4",
        "48d530be-254a-493f-8cf4-20627078f830",
    ]


@pytest.mark.parametrize(
    ("sample", "eval_mode"),
    [
        ("execute_traces_lines.jsonl", False),
        ("execute_traces_lines_eval_mode.jsonl", True),
        ("execute_traces_lines_eval_mode_false.jsonl", False),
    ],
)
def test_execute_sample_reads_exit_code_and_eval_mode(
    testdata: Path, sample: str, eval_mode: bool
) -> None:
    spec, status = reduce_all(load_entries(testdata / sample))["43281a4e73cd76570e9851589207a8bd"]
    assert spec["kind"] == "Execute"
    assert spec["exitCode"] == 0
    assert spec["evalMode"] is eval_mode
    assert spec["blockIds"] == []  # the executed block had an empty id
    assert status == {"phase": "Complete", "entries": 2}


def test_runme_sample_takes_time_from_ts_and_exit_code_from_end_line(testdata: Path) -> None:
    traces = reduce_all(load_entries(testdata / "runme_traces_lines.jsonl"))
    assert list(traces) == [RUNME_TRACE]
    spec, status = traces[RUNME_TRACE]
    assert spec["kind"] == "RunMe"
    assert spec["startTime"] == rfc3339(1716665469.422168)  # the `req` line, not epoch zero
    assert spec["exitCode"] == 0
    assert spec["blockIds"] == ["01HF7B0KJM3HHFDVSX9YFTZ8PE"]
    assert spec["request"]["commands"] == ['echo "Hello World!"', ""]
    assert status == {"phase": "Complete", "entries": 6}


def test_runme_exit_code_of_end_line_beats_earlier_ones() -> None:
    acc = TraceAccumulator()
    acc.add(entry(trace_id="R", function=RUNME_FN, message="command finished", exit_code=1))
    acc.add(
        entry(
            trace_id="R",
            function=RUNME_FN,
            time=101.0,
            message="sending the final response with exit code",
            exit_code=2,
        )
    )
    spec, _ = reduce_trace("R", acc) or ({}, {})
    assert spec["exitCode"] == 2


def test_runme_block_id_falls_back_to_request_known_id() -> None:
    acc = TraceAccumulator()
    acc.add(entry(trace_id="R", function=RUNME_FN, request={"knownID": "cell-1"}))
    spec, status = reduce_trace("R", acc) or ({}, {})
    assert spec["blockIds"] == ["cell-1"]
    assert "exitCode" not in spec
    assert status["phase"] == "InProgress"


def test_log_event_trace_keeps_the_selected_cell_and_every_cell_of_the_event(
    testdata: Path,
) -> None:
    """The selected cell for a BlockLog; every cell for the Session, as Foyle keeps them."""
    traces = reduce_all(load_entries(testdata / FOYLE_LOG))
    spec, status = traces["event/01J6GT7PJMZ0H6TXTEVZHXGXCH"]
    cells = spec["request"].pop("cells")
    assert [(c["kind"], c["contents"]) for c in cells] == [
        ("MARKUP", "Fetch the latest logs using curl"),
        ("CODE", "curl"),
    ]
    assert cells[1] == spec["request"]["block"]
    assert spec["kind"] == "LogEvent"
    assert spec["startTime"] == spec["endTime"] == rfc3339(1724993755.738091)
    assert spec["contextId"] == "01J6GT7JM815EFXHDNBXDK91YW"
    assert spec["request"] == {
        "eventType": "EXECUTE",
        "selectedCellId": "23706965-8e3b-440d-ba1a-1e1cc035fbd4",
        "contextId": "01J6GT7JM815EFXHDNBXDK91YW",
        "eventId": "01J6GT7PJMZ0H6TXTEVZHXGXCH",
        "selectedIndex": 10,
        "block": {
            "kind": "CODE",
            "language": "",
            "contents": "curl",
            "outputs": [],
            "id": "23706965-8e3b-440d-ba1a-1e1cc035fbd4",
            "metadata": {
                "_ghostCell": "false",
                "id": "23706965-8e3b-440d-ba1a-1e1cc035fbd4",
                "runme.dev/id": "23706965-8e3b-440d-ba1a-1e1cc035fbd4",
            },
        },
    }
    assert spec["blockIds"] == ["23706965-8e3b-440d-ba1a-1e1cc035fbd4"]
    assert "response" not in spec and "exitCode" not in spec
    assert status == {"phase": "Complete", "entries": 1}


def test_log_event_without_selection_names_every_cell() -> None:
    event = {
        "eventId": "E",
        "eventType": "ACCEPTED",
        "event": {
            "cells": [{"metadata": {"id": "a"}}, {"value": "no id"}, {"metadata": {"id": "b"}}]
        },
    }
    acc = TraceAccumulator()
    acc.add(
        entry(function="github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents.func1", event=event)
    )
    spec, _ = reduce_trace("event/E", acc) or ({}, {})
    assert spec["blockIds"] == ["a", "b"]
    assert "block" not in spec["request"]


def test_stream_generate_trace_is_skipped() -> None:
    acc = TraceAccumulator()
    acc.add(
        entry(
            trace_id="S",
            function="github.com/jlewi/foyle/app/pkg/agent.(*Agent).StreamGenerate",
            request={"a": 1},
        )
    )
    assert reduce_trace("S", acc) is None


def test_trace_kind_is_that_of_its_first_classified_entry() -> None:
    acc = TraceAccumulator()
    acc.add(entry(trace_id="T", function=EXECUTE_FN, time=2.0, request={"block": {"id": "x"}}))
    acc.add(entry(trace_id="T", function=GENERATE_FN, time=1.0, request={"doc": {}}))
    spec, _ = reduce_trace("T", acc) or ({}, {})
    assert spec["kind"] == "Generate"
    assert spec["request"] == {"doc": {}}


def test_trace_without_request_starts_at_its_first_entry() -> None:
    acc = TraceAccumulator()
    acc.add(entry(trace_id="T", function=EXECUTE_FN, time=7.0))
    acc.add(entry(trace_id="T", function="other", time=3.0))
    spec, status = reduce_trace("T", acc) or ({}, {})
    assert spec["startTime"] == rfc3339(3.0)
    assert "request" not in spec and "endTime" not in spec
    assert status == {"phase": "InProgress", "entries": 2}


def test_ties_on_time_are_broken_by_offset_then_digest() -> None:
    first = entry(trace_id="T", function=EXECUTE_FN, offset=5, request={"block": {"id": "a"}})
    later = entry(trace_id="T", function=EXECUTE_FN, offset=9, request={"block": {"id": "b"}})
    same_offset = entry(
        trace_id="T", function=EXECUTE_FN, offset=5, digest=1, request={"block": {"id": "c"}}
    )
    for order in ([first, later, same_offset], [same_offset, later, first]):
        acc = TraceAccumulator()
        for e in order:
            acc.add(e)
        spec, _ = reduce_trace("T", acc) or ({}, {})
        assert spec["blockIds"] == ["a"]


def test_identical_sort_keys_pick_the_same_candidate_in_any_order() -> None:
    one = entry(trace_id="T", function=EXECUTE_FN, request={"block": {"id": "one"}})
    two = entry(trace_id="T", function=EXECUTE_FN, request={"block": {"id": "two"}})
    results = []
    for order in ([one, two], [two, one]):
        acc = TraceAccumulator()
        for e in order:
            acc.add(e)
        results.append(reduce_trace("T", acc))
    assert results[0] == results[1]


def test_late_end_line_completes_the_same_trace(testdata: Path) -> None:
    entries = load_entries(testdata / "execute_traces_lines.jsonl")
    snapshot = TraceAccumulator()
    snapshot.add(entries[0])
    early_spec, early_status = reduce_trace("t", snapshot) or ({}, {})
    assert early_status["phase"] == "InProgress" and "exitCode" not in early_spec

    late = TraceAccumulator()
    late.add(entries[1])
    restored = TraceAccumulator.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    restored.merge(late)

    whole = TraceAccumulator()
    for e in entries:
        whole.add(e)
    assert reduce_trace("t", restored) == reduce_trace("t", whole)
    assert (reduce_trace("t", restored) or ({}, {}))[1]["phase"] == "Complete"


def test_accumulator_round_trips_through_json(testdata: Path) -> None:
    acc = TraceAccumulator()
    for e in load_entries(testdata / "generate_trace_lines.jsonl"):
        acc.add(e)
    restored = TraceAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert restored == acc
    assert restored.to_dict() == acc.to_dict()


# -- one id, two traces (issue 13 item 7) ---------------------------------------------------


def _line(time: float, function: str, offset: int, **fields: Any) -> Entry:
    return Entry(time=time, offset=offset, digest=offset, trace_id="t", function=function, **fields)


def test_lines_of_two_kinds_under_one_id_are_flagged_and_the_earliest_kind_shown() -> None:
    acc = TraceAccumulator()
    acc.add(_line(1000.0, GENERATE_FN, 0, request={"doc": {"blocks": []}}))
    acc.add(_line(90_000.0, EXECUTE_FN, 10, request={"block": {"id": "b"}}))
    reduced = reduce_trace("t", acc)
    assert reduced is not None
    spec, status = reduced
    assert spec["kind"] == "Generate"
    assert status["inconsistent"] == {
        "reason": "SeveralKinds",
        "kinds": ["Execute", "Generate"],
        "spanSeconds": 89_000,
    }


def test_one_kind_with_lines_a_day_apart_is_flagged_far_apart() -> None:
    acc = TraceAccumulator()
    acc.add(_line(1000.0, GENERATE_FN, 0, request={"doc": {"blocks": []}}))
    acc.add(_line(1000.0 + 86_400, GENERATE_FN, 10, request={"doc": {"blocks": [{"id": "x"}]}}))
    _, status = reduce_trace("t", acc) or ({}, {})
    assert status["inconsistent"]["reason"] == "FarApart"


def test_an_ordinary_trace_is_not_flagged() -> None:
    acc = TraceAccumulator()
    acc.add(_line(1000.0, GENERATE_FN, 0, request={"doc": {"blocks": []}}))
    acc.add(_line(1030.0, GENERATE_FN, 10, message="Agent.Generate returning response"))
    _, status = reduce_trace("t", acc) or ({}, {})
    assert "inconsistent" not in status
