"""`foylectl run --store kube` as real subprocesses, on the emulator and on a real API server.

The journal stays in each process's local SQLite state dir; Traces, BlockLogs
and LogFiles go to custom resources, read back here as `kubectl get` would.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.analyze.blocklogs import membership_add
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.reconcilers.blocklog import BLOCKLOG_JOIN
from controller.reconcilers.join import membership_mutation
from controller.reconcilers.retention import due
from controller.reconcilers.session import join_sessions
from controller.reconcilers.tracecache import TraceSpecs
from controller.settings import Settings
from controller.store.base import NotFound, read_modify_write_many, write_changes
from controller.store.kube import KubeStore
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import RunningController, comparable, foylectl, kube_view, wait_for
from tests.control_plane import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

RUNME_BLOCK = "01HF7B0KJM3HHFDVSX9YFTZ8PE"
RUNME_TRACE = "01HYRKRJETPVQA84VQR9AR6J30"
DEADLINE = 60.0


def _run_kube(logs: Path, state: Path, cluster: Cluster, *extra: str) -> RunningController:
    return RunningController(
        logs,
        state,
        "--store",
        "kube",
        "--namespace",
        cluster.namespace,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--rescan-interval",
        "1",
        *extra,
    )


def _wait(runs: list[RunningController], condition: Callable[[], Any], what: str) -> None:
    """wait_for, with the controllers' logs in the failure message."""
    try:
        wait_for(condition, DEADLINE, what)
    except AssertionError as err:
        raise AssertionError("\n".join([str(err), *(r.output() for r in runs)])) from None


def _sessions(testdata: Path, suffixes: list[str]) -> bytes:
    """The RunMe sample once per suffix, each with its own trace id and the SAME block id."""
    text = (testdata / "runme_traces_lines.jsonl").read_text()
    assert RUNME_BLOCK in text and RUNME_TRACE in text
    out = []
    for suffix in suffixes:
        renamed = text.replace(RUNME_TRACE, RUNME_TRACE[: -len(suffix)] + suffix)
        out.extend(line + "\n" for line in renamed.splitlines())
    return "".join(out).encode()


def _close(store: KubeStore, runs: list[RunningController]) -> None:
    """After a test: the store closed, and any controller still running killed."""
    store.close()
    for r in runs:
        if r.proc.poll() is None:
            r.kill()


def _store(cluster: Cluster) -> KubeStore:
    return KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig))


