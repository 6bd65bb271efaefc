"""`foylectl get` and friends behave as a kubectl user expects (issue 13, items 15, 17-23).

Resources are written into a real SQLite store with the labels and values
each test needs, and the real `foylectl` reads them in a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api.resource import new_resource
from controller.store.base import write_changes
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl

pytestmark = pytest.mark.timeout(120)


def trace(
    raw_id: str, kind: str = "Execute", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return new_resource(
        "Trace",
        raw_id,
        {"id": raw_id, "kind": kind, "startTime": "2024-04-16T21:44:30.400788Z", **spec},
        {"phase": "Complete", "entries": 2},
        labels=labels,
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose store holds three traces, one BlockLog and one LogFile."""
    path = tmp_path / "state"
    path.mkdir()
    with SQLiteStore(path / "store.db") as store:
        write_changes(store, None, trace("t-one", labels={"env": "prod", "tier": "a"}, exitCode=2))
        write_changes(store, None, trace("t-two", "Generate", labels={"env": "dev"}))
        write_changes(store, None, trace("t-three", "RunMe", exitCode=0))
        write_changes(
            store, None, new_resource("BlockLog", "b-one", {"id": "b-one", "genTraceId": "t-two"})
        )
        long_path = "/var/log/" + "deeply/nested/" * 5 + "session.jsonl"
        write_changes(
            store,
            None,
            new_resource("LogFile", "lf-one", {"path": long_path, "node": "n1"}, {"phase": "Idle"}),
        )
    yield path


def get(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return foylectl("get", *args, "--state-dir", state, check=check)


def names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


# -- 17. exit codes, empty lists, bare foylectl ------------------------------------------


def test_empty_list_says_no_resources_found_on_stderr_and_exits_0(state: Path) -> None:
    proc = get(state, "examples")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr.strip() == "No resources found."
    listed = json.loads(get(state, "examples", "-o", "json").stdout)
    assert listed["items"] == []


def test_bare_foylectl_prints_help_and_exits_0() -> None:
    proc = foylectl()
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: foylectl") and "COMMAND" in proc.stdout


def test_missing_store_is_a_runtime_error_exit_1(tmp_path: Path) -> None:
    proc = get(tmp_path / "nothing", "bl", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("foylectl: error: no store at")


# -- 18. -o name round trip, several kinds and names --------------------------------------


def test_what_o_name_prints_can_be_fed_back_to_get_and_describe(state: Path) -> None:
    printed = get(state, "bl", "-o", "name").stdout.split()
    assert printed == ["blocklog.foyle.io/b-one"]
    for spelling in ("blocklog.foyle.io/b-one", "blocklog/b-one", "bl/b-one"):
        assert get(state, spelling, "-o", "name").stdout.split() == printed
    described = foylectl("describe", "blocklog.foyle.io/b-one", "--state-dir", state).stdout
    assert described.startswith("Name:         b-one")


def test_several_kinds_and_several_names(state: Path) -> None:
    both = get(state, "bl,tr", "-o", "name").stdout.split()
    assert both == [
        "blocklog.foyle.io/b-one",
        "trace.foyle.io/t-one",
        "trace.foyle.io/t-three",
        "trace.foyle.io/t-two",
    ]
    assert get(state, "tr", "t-two", "t-one", "-o", "name").stdout.split() == [
        "trace.foyle.io/t-two",
        "trace.foyle.io/t-one",
    ]
    mixed = get(state, "tr/t-one", "bl/b-one", "-o", "name").stdout.split()
    assert mixed == ["trace.foyle.io/t-one", "blocklog.foyle.io/b-one"]


def test_a_missing_name_among_found_ones_prints_the_found_and_exits_1(state: Path) -> None:
    proc = get(state, "tr", "t-one", "nope", "-o", "name", check=False)
    assert proc.returncode == 1
    assert proc.stdout.split() == ["trace.foyle.io/t-one"]
    store = state / "store.db"
    assert proc.stderr.strip() == f'Error (NotFound): traces.foyle.io "nope" not found in {store}'


# -- 19. label selectors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env in (prod,dev)", ["t-one", "t-two"]),
        ("env notin (prod)", ["t-three", "t-two"]),
        ("!env", ["t-three"]),
        ("env,tier=a", ["t-one"]),
        ("env!=dev", ["t-one", "t-three"]),
    ],
)
def test_set_based_selectors_select_as_kubectl_does(
    state: Path, selector: str, expected: list[str]
) -> None:
    assert names(get(state, "tr", "-l", selector).stdout) == expected


@pytest.mark.parametrize("selector", ["env=prod=x", "env in prod", "env in (prod", "=x", "a b"])
def test_malformed_selector_is_a_usage_error(state: Path, selector: str) -> None:
    proc = get(state, "tr", "-l", selector, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("foylectl: error: invalid label selector")


# -- 20. namespace, headers, labels, sorting, templates, watch, version, completion ---------


def test_namespace_with_the_sqlite_store_is_an_error_not_ignored(state: Path) -> None:
    proc = get(state, "tr", "-n", "other", check=False)
    assert proc.returncode == 2 and "-n/--namespace is for --store kube" in proc.stderr


def test_no_headers_show_labels_and_sort_by(state: Path) -> None:
    out = get(state, "tr", "--no-headers", "--show-labels", "--sort-by", ".spec.kind").stdout
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows] == ["t-one", "t-two", "t-three"]  # Execute, Generate, RunMe
    assert [r[-1] for r in rows] == ["env=prod,tier=a", "env=dev", "<none>"]
    by_exit = get(state, "tr", "--sort-by", "{.spec.exitCode}", "-o", "name").stdout.split()
    assert by_exit == ["trace.foyle.io/t-two", "trace.foyle.io/t-three", "trace.foyle.io/t-one"]


