"""Sessions as Foyle builds them and learns from them, on Foyle's own test cases and a corpus.

Foyle's cases are from app/pkg/analyze/session_builder_test.go and
app/pkg/learn/learner_test.go at v0.0.45; the log lines are what Foyle's
zap logger writes for them.
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.analyze.oneshot import analyze
from controller.analyze.sessions import membership_add, session_status, sessions_of
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.learn.session_rule import example_for_session, session_learnability
from controller.logs.normalise import normalise
from controller.store.base import NotFound
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl, get_json, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from gen_logs import Appender, generate  # noqa: E402
from learn_latency import RUN_READY, Foylectl  # noqa: E402

PKG = "github.com/jlewi/foyle/app/pkg"
LOG_EVENTS = f"{PKG}/agent.(*Agent).LogEvents"
STREAM = f"{PKG}/agent.(*Agent).StreamGenerate"
GENERATE = f"{PKG}/agent.(*Agent).Generate"
USAGE = f"{PKG}/logs.LogLLMUsage"
START = 1723238695.0  # "2024-08-09 13:24:55 PST", Foyle's Test_ProcessLogEvent


def event_line(t: float, event_type: str, context: str = "context1", **event: Any) -> dict:
    event = {"type": event_type, "contextId": context, "eventId": f"e{t}", **event}
    return {"time": t, "function": LOG_EVENTS, "message": "LogEvent", "eventId": f"e{t}",
            "contextId": context, "eventType": event_type,
            "selectedCellId": event.get("selectedId", ""), "event": event}  # fmt: skip


def sessions(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    entries = [normalise(obj, i * 1000, i) for i, obj in enumerate(lines)]
    traces, _ = analyze(entries)
    return sessions_of([t["spec"] for t in traces])


def test_a_session_start_event_starts_the_session() -> None:
    """Foyle's Test_ProcessLogEvent."""
    [session] = sessions([event_line(START, "SESSION_START")]).values()
    assert session["spec"]["contextId"] == "context1"
    [event] = session["status"]["logEvents"]
    assert (event["type"], event["eventId"], event["contextId"]) == (
        "SESSION_START",
        f"e{START}",
        "context1",
    )
    assert session["status"]["startTime"] == "2024-08-09T21:24:55.000000Z"


def test_a_stream_generate_full_context_is_the_sessions_context() -> None:
    """Foyle's Test_ProcessStreamGenerate (its line has no trace id)."""
    context = {"selected": 5, "notebook": {"cells": [{"kind": "CELL_KIND_MARKUP",
               "value": "cellcontents"}]}}  # fmt: skip
    line = {"time": START, "function": STREAM, "contextId": "context1", "context": context}
    [session] = sessions([line]).values()
    assert session["status"]["fullContext"] == {
        "notebook": {
            "blocks": [
                {
                    "kind": "MARKUP",
                    "language": "",
                    "contents": "cellcontents",
                    "outputs": [],
                    "id": "",
                }
            ]
        },  # fmt: skip
        "selected": 5,
    }


def test_llm_usage_is_summed_over_the_sessions_completions() -> None:
    """Foyle's Test_processLLMUsage ("sum"), one usage line per completion."""
    lines = []
    for i, trace_id in enumerate(("t1", "t2")):
        t = START + 10 * i
        lines.append({"time": t, "function": GENERATE, "message": "Agent.Generate",
                      "traceId": trace_id, "contextId": "context1", "request": {"doc": {}}})  # fmt: skip
        lines.append({"time": t + 1, "function": USAGE, "message": "LLM usage", "traceId": trace_id,
                      "contextId": "context1", "usage": {"inputTokens": 10, "outputTokens": 20}})  # fmt: skip
    lines.append(lines[1])  # a line read twice (another file) names the same trace: no double count
    status = sessions(lines)["context1"]["status"]
    assert (status["totalInputTokens"], status["totalOutputTokens"]) == (20, 40)
    assert status["generateTraceIds"] == ["t1", "t2"]


