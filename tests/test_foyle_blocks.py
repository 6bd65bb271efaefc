"""Blocks keep what Foyle keeps: metadata, trace ids, and cell ids read as GetCellID reads them."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from controller.analyze.blocks import cell_id, cell_to_block, normalise_block
from controller.analyze.oneshot import analyze
from controller.learn.query import query_text
from controller.learn.rule import example_for
from controller.logs.normalise import normalise

CELL = "01J6GT7JM815EFXHDNBXDK91YW"
LOG_EVENTS = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"runme.dev/id": "r", "id": "i"}, "r"),  # RunmeIdField first
        ({"id": "i"}, "i"),
        ({"runme.dev/id": "r"}, "r"),
        ({"runme.dev/id": "", "id": "i"}, ""),  # present wins, even empty (Go's `ok`)
        ({}, ""),
        (None, ""),
    ],
)
def test_cell_id_reads_runme_dev_id_before_id(metadata: Any, expected: str) -> None:
    assert cell_id({"metadata": metadata}) == expected


def test_block_metadata_and_trace_ids_survive_normalisation() -> None:
    raw = {"kind": "CODE", "contents": "ls", "metadata": {"_ghostCell": "true", "n": 1}}
    raw["traceIds"] = ["t1", 7]
    block = normalise_block(raw)
    assert block["metadata"] == {"_ghostCell": "true"}  # a map<string,string>: 1 is not a string
    assert block["traceIds"] == ["t1"]


def test_cell_outputs_read_runme_bytes_as_text() -> None:
    data = base64.b64encode(b"pod-1 Running").decode()
    cell = {"kind": "CELL_KIND_CODE", "value": "kubectl get pods", "outputs": []}
    cell["outputs"] = [{"items": [{"mime": "application/vnd.code.notebook.stdout", "data": data}]}]
    assert cell_to_block(cell)["outputs"][0]["items"][0]["textData"] == "pod-1 Running"


def _line(**fields: Any) -> dict[str, Any]:
    return {"severity": "info", "time": 1724993755.7, "function": LOG_EVENTS, **fields}


def _generate_lines(doc: list[dict[str, Any]], block: dict[str, Any]) -> list[dict[str, Any]]:
    fn = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).Generate"
    return [
        {
            "time": 1.0,
            "function": fn,
            "message": "Agent.Generate",
            "traceId": "g1",
            "request": {"doc": {"blocks": doc}},
        },  # fmt: skip
        {
            "time": 2.0,
            "function": fn,
            "message": "Agent.Generate returning response",
            "traceId": "g1",
            "response": {"blocks": [block]},
        },  # fmt: skip
    ]


def _entries(lines: list[dict[str, Any]]) -> list[Any]:
    return [normalise(obj, i * 100, i) for i, obj in enumerate(lines)]


def test_an_execute_event_of_a_cell_with_only_runme_dev_id_sets_the_executed_block() -> None:
    """Issue 11 item 4: the cell from the event must be found by `runme.dev/id`."""
    cell = {"kind": "CELL_KIND_CODE", "metadata": {"runme.dev/id": CELL}, "value": "curl -v"}
    event = {"cells": [cell], "selectedId": CELL, "type": "EXECUTE", "contextId": "ctx"}
    lines = _generate_lines(
        [{"kind": "MARKUP", "contents": "Fetch the logs"}],
        {"kind": "CODE", "contents": "curl", "id": CELL},
    )
    lines.append(_line(eventId="e1", eventType="EXECUTE", selectedCellId=CELL, event=event))
    _, blocklogs = analyze(_entries(lines))
    (blocklog,) = blocklogs
    assert blocklog["status"]["executions"] == 1
    assert blocklog["status"]["executedBlock"]["contents"] == "curl -v"
    assert blocklog["status"]["executedBlock"]["id"] == CELL
    assert example_for(blocklog) is not None


def test_a_ghost_cell_in_the_logged_doc_is_dropped_from_the_learned_query() -> None:
    """Issue 11 items 2-3: metadata read from the log lets the ghost-cell filter fire."""
    ghost = {"kind": "CODE", "contents": "rm -rf /", "metadata": {"_ghostCell": "true"}}
    doc = [{"kind": "MARKUP", "contents": "Fetch the logs"}, ghost, {"kind": "CODE",
           "contents": "curl", "id": CELL}]  # fmt: skip
    lines = _generate_lines(orjson.loads(orjson.dumps(doc)), {"kind": "CODE", "contents": "curl",
                            "id": CELL})  # fmt: skip
    runme = {"ts": 3.0, "_id": "r1", "function": "github.com/stateful/runme/v3/internal/runner.(*runnerService).Execute",
             "msg": "sending the final response with exit code", "knownID": CELL,
             "req": {"commands": ["curl -v"], "knownId": CELL}}  # fmt: skip
    _, blocklogs = analyze(_entries([*lines, runme]))
    example = example_for(blocklogs[0])
    assert example is not None
    assert [b["contents"] for b in example["spec"]["query"]["blocks"]] == ["Fetch the logs", "curl"]
    assert query_text(example["spec"]["query"]) == "Fetch the logs\n```bash\ncurl\n```\n"