def test_jsonpath_and_custom_columns_outputs(state: Path) -> None:
    template = '{range .items[*]}{.spec.id}={.spec.exitCode}{"\\n"}{end}'
    assert get(state, "tr", "-o", f"jsonpath={template}").stdout == ("t-one=2\nt-three=0\nt-two=\n")
    assert get(state, "tr", "t-one", "-o", "jsonpath={.spec.kind}").stdout == "Execute"
    out = get(state, "tr", "-o", "custom-columns=ID:.spec.id,LABEL:.metadata.labels.env").stdout
    assert [line.split() for line in out.splitlines()] == [
        ["ID", "LABEL"],
        ["t-one", "prod"],
        ["t-three", "<none>"],
        ["t-two", "dev"],
    ]
    bad = get(state, "tr", "-o", "custom-columns=ID", check=False)
    assert bad.returncode == 2 and "custom-columns wants HEADER:JSONPATH" in bad.stderr


def test_version_and_shell_completion() -> None:
    assert foylectl("--version").stdout.strip() == "foylectl 0.1.0"
    script = foylectl("completion", "bash").stdout
    assert "complete -o default -F _foylectl foylectl" in script
    assert "--sort-by" in script and "blocklogs" in script
    completed = subprocess.run(
        [
            "bash",
            "-c",
            script + "\nCOMP_WORDS=(foylectl get bl); COMP_CWORD=2; _foylectl;"
            ' echo "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(completed.stdout.split()) == ["bl", "blocklogs"]


class Watch:
    """`foylectl get -w` as a subprocess, read line by line."""

    def __init__(self, state: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "get", *args, "-w", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def lines(self, n: int) -> list[str]:
        assert self.proc.stdout is not None
        return [self.proc.stdout.readline() for _ in range(n)]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_watch_rows_keep_the_columns_of_the_header(state: Path) -> None:
    watch = Watch(state, "tr")
    try:
        header = watch.lines(4)[0]
        with SQLiteStore(state / "store.db") as store:
            write_changes(store, None, trace("t4", "Execute", exitCode=1))
        _, row = watch.lines(2)  # created, then its status written
    finally:
        watch.close()
    for column in ("KIND", "PHASE", "EXIT"):  # EVAL is empty here, as kubectl prints it
        start = header.index(column)
        assert row[start - 3 : start] == "   " and row[start] != " ", (column, header, row)


def test_watch_with_json_prints_one_object_per_event(state: Path) -> None:
    watch = Watch(state, "bl", "-o", "json")
    try:
        assert watch.proc.stdout is not None
        first = json.loads("".join(watch.lines(_json_lines(state))))
        assert first["kind"] == "BlockLog"
        with SQLiteStore(state / "store.db") as store:
            write_changes(store, None, new_resource("BlockLog", "b-two", {"id": "b-two"}))
        text = ""
        while True:
            text += watch.lines(1)[0]
            try:
                event = json.loads(text)
                break
            except json.JSONDecodeError:
                continue
    finally:
        watch.close()
    assert (event["kind"], event["metadata"]["name"]) == ("BlockLog", "b-two")


def _json_lines(state: Path) -> int:
    doc = json.loads(get(state, "bl", "b-one", "-o", "json").stdout)
    return len(json.dumps(doc, indent=2, ensure_ascii=False).splitlines())


# -- 21. LogFiles by path -------------------------------------------------------------------


def test_logfile_is_found_by_its_path_and_tables_show_the_whole_path(state: Path) -> None:
    long_path = "/var/log/" + "deeply/nested/" * 5 + "session.jsonl"
    assert get(state, "lf", long_path, "-o", "name").stdout.split() == ["logfile.foyle.io/lf-one"]
    # kubectl cuts no printer-column cell (checked against the real one: test_apiserver_kubectl)
    assert long_path in get(state, "lf").stdout
    assert long_path in get(state, "lf", "-o", "wide").stdout


# -- 22. input validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "--max-line-bytes", "-5"], "invalid positive integer value: '-5'"),
        (["examples", "search", "x", "-k", "0"], "invalid positive integer value: '0'"),
        (["run", "--metrics-addr", "localhost"], "invalid HOST:PORT value"),
        (["run", "--rescan-interval", "nan"], "invalid positive number value"),
    ],
)
def test_bad_numbers_and_addresses_are_one_line_usage_errors(args: list[str], message: str) -> None:
    proc = foylectl(*args, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_operator_without_a_kubeconfig_fails_fast_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "operator", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "no Kubernetes configuration" in proc.stderr


# -- 15. control characters from log data -----------------------------------------------------


def test_control_characters_in_log_data_are_escaped_in_table_and_describe(state: Path) -> None:
    with SQLiteStore(state / "store.db") as store:
        write_changes(
            store,
            None,
            new_resource(
                "BlockLog",
                "b-evil",
                {"id": "b-evil", "genTraceId": "\x1b[31mred\x1b[0m"},
                {"generatedBlock": {"contents": "\x1b]0;pwned\x07title", "language": "\x9b2J"}},
            ),
        )
    table = get(state, "bl", "b-evil").stdout
    described = foylectl("describe", "bl", "b-evil", "--state-dir", state).stdout
    for out in (table, described):
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b[31mred\\x1b[0m" in table
    assert "\\x1b]0;pwned\\x07title" in described and "\\x9b2J" in described


def test_a_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path, testdata: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = foylectl(
            "run",
            "--logs",
            testdata,
            "--state-dir",
            tmp_path / "s",
            "--no-learn",
            "--metrics-addr",
            f":{port}",
            check=False,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"foylectl: error: cannot serve on :{port}: Address already in use"
    )
    assert "Traceback" not in proc.stderr
