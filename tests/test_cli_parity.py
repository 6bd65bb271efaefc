"""kubectl parity, part two (issue 22): what a newcomer still tripped over.

Resources are written into a real SQLite store and the real `foylectl` reads
them in a subprocess, as in test_cli_kubectl.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.analyze.blocklogs import blocklog_status, member_ids, membership_add
from controller.api.kinds import KINDS
from controller.api.resource import new_resource
from controller.store.base import write_changes
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl, wait_for

pytestmark = pytest.mark.timeout(120)

BLOCK = "b-fix"
T0 = "2024-04-16T21:44:30.000000Z"


def _trace(raw_id: str, kind: str, start: str, **spec: Any) -> dict[str, Any]:
    return new_resource(
        "Trace",
        raw_id,
        {"id": raw_id, "kind": kind, "startTime": start, **spec},
        {"phase": "Complete"},
    )


def _cell(contents: str) -> dict[str, Any]:
    return {"kind": "CODE", "language": "bash", "contents": contents, "id": BLOCK}


def blocklog_with_history(store: SQLiteStore, executed: list[tuple[str, str, int]]) -> None:
    """A suggestion of `kubectl get pods`, then executions (time, contents, exit), accepted."""
    traces = [
        _trace(
            "gen-1",
            "Generate",
            T0,
            request={"doc": {"blocks": [{"kind": "MARKUP", "contents": "list pods"}]}},
            response={"blocks": [_cell("kubectl get pods")]},
        ),
        _trace(
            "ev-acc", "LogEvent", "2024-04-16T21:44:31.000000Z", request={"eventType": "ACCEPTED"}
        ),
    ]
    for i, (start, contents, exit_code) in enumerate(executed):
        traces.append(
            _trace(
                f"exec-{i}",
                "Execute",
                start,
                request={"block": _cell(contents)},
                exitCode=exit_code,
            )
        )
    spec = {
        "id": BLOCK,
        "genTraceId": "gen-1",
        "execTraceIds": [f"exec-{i}" for i in range(len(executed))],
        "eventIds": ["ev-acc"],
    }
    status = blocklog_status(spec, {t["spec"]["id"]: t["spec"] for t in traces})
    for obj in [*traces, new_resource("BlockLog", BLOCK, spec, status)]:
        write_changes(store, None, obj)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    with SQLiteStore(path / "store.db") as store:
        blocklog_with_history(
            store,
            [
                ("2024-04-16T21:44:35.000000Z", "kubectl get pods", 1),
                ("2024-04-16T21:44:40.500000Z", "kubectl get pods", 0),
            ],
        )
    return path


def describe(state: Path, *args: str, check: bool = True) -> Any:
    return foylectl("describe", *args, "--state-dir", state, check=check)


# -- 3. describe finds what get finds, says NotFound once, takes several names ---------------


def test_describe_of_a_missing_name_is_one_notfound_line_without_a_doubled_prefix(
    state: Path,
) -> None:
    proc = describe(state, "bl", "nope", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    store = state / "store.db"
    assert proc.stderr == f'Error (NotFound): blocklogs.foyle.io "nope" not found in {store}\n'


def test_describe_accepts_what_o_name_prints_after_the_kind_and_several_names(
    state: Path,
) -> None:
    printed = foylectl("get", "bl", "-o", "name", "--state-dir", state).stdout.strip()
    assert printed == f"blocklog.foyle.io/{BLOCK}"
    assert describe(state, "bl", printed).stdout.startswith(f"Name:         {BLOCK}")
    assert (
        foylectl("get", "bl", printed, "-o", "name", "--state-dir", state).stdout.strip() == printed
    )
    both = describe(state, "bl", BLOCK, "nope", check=False)
    assert both.returncode == 1 and both.stdout.startswith(f"Name:         {BLOCK}")
    assert both.stderr.startswith('Error (NotFound): blocklogs.foyle.io "nope"')
    assert "usage:" not in both.stderr
    traces = describe(state, "tr", "gen-1", "exec-0").stdout
    assert traces.count("Name:  ") == 2


def test_a_kind_prefix_naming_another_kind_is_a_usage_error(state: Path) -> None:
    proc = describe(state, "bl", "trace.foyle.io/gen-1", check=False)
    assert proc.returncode == 2 and "names a trace, not a blocklog" in proc.stderr


# -- 4. every kind is named when none is given ------------------------------------------------


def test_get_without_a_kind_names_every_kind(state: Path) -> None:
    proc = foylectl("get", "--state-dir", state, check=False)
    assert proc.returncode == 2
    for info in KINDS:
        assert f"{info.plural} ({'/'.join(info.short_names)})" in proc.stderr


def test_describe_and_learn_help_name_sessions() -> None:
    assert "sessions (se)" in " ".join(foylectl("describe", "--help").stdout.split())
    assert "Session" in foylectl("learn", "--help").stdout
    [learn] = [
        line for line in foylectl("--help").stdout.splitlines() if line.split()[:1] == ["learn"]
    ]
    assert "Session" in learn


# -- 11. a block's life as a timeline ---------------------------------------------------------


def timeline(text: str) -> list[str]:
    return text.split("Timeline:\n", 1)[1].splitlines()


def test_describe_blocklog_draws_its_life_and_why_it_is_not_learnable(state: Path) -> None:
    lines = timeline(describe(state, "bl", BLOCK).stdout)
    assert [line.split("─ ", 1)[1] for line in lines] == [
        "suggested by Foyle (Generate trace gen-1)",
        "suggestion accepted",
        "executed, exit 1 (Execute trace exec-0)",
        "executed, exit 0 (Execute trace exec-1)",
        "not learnable: unchanged suggestion: nothing to learn",
    ]
    assert lines[0].split()[:2] == ["2024-04-16T21:44:30.000000Z", "+0.0s"]
    assert lines[3].split()[:2] == ["2024-04-16T21:44:40.500000Z", "+10.5s"]
    assert lines[-1].lstrip().startswith("└─")


def test_a_settled_block_draws_its_life_from_what_its_blocklog_keeps(tmp_path: Path) -> None:
    """In a cluster a finished Trace is deleted once its BlockLog keeps its contribution
    (issue 19): the timeline is drawn from that instead."""
    with SQLiteStore(tmp_path / "store.db") as store:
        blocklog_with_history(store, [("2024-04-16T21:45:00.000000Z", "kubectl get pods", 0)])
        traces = {t["spec"]["id"]: t["spec"] for t in store.list("Trace")}
        blocklog = store.get("BlockLog", BLOCK)
    want = timeline(describe(tmp_path, "bl", BLOCK).stdout)
    spec = blocklog["spec"]
    for trace_id in member_ids(spec):
        spec = membership_add(spec, BLOCK, traces[trace_id], listed_before=True, settled=True)
    with SQLiteStore(tmp_path / "settled" / "store.db") as store:
        write_changes(store, None, new_resource("BlockLog", BLOCK, spec, blocklog["status"]))
    assert timeline(describe(tmp_path / "settled", "bl", BLOCK).stdout) == want


def test_a_learnable_block_says_what_became_of_its_example(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "store.db") as store:
        blocklog_with_history(store, [("2024-04-16T21:45:00.000000Z", "kubectl get pods -A", 0)])
    verdict = timeline(describe(tmp_path, "bl", BLOCK).stdout)[-1]
    assert verdict.endswith("Foyle learns the fix; no Example yet (is a learner running?)")
    with SQLiteStore(tmp_path / "store.db") as store:
        example = new_resource(
            "Example", BLOCK, {"id": BLOCK}, {"foyleLoadable": False, "reason": "NoEmbedding"}
        )
        write_changes(store, None, example)
    verdict = timeline(describe(tmp_path, "blocklog.foyle.io/" + BLOCK).stdout)[-1]
    assert verdict.endswith("Example written, but no embedding provider: Foyle will skip it")


def test_describe_session_draws_its_events_and_learnability(tmp_path: Path) -> None:
    events = [
        {"type": "SESSION_START", "time": "2024-08-30T04:55:50.000000Z"},
        {"type": "ACCEPTED", "time": "2024-08-30T04:55:51.000000Z", "selectedId": BLOCK},
        {
            "type": "EXECUTE",
            "time": "2024-08-30T04:55:55.000000Z",
            "selectedId": BLOCK,
            "executeStatus": "FAILED",
        },
        {"type": "SESSION_END", "time": "2024-08-30T04:55:58.000000Z"},
    ]
    lines = _session_timeline(tmp_path, events)
    assert [line.split("─ ", 1)[1] for line in lines] == [
        "session started",
        "suggestion accepted",
        f"executed cell {BLOCK}: failed",
        "session ended",
        "not learnable: no successful execution: nothing to learn",
    ]
    assert "+5.0s" in lines[2]


def test_describe_a_session_not_ended_says_foyle_waits_for_its_end(tmp_path: Path) -> None:
    events = [{"type": "SESSION_START", "time": "2024-08-30T04:55:50.000000Z"}]
    [*_, verdict] = _session_timeline(tmp_path, events)
    assert verdict.endswith(
        "not learnable: the session has not ended yet: Foyle learns a session once it ends"
    )


def _session_timeline(tmp_path: Path, events: list[dict[str, str]]) -> list[str]:
    session = new_resource(
        "Session",
        "ctx-1",
        {"contextId": "ctx-1"},
        {"startTime": "2024-08-30T04:55:50.000000Z", "logEvents": events},
    )
    with SQLiteStore(tmp_path / "store.db") as store:
        write_changes(store, None, session)
    return timeline(describe(tmp_path, "se", "ctx-1").stdout)


# -- 1. get -w on an empty store: the header comes with the first event, columns hold ---------


def test_watch_on_an_empty_store_prints_the_header_with_the_first_event(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "store.db").close()
    errors = tmp_path / "watch.err"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "get", "bl", "-w", "--state-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        wait_for(lambda: "No resources found." in errors.read_text(), 30, "the empty listing")
        with SQLiteStore(tmp_path / "store.db") as store:
            write_changes(store, None, new_resource("BlockLog", "b1", {"id": "b1"}))
            status = {
                "executions": 3,
                "exitCode": 1,
                "evalMode": False,
                "suggestionStatus": "Accepted",
            }
            gen = {"id": "b2", "genTraceId": "8038339848652bc1b97789cd9aa98341"}
            write_changes(store, None, new_resource("BlockLog", "b2", gen, status))
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while "Accepted" not in lines[-1]:  # b2's status comes in an event of its own
            assert lines[-1], f"the watch ended: {lines}"
            lines.append(proc.stdout.readline())
        header, first, second = lines[0], lines[1], lines[-1]
    finally:
        proc.kill()
        proc.wait()
    assert header.split() == ["NAME", "GEN-TRACE", "EXECUTIONS", "EXIT", "EVAL", "STATUS", "AGE"]
    assert first.split()[0] == "b1" and second.split()[0] == "b2"
    columns = (("GEN-TRACE", "8038"), ("EVAL", "false"), ("STATUS", "Accepted"), ("AGE", ""))
    for column, value in columns:
        start = header.index(column)
        assert second[start - 3 : start] == "   ", (column, header, second)
        assert second[start:].startswith(value), (column, header, second)
        assert first[start:].strip() == "" or first[start - 1] == " ", (column, header, first)
    assert first.rstrip().endswith("s") and header.index("AGE") == first.rstrip().rindex(" ") + 1


# -- 2. --sort-by refuses what kubectl refuses; JSONPath filters --------------------------------


@pytest.mark.parametrize(
    ("sort_by", "code", "message"),
    [
        (".status.nonexistent", 1, 'find any field with path "{.status.nonexistent}" in the'),
        ("executions", 1, 'find any field with path "{.executions}" in the list of objects'),
        ("{.status.executions", 2, "unclosed action"),
    ],
)
def test_sort_by_a_field_nobody_has_or_a_malformed_path_is_an_error(
    state: Path, sort_by: str, code: int, message: str
) -> None:
    proc = foylectl("get", "tr", "--sort-by", sort_by, "--state-dir", state, check=False)
    assert (proc.returncode, proc.stdout) == (code, "")
    assert proc.stderr.startswith("foylectl: error:") and message in proc.stderr


def test_sort_by_a_field_some_have_sorts(state: Path) -> None:
    out = foylectl("get", "tr", "--sort-by", ".spec.exitCode", "-o", "name", "--state-dir", state)
    assert out.stdout.split()[-2:] == ["trace.foyle.io/exec-1", "trace.foyle.io/exec-0"]


def test_jsonpath_filters_select_as_kubectl_does(state: Path) -> None:
    def jsonpath(template: str) -> str:
        return foylectl("get", "tr", "-o", f"jsonpath={template}", "--state-dir", state).stdout

    assert jsonpath('{.items[?(@.spec.kind=="Execute")].metadata.name}') == "exec-0 exec-1"
    assert jsonpath("{.items[?(@.spec.exitCode>0)].metadata.name}") == "exec-0"
    assert jsonpath("{.items[?(@.spec.kind!='Execute')].spec.kind}") == "LogEvent Generate"
    assert jsonpath("{.items[?(@.spec.exitCode)].metadata.name}") == "exec-0 exec-1"
    ranged = '{range .items[?(@.spec.exitCode==0)]}{.metadata.name}{"\\n"}{end}'
    assert jsonpath(ranged) == "exec-1\n"
    status = foylectl(
        "get",
        "bl",
        "-o",
        'jsonpath={.items[?(@.status.suggestionStatus=="Accepted")].metadata.name}',
        "--state-dir",
        state,
    )
    assert status.stdout == BLOCK


# -- 6. multi-line strings as YAML block scalars ---------------------------------------------


def test_yaml_prints_multi_line_commands_as_block_scalars(tmp_path: Path) -> None:
    commands = "kubectl get pods\n\nkubectl logs web-0\n"
    with SQLiteStore(tmp_path / "store.db") as store:
        write_changes(store, None, _trace("r-1", "RunMe", T0, request={"script": commands}))
    out = foylectl("get", "tr", "r-1", "-o", "yaml", "--state-dir", tmp_path).stdout
    assert "    script: |\n      kubectl get pods\n\n      kubectl logs web-0\n" in out
    assert yaml.safe_load(out)["spec"]["request"]["script"] == commands


# -- 5. Examples: INDEXED is an age; search scores tell examples apart and show the query --------


def _example(name: str, query: str, answer: str, indexed: str) -> dict[str, Any]:
    spec = {
        "id": name,
        "query": {"blocks": [{"kind": "MARKUP", "contents": query}]},
        "answer": [{"kind": "CODE", "contents": answer}],
    }
    return new_resource("Example", name, spec, {"indexedTime": indexed, "foyleLoadable": True})


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    from controller.api.resource import rfc3339
    from controller.index.retrieval import ExampleIndex
    from controller.learn.query import blocks_to_markdown

    two_hours_ago = rfc3339(time.time() - 7200)
    wanted = [
        _example("ex-pods", "list the pods", "kubectl get pods", two_hours_ago),
        _example(
            "ex-ns",
            "list the pods in the kube-system namespace",
            "kubectl get pods -n kube-system",
            two_hours_ago,
        ),
        _example("ex-delete", "delete the pods", "kubectl delete pods --all", two_hours_ago),
    ]
    index = ExampleIndex(tmp_path / "examples-index.db")
    with SQLiteStore(tmp_path / "store.db") as store:
        for example in wanted:
            write_changes(store, None, example)
            text = blocks_to_markdown(example["spec"]["query"]["blocks"])
            index.upsert(example["metadata"]["name"], text, json.dumps(example))
    index.close()
    return tmp_path


def test_the_indexed_column_is_an_age(examples: Path) -> None:
    out = foylectl("get", "ex", "--state-dir", examples).stdout.splitlines()
    assert out[0].split() == ["NAME", "BLOCKLOG", "FOYLE", "REASON", "INDEXED", "AGE"]
    indexed = out[0].index("INDEXED")
    assert {line[indexed:].split()[0] for line in out[1:]} == {"2h"}


def test_search_scores_tell_examples_apart_and_show_the_query(examples: Path) -> None:
    search = ("examples", "search", "list pods", "--state-dir", examples)
    hits = json.loads(foylectl(*search, "-o", "json").stdout)
    assert [h["name"] for h in hits] == ["ex-pods", "ex-ns", "ex-delete"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(set(scores), reverse=True), scores  # no ties
    table = foylectl(*search).stdout
    assert "   query:  list the pods\n   answer: kubectl get pods\n" in table


@pytest.mark.parametrize("text", ["", "   "])
def test_search_for_nothing_is_a_usage_error(examples: Path, text: str) -> None:
    proc = foylectl("examples", "search", text, "--state-dir", examples, check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "foylectl: error: examples search needs TEXT to search for\n"
