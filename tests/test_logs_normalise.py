"""Foyle and RunMe lines fold into one Entry; wrong-typed values become empty values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from controller.logs.normalise import normalise


def sample_lines(testdata: Path, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in (testdata / name).read_bytes().splitlines()]


def test_foyle_generate_line_keeps_time_trace_and_request(testdata: Path) -> None:
    obj = sample_lines(testdata, "generate_trace_lines.jsonl")[0]
    entry = normalise(obj, 0, 7)
    assert entry.time == 1713303852.283372
    assert entry.trace_id == "2c4efb9372de3bb51d66d3f7e9c3a76a"
    assert entry.function == "github.com/jlewi/foyle/app/pkg/agent.(*Agent).Generate"
    assert entry.message == "Agent.Generate"
    assert entry.request["doc"]["blocks"][0]["kind"] == "MARKUP"
    assert (entry.offset, entry.digest, entry.eval_mode, entry.event) == (0, 7, False, None)


def test_foyle_eval_mode_is_read_from_a_json_bool(testdata: Path) -> None:
    obj = sample_lines(testdata, "execute_traces_lines_eval_mode.jsonl")[0]
    assert normalise(obj, 0, 0).eval_mode is True
    assert normalise({**obj, "evalMode": "true"}, 0, 0).eval_mode is False


def test_runme_line_reads_ts_id_req_known_id_and_a_zero_exit_code(testdata: Path) -> None:
    lines = sample_lines(testdata, "runme_traces_lines.jsonl")
    with_req = next(o for o in lines if "req" in o)
    entry = normalise(with_req, 10, 0)
    assert entry.time == with_req["ts"] > 0
    assert entry.trace_id == "01HYRKRJETPVQA84VQR9AR6J30"
    assert entry.message == with_req["msg"]
    assert entry.request == with_req["req"]
    assert entry.known_id == "01HF7B0KJM3HHFDVSX9YFTZ8PE"

    finished = next(o for o in lines if "exitCode" in o)
    assert normalise(finished, 0, 0).exit_code == 0


def test_log_event_line_carries_its_event_fields(testdata: Path) -> None:
    lines = sample_lines(testdata, "foyle.logs.2024-04-16T19:06:47.json")
    obj = next(o for o in lines if o.get("eventType") == "EXECUTE")
    event = normalise(obj, 0, 0).event
    assert event is not None
    assert event["eventId"] == "01J6GT7PJMZ0H6TXTEVZHXGXCH"
    assert event["eventType"] == "EXECUTE"
    assert event["selectedCellId"] == "23706965-8e3b-440d-ba1a-1e1cc035fbd4"
    assert event["contextId"] == "01J6GT7JM815EFXHDNBXDK91YW"
    assert event["event"]["cells"][1]["value"] == "curl"


def test_log_event_of_the_go_closure_keeps_only_present_keys_and_decodes_its_payload() -> None:
    obj = {
        "function": "github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents.func1",
        "eventId": "e1",
        "event": '{"type": "ACCEPTED"}',
        "unknown": [1, 2],
    }
    assert normalise(obj, 0, 0).event == {"eventId": "e1", "event": {"type": "ACCEPTED"}}


def test_json_object_payloads_logged_as_strings_are_decoded() -> None:
    entry = normalise({"request": '{"a": 1}', "resp": ' {"b": [2]}'}, 0, 0)
    assert entry.request == {"a": 1}
    assert entry.response == {"b": [2]}


def test_string_payloads_that_are_not_json_objects_are_kept() -> None:
    entry = normalise({"request": "[1, 2]", "response": "{not json"}, 0, 0)
    assert entry.request == "[1, 2]"
    assert entry.response == "{not json"


def test_foyle_names_win_over_runme_names() -> None:
    obj = {"time": 2.0, "ts": 1.0, "message": "m", "msg": "x", "traceId": "t", "_id": "u"}
    entry = normalise(obj, 0, 0)
    assert (entry.time, entry.message, entry.trace_id) == (2.0, "m", "t")


def test_wrongly_typed_values_become_empty_values() -> None:
    obj = {
        "time": "yesterday",
        "traceId": 42,
        "function": None,
        "message": ["m"],
        "exitCode": True,
        "knownID": 5,
        "blockIds": ["a", 1],
    }
    entry = normalise(obj, 0, 0)
    assert (entry.time, entry.trace_id, entry.function, entry.message) == (0.0, "", "", "")
    assert (entry.exit_code, entry.known_id, entry.block_ids) == (None, "", ())


def test_integer_times_and_string_block_ids_are_kept() -> None:
    entry = normalise({"ts": 17, "blockIds": ["a", "b"], "knownId": "k", "exitCode": 3}, 0, 0)
    assert (entry.time, entry.block_ids, entry.known_id, entry.exit_code) == (
        17.0,
        ("a", "b"),
        "k",
        3,
    )