def test_a_later_session_start_resets_the_session_as_foyle_does() -> None:
    lines = [
        event_line(START, "SESSION_START"),
        event_line(START + 1, "ACCEPTED", selectedId="c"),
        event_line(START + 2, "SESSION_START"),
        event_line(START + 3, "SESSION_END"),
    ]
    status = sessions(lines)["context1"]["status"]
    assert [e["type"] for e in status["logEvents"]] == ["SESSION_START", "SESSION_END"]
    assert status["startTime"] == "2024-08-09T21:24:57.000000Z"
    assert status["endTime"] == "2024-08-09T21:24:58.000000Z"


def session_resource(status: dict[str, Any], context: str = "01JD88ZCBD72YPBKVH8CAMC3MT") -> dict:
    spec = membership_add(None, context, "t")
    return new_resource("Session", context, spec, status)


def executed(cell_id: str, contents: str, status: str = "SUCCEEDED") -> dict[str, Any]:
    cell = {"kind": "CODE", "language": "bash", "contents": contents, "outputs": [], "id": cell_id}
    return {"type": "EXECUTE", "selectedId": cell_id, "executeStatus": status, "cells": [cell]}


END = {"type": "SESSION_END", "eventId": "end", "selectedId": "", "executeStatus": "UNKNOWN"}


def ended(*events: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a session Foyle's builder handed to its learner (it read SESSION_END)."""
    return [*events, END]


FOYLE_NOTEBOOK = {  # Foyle's Test_sessionToQuery "simple"
    "notebook": {
        "blocks": [
            {"kind": "MARKUP", "contents": "Cell 1"},
            {"kind": "MARKUP", "contents": "Cell 2"},
        ]
    },  # fmt: skip
    "selected": 1,
}


def test_session_example_is_foyles_id_query_and_trimmed_answer() -> None:
    status = {"logEvents": ended(executed("c2", "  kubectl get pods \n")),
              "fullContext": FOYLE_NOTEBOOK}  # fmt: skip
    example = example_for_session(session_resource(status))
    assert example is not None
    assert example["spec"]["id"] == "01JD88ZCBD72YPBKVH8CAMC3MT"
    assert example["spec"]["query"] == {"blocks": [{"kind": "MARKUP", "contents": "Cell 1"}]}
    assert [b["contents"] for b in example["spec"]["answer"]] == ["kubectl get pods"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"logEvents": [executed("c", "ls")], "fullContext": FOYLE_NOTEBOOK}, "no-session-end"),
        ({"logEvents": ended(), "fullContext": FOYLE_NOTEBOOK}, "no-successful-execution"),
        (
            {"logEvents": ended(executed("c", "ls", "FAILED")), "fullContext": FOYLE_NOTEBOOK},
            "no-successful-execution",
        ),  # fmt: skip
        ({"logEvents": ended(executed("c", "ls"))}, "no-context"),
        ({"logEvents": ended(executed("c", "ls")), "fullContext": {"selected": 1}}, "no-notebook"),
        (
            {
                "logEvents": ended(executed("c", "ls")),
                "fullContext": {**FOYLE_NOTEBOOK, "selected": 0},
            },
            "first-cell",
        ),  # fmt: skip
        (
            {
                "logEvents": ended(executed("c", "ls")),
                "fullContext": {**FOYLE_NOTEBOOK, "selected": 9},
            },
            "selected-out-of-range",
        ),  # fmt: skip
        (
            {
                "logEvents": ended({**executed("c", "ls"), "selectedId": "other"}),
                "fullContext": FOYLE_NOTEBOOK,
            },
            "no-executed-cell",
        ),  # fmt: skip
        ({"logEvents": ended(executed("c", "  \n")), "fullContext": FOYLE_NOTEBOOK}, "empty-block"),
    ],
)
def test_sessions_foyle_does_not_learn_from(status: dict[str, Any], reason: str) -> None:
    session = session_resource(status)
    assert session_learnability(session) == (False, reason)
    assert example_for_session(session) is None