def test_run_with_kube_store_writes_what_analyze_derives(
    cluster: Cluster, testdata: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(testdata, logs)
    _check_run_equals_analyze(cluster, logs, tmp_path)


def test_run_with_kube_store_on_a_generated_corpus_writes_what_analyze_derives(
    cluster: Cluster, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    stats = gen_logs.generate(logs, size_bytes=150_000, seed=12, bad_lines=3)
    assert stats.sessions > 10
    _check_run_equals_analyze(cluster, logs, tmp_path)


def test_with_no_trace_retention_every_trace_stays_what_analyze_derives(
    cluster: Cluster, testdata: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(testdata, logs)
    _check_run_equals_analyze(cluster, logs, tmp_path, "--trace-retention=0", retention=0.0)


def _check_run_equals_analyze(
    cluster: Cluster,
    logs: Path,
    tmp_path: Path,
    *extra: str,
    retention: float = Settings().trace_retention,
) -> None:
    """`run --store kube` converges on what `analyze` derives: BlockLogs and Sessions the
    same, and the Traces not finished `retention` ago (0: all), the others settled."""
    foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "oneshot", "--no-learn")
    expected = SQLiteStore(tmp_path / "oneshot" / "store.db")
    want = {kind: comparable(expected.list(kind)) for kind in ("Trace", "BlockLog", "Session")}
    assert want["Trace"] and want["BlockLog"]
    if retention:
        now = time.time()
        want["Trace"] = {n: t for n, t in want["Trace"].items() if not due(t, now, retention)}
        assert len(want["Trace"]) < len(expected.list("Trace")), "some are settled"

    store = _store(cluster)
    run = _run_kube(logs, tmp_path / "node-a", cluster, "--node", "node-a", "--no-learn", *extra)
    try:
        for kind in want:
            _wait(
                [run],
                lambda kind=kind: kube_view(store.list(kind)) == want[kind],
                f"the {kind}s that analyze derives",
            )
        settled = {t for o in store.list("BlockLog") for t in o["spec"].get("settled", {})}
        assert bool(settled) == bool(retention)
        logfiles = store.list("LogFile")
        assert {o["spec"]["path"] for o in logfiles} == {
            str(p) for p in logs.rglob("*") if p.suffix in (".json", ".jsonl")
        }
        assert {o["spec"]["node"] for o in logfiles} == {"node-a"}
        assert (tmp_path / "node-a" / "journal.db").exists()  # the journal stays node-local
        assert run.terminate() == 0
    finally:
        store.close()
        if run.proc.poll() is None:
            run.kill()


def test_two_ingesters_executing_one_block_lose_no_membership_update(
    cluster: Cluster, testdata: Path, tmp_path: Path
) -> None:
    suffixes = {"a": [f"A{i:02d}" for i in range(8)], "b": [f"B{i:02d}" for i in range(8)]}
    runs = []
    for node, node_suffixes in suffixes.items():
        logs = tmp_path / f"logs-{node}"
        logs.mkdir()
        (logs / "logs.2024-05-25T12:30:40.json").write_bytes(_sessions(testdata, node_suffixes))
    store = _store(cluster)
    try:
        for node in suffixes:  # both start at once, so their writes to the BlockLog race
            runs.append(
                _run_kube(
                    tmp_path / f"logs-{node}",
                    tmp_path / f"state-{node}",
                    cluster,
                    "--node",
                    f"node-{node}",
                    "--no-learn",
                    "--workers",
                    "4",
                )
            )
        every_trace = {RUNME_TRACE[:-3] + s for group in suffixes.values() for s in group}

        def members() -> set[str]:
            try:
                blocklog = store.get("BlockLog", name_for_id(RUNME_BLOCK))
            except NotFound:
                return set()
            return set(blocklog["spec"].get("execTraceIds") or [])

        _wait(runs, lambda: members() == every_trace, "all 16 executions in the BlockLog")
        _wait(
            runs,
            lambda: (
                store.get("BlockLog", name_for_id(RUNME_BLOCK)).get("status", {}).get("executions")
                == 16
            ),
            "the BlockLog status to count both nodes' executions",
        )
        assert {o["spec"]["node"] for o in store.list("LogFile")} == {"node-a", "node-b"}
        assert [r.terminate() for r in runs] == [0, 0]
    finally:
        _close(store, runs)


def test_two_ingesters_on_disjoint_log_dirs_end_where_analyze_does(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Foyle's logs on one node, RunMe's on another: their traces join the same BlockLogs
    and Sessions, written concurrently from two watch-fed caches; nothing is lost."""
    logs = tmp_path / "logs"
    gen_logs.generate(logs, size_bytes=150_000, seed=19, streaming=True)
    foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "oneshot", "--no-learn")
    expected = SQLiteStore(tmp_path / "oneshot" / "store.db")
    want = {kind: comparable(expected.list(kind)) for kind in ("BlockLog", "Session")}
    assert want["BlockLog"] and want["Session"]
    store = _store(cluster)
    runs = [
        _run_kube(logs / part, tmp_path / f"state-{part}", cluster, "--node", part, "--no-learn")
        for part in ("foyle", "runme")
    ]
    try:
        for kind in want:
            _wait(
                runs,
                lambda kind=kind: kube_view(store.list(kind)) == want[kind],
                f"the {kind}s that analyze derives",
            )
        assert [r.terminate() for r in runs] == [0, 0]
    finally:
        _close(store, runs)


def test_an_ingester_derives_statuses_again_when_another_writes_members(
    cluster: Cluster, tmp_path: Path
) -> None:
    """RunMe's ingester has written its traces and the statuses it could derive; then
    another ingester (played here with the very functions it uses: membership first,
    then the Trace) adds Foyle's traces and stops before deriving anything. The first
    one learns of them from its watches and derives the statuses analyze derives."""
    logs = tmp_path / "logs"
    gen_logs.generate(logs, size_bytes=40_000, seed=5, streaming=True)
    foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "oneshot", "--no-learn")
    expected = SQLiteStore(tmp_path / "oneshot" / "store.db")
    want = {kind: comparable(expected.list(kind)) for kind in ("BlockLog", "Session")}
    foylectl("analyze", "--logs", logs / "runme", "--state-dir", tmp_path / "r", "--no-learn")
    runme_traces = {
        t["metadata"]["name"] for t in SQLiteStore(tmp_path / "r" / "store.db").list("Trace")
    }
    store = _store(cluster)
    runme = _run_kube(
        logs / "runme", tmp_path / "state-runme", cluster, "--no-learn", "--trace-retention=0"
    )
    try:
        _wait(
            [runme],
            lambda: (
                {t["metadata"]["name"] for t in store.list("Trace")} == runme_traces
                and _all_observed(store)
            ),
            "the RunMe ingester's traces and statuses",
        )
        others = [t for t in expected.list("Trace") if t["metadata"]["name"] not in runme_traces]
        assert others, "the Foyle logs hold traces of their own"
        for trace in others:
            spec = trace["spec"]
            read_modify_write_many(
                store,
                "BlockLog",
                {
                    name_for_id(b): membership_mutation(
                        BLOCKLOG_JOIN,
                        b,
                        [lambda s, b=b, spec=spec: membership_add(s, b, spec)],
                        lambda _: None,  # its Trace not written yet: the status left stale
                    )
                    for b in spec.get("blockIds", [])
                },
            )
            join_sessions(store, [(spec, "", False)], TraceSpecs(store), {})
            write_changes(store, None, new_resource("Trace", spec["id"], spec, trace["status"]))
        for kind in want:
            _wait(
                [runme],
                lambda kind=kind: kube_view(store.list(kind)) == want[kind],
                f"the {kind}s that analyze derives",
            )
    finally:
        _close(store, [runme])


def _all_observed(store: KubeStore) -> bool:
    """Every BlockLog's and Session's status derived from its current members."""
    return all(
        o.get("status", {}).get("observedGeneration") == o["metadata"].get("generation")
        for kind in ("BlockLog", "Session")
        for o in store.list(kind)
    )


def test_sigterm_ends_the_kube_ingester_within_5_seconds_without_errors(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A pod's grace period must not be what stops it (issue 18: it took 25.5 s, with
    urllib3 SSLError warnings): SIGTERM while catching up drains and exits in 5 s."""
    logs = tmp_path / "logs"
    gen_logs.generate(logs, size_bytes=3_000_000, seed=18)
    run = _run_kube(logs, tmp_path / "state", cluster)
    run.wait_started()
    _wait([run], lambda: "catching up:" in run.output(), "catching up")
    started = time.monotonic()
    code = run.terminate(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, run.output()
    assert elapsed < 5.0, f"{elapsed:.1f}s\n{run.output()}"
    assert "Error" not in run.output(), run.output()
