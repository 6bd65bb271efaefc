"""kubectl parity, part two (issue 22): what a newcomer still tripped over.

Resources are written into a real SQLite store and the real `foylectl` reads
them in a subprocess, as in test_cli_kubectl.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.analyze.blocklogs import blocklog_status
from controller.api.kinds import KINDS
from controller.api.resource import new_resource
from controller.store.base import write_changes
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl

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
    ]
    session = new_resource(
        "Session",
        "ctx-1",
        {"contextId": "ctx-1"},
        {"startTime": "2024-08-30T04:55:50.000000Z", "logEvents": events},
    )
    with SQLiteStore(tmp_path / "store.db") as store:
        write_changes(store, None, session)
    lines = timeline(describe(tmp_path, "se", "ctx-1").stdout)
    assert [line.split("─ ", 1)[1] for line in lines] == [
        "session started",
        "suggestion accepted",
        f"executed cell {BLOCK}: failed",
        "not learnable: no successful execution: nothing to learn",
    ]
    assert "+5.0s" in lines[2]