def test_the_last_successful_execution_is_learned() -> None:
    events = ended(
        executed("c", "first"), executed("c", "second"), executed("c", "third", "FAILED")
    )
    example = example_for_session(
        session_resource({"logEvents": events, "fullContext": FOYLE_NOTEBOOK})
    )
    assert example is not None and example["spec"]["answer"][0]["contents"] == "second"


def test_the_executed_cell_is_the_last_cell_with_the_selected_id_and_cells_need_an_id() -> None:
    """learner.go's loop over execEvent.Cells: no break, and cells without an id skipped."""
    event = executed("c", "first")
    event["cells"] += [dict(event["cells"][0], contents="later"), {"kind": "CODE",
                       "contents": "no id", "id": ""}]  # fmt: skip
    session = session_resource({"logEvents": ended(event), "fullContext": FOYLE_NOTEBOOK})
    example = example_for_session(session)
    assert example is not None and example["spec"]["answer"][0]["contents"] == "later"
    no_id = {**executed("", "ls"), "selectedId": ""}
    assert session_learnability(
        session_resource({"logEvents": ended(no_id), "fullContext": FOYLE_NOTEBOOK})
    ) == (False, "no-executed-cell")


def test_an_event_without_a_context_id_of_its_own_makes_no_session() -> None:
    """session_builder.go keys on event.contextId; the line's top-level key is not read."""
    line = event_line(START, "EXECUTE", selectedId="c")
    del line["event"]["contextId"]
    assert line["contextId"] == "context1"
    assert sessions([line]) == {}


def test_an_event_id_already_in_the_session_is_dropped_as_foyle_drops_it() -> None:
    """updateSessionFromEvent: the first event of an id stays, "" counts as an id too."""
    first = event_line(START + 1, "EXECUTE", selectedId="a", eventId="same")
    again = event_line(START + 2, "EXECUTE", selectedId="b", eventId="same")
    blank = [event_line(START + 3 + i, "ACCEPTED", selectedId=c, eventId="") for i, c in
             enumerate("cd")]  # fmt: skip
    status = sessions([event_line(START, "SESSION_START"), first, again, *blank])["context1"][
        "status"
    ]
    assert [(e["type"], e["selectedId"]) for e in status["logEvents"]] == [
        ("SESSION_START", ""),
        ("EXECUTE", "a"),
        ("ACCEPTED", "c"),
    ]


def test_a_sessions_events_keep_every_cell_of_the_event() -> None:
    cells = [{"kind": "MARKUP", "value": "Fetch the logs", "metadata": {"id": "m"}},
             {"kind": "CODE", "value": "curl", "metadata": {"id": "c"}}]  # fmt: skip
    line = event_line(START, "EXECUTE", selectedId="c", cells=cells, executeStatus="SUCCEEDED")
    [event] = sessions([line])["context1"]["status"]["logEvents"]
    assert [(c["id"], c["contents"]) for c in event["cells"]] == [
        ("m", "Fetch the logs"),
        ("c", "curl"),
    ]


@pytest.fixture(scope="module")
def streaming_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("streaming") / "logs"
    generate(logs, size_bytes=200_000, seed=5, streaming=True)
    return logs


def corpus_entries(logs: Path) -> list[Any]:
    """Every line of the corpus as the controller normalises it (offset, CRC-32)."""
    entries = []
    for path in sorted(logs.rglob("*.json")):
        offset = 0
        for line in path.read_bytes().splitlines(keepends=True):
            body = line.rstrip(b"\n")
            entries.append(normalise(orjson.loads(body), offset, zlib.crc32(body)))
            offset += len(line)
    return entries


def test_sessions_do_not_depend_on_the_order_lines_are_read(streaming_corpus: Path) -> None:
    entries = corpus_entries(streaming_corpus)
    reference = sessions_of([t["spec"] for t in analyze(entries)[0]])
    assert reference and any(session_learnability_of(s) for s in reference.values())
    random.Random(1).shuffle(entries)
    assert sessions_of([t["spec"] for t in analyze(entries)[0]]) == reference
    specs = [t["spec"] for t in analyze(entries)[0]]
    for context_id, session in reference.items():  # membership in any order, same status
        by_id = {t["id"]: t for t in specs}
        assert session_status(session["spec"], by_id) == session["status"], context_id


def session_learnability_of(session: dict[str, Any]) -> bool:
    return session_learnability({"status": session["status"]})[0]


def test_the_controller_builds_the_sessions_the_pure_builder_defines(
    streaming_corpus: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    foylectl("analyze", "--logs", streaming_corpus, "--state-dir", state, "--no-learn",
             "--no-progress", "--foyle-config", tmp_path / "none.yaml")  # fmt: skip
    reference = sessions_of([t["spec"] for t in analyze(corpus_entries(streaming_corpus))[0]])
    stored = {s["spec"]["contextId"]: s for s in get_json(state, "sessions")}
    assert stored.keys() == reference.keys()
    for context_id, session in stored.items():
        status = dict(session["status"])
        learnable = status.pop("learnable")
        reason = status.pop("reason", "learnable")
        status.pop("observedGeneration")
        assert session["metadata"]["name"] == name_for_id(context_id)
        assert session["spec"] == reference[context_id]["spec"]
        assert status == reference[context_id]["status"]
        assert (learnable, reason) == session_learnability({"status": status})
    table = foylectl("get", "sessions", "--state-dir", state).stdout.splitlines()
    assert table[0].split() == ["NAME", "START", "END", "TOKENS-IN", "TOKENS-OUT", "LEARNABLE",
                                "REASON", "AGE"]  # fmt: skip
    assert len(table) == len(stored) + 1


def test_run_builds_a_session_and_learns_from_it_while_lines_arrive(tmp_path: Path) -> None:
    """Continuous: a session appended while `run` follows becomes a Session and its Example."""
    logs, state, training = tmp_path / "logs", tmp_path / "state", tmp_path / "training"
    generate(logs, size_bytes=20_000, seed=3)
    run = Foylectl("run", "--logs", logs, "--state-dir", state, "--training-dir", training,
                   "--learn-from", "sessions", "--foyle-config", tmp_path / "none.yaml",
                   log_path=tmp_path / "run.log")  # fmt: skip
    try:
        run.wait_output(RUN_READY, 30)
        store = SQLiteStore(state / "store.db")
        with Appender(logs, seed=4) as appender:
            for _ in range(10):  # until a session Foyle would learn from (most are)
                appended = appender.append(streaming=True, edit_rate=0.0)
                name = name_for_id(appended.session.context_id)
                session = wait_for(lambda n=name: _complete_session(store, n), 10, "the Session")
                if session["status"]["learnable"]:
                    break
            else:
                raise AssertionError("10 sessions and none learnable")
        # The spec lands first; the status lists the training file once it is written.
        example = wait_for(
            lambda: _trained(_get(store, "Example", name)), 10, "the session's Example trained"
        )
        assert example["spec"]["id"] == appended.session.context_id
        assert example["spec"]["session"] == name
        # Foyle's own file name for the id, the one its in-process learner writes (issue 20)
        path = training / f"{appended.session.context_id}.example.binpb"
        assert example["status"]["trainingFiles"] == [str(path)]
        assert path.is_file()
        assert store.list("Example", "foyle.io/blocklog") == []  # --learn-from sessions
        store.close()
    finally:
        assert run.stop() == 0, run.output()


def _get(store: Any, kind: str, name: str) -> dict[str, Any] | None:
    try:
        return store.get(kind, name)
    except NotFound:
        return None


def _complete_session(store: Any, name: str) -> dict[str, Any] | None:
    """The Session once its SESSION_END is in and its status derived."""
    session = _get(store, "Session", name)
    if session is None or "endTime" not in session.get("status", {}):
        return None
    return session


def _trained(example: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Example once its status lists its training files (written after its spec)."""
    if example is None or not example.get("status", {}).get("trainingFiles"):
        return None
    return example
