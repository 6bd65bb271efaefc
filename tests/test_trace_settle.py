"""Trace retention in kube mode (issue 19): a Trace finished `settle_after` seconds ago is
settled into its BlockLog and deleted, and the BlockLog still joins what analyze derives.

The reconcilers run by hand on a real journal, on the emulator and on a real API server."""

from __future__ import annotations

from pathlib import Path

import orjson

from controller.analyze.blocklogs import MAX_LISTED
from controller.api.resource import parse_rfc3339
from controller.reconcilers.retention import TraceRetention
from controller.reconcilers.trace import TraceSettings
from controller.store.base import Store
from controller.store.kube import KubeStore
from tests.cli_helpers import comparable, foylectl
from tests.control_plane import Cluster
from tests.fakes import FakeClock
from tests.test_trace_reconciler import RUNME_BLOCK, RUNME_TRACE, Pipeline, expected, runme_lines

HOUR = 3600.0
KINDS = ("Trace", "BlockLog", "LogFile")


def _kube_pipeline(tmp_path: Path, cluster: Cluster, clock: FakeClock) -> Pipeline:
    store = KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig), cached_kinds=KINDS)
    return Pipeline(tmp_path, clock, TraceSettings(settle_after=HOUR), store)


def _view(store: Store, kind: str) -> dict[str, dict]:
    view = comparable(store.list(kind))
    for obj in view.values():
        obj["metadata"].pop("namespace", None)
        obj["spec"].pop("settled", None)
    return view


def test_a_trace_is_written_then_settled_and_deleted_once_its_retention_passed(
    tmp_path: Path, testdata: Path, cluster: Cluster
) -> None:
    log_lines = runme_lines(testdata)
    (tmp_path / "sample.json").write_bytes(b"".join(log_lines))
    want_traces, want_blocklogs = expected(tmp_path / "sample.json")
    (trace,) = want_traces.values()
    ended = parse_rfc3339(trace["spec"].get("endTime") or trace["spec"]["startTime"])
    clock = FakeClock(ended + 10)  # finished 10 s ago: not due yet
    pipeline = _kube_pipeline(tmp_path, cluster, clock)
    store = pipeline.store
    try:
        pipeline.log.write_bytes(b"".join(log_lines))
        pipeline.sync(pipeline.log)
        assert _view(store, "Trace") == want_traces
        assert _view(store, "BlockLog") == want_blocklogs
        assert not any(b["spec"].get("settled") for b in store.list("BlockLog"))

        queued: list[str] = []
        retention = TraceRetention(store, HOUR, queued.extend, clock)
        assert retention.sweep() == 0
        clock.now = ended + HOUR
        assert retention.sweep() == 1 and queued == [RUNME_TRACE]

        blocklogs = pipeline.trace.reconcile(queued).downstream.get("blocklogs", set())
        for name in sorted(blocklogs):
            pipeline.blocklog.reconcile([name])
        assert store.list("Trace") == [], "settled: deleted from the cluster"
        assert pipeline.journal.trace_keys() == [RUNME_TRACE], "the journal keeps it"
        (blocklog,) = store.list("BlockLog")
        assert RUNME_TRACE in blocklog["spec"]["settled"]
        assert _view(store, "BlockLog") == want_blocklogs
        status = blocklog["status"]
        assert status["observedGeneration"] == blocklog["metadata"]["generation"]
        assert retention.sweep() == 0
    finally:
        store.close()


def test_a_settled_generation_keeps_its_notebook_in_the_status_only(
    tmp_path: Path, testdata: Path, cluster: Cluster
) -> None:
    """The BlockLogs of a Generate trace show its notebook when the trace is settled; the
    spec then keeps none of it (etcd holds it once) and the status stays what analyze says."""
    generate = (testdata / "generate_trace_lines.jsonl").read_bytes().rstrip(b"\n") + b"\n"
    (tmp_path / "sample.json").write_bytes(generate)
    want_traces, want_blocklogs = expected(tmp_path / "sample.json")
    (trace,) = want_traces.values()
    gen_id = trace["spec"]["id"]
    ended = parse_rfc3339(trace["spec"].get("endTime") or trace["spec"]["startTime"])
    clock = FakeClock(ended + 10)
    pipeline = _kube_pipeline(tmp_path, cluster, clock)
    store = pipeline.store
    try:
        pipeline.log.write_bytes(generate)
        pipeline.sync(pipeline.log)
        assert _view(store, "BlockLog") == want_blocklogs
        assert all("doc" in b["status"] for b in store.list("BlockLog"))

        clock.now = ended + HOUR
        queued: list[str] = []
        assert TraceRetention(store, HOUR, queued.extend, clock).sweep() == 1
        for name in sorted(pipeline.trace.reconcile(queued).downstream.get("blocklogs", set())):
            pipeline.blocklog.reconcile([name])
        assert store.list("Trace") == []
        for blocklog in store.list("BlockLog"):
            kept = blocklog["spec"]["settled"][gen_id]
            assert kept["inStatus"] is True and "request" not in kept and "response" not in kept
        assert _view(store, "BlockLog") == want_blocklogs
    finally:
        store.close()


def _executions(log_lines: list[bytes], count: int) -> list[bytes]:
    """`count` RunMe executions of one block, 10 s apart, each its own trace id."""
    out = []
    for n in range(count):
        trace_id = f"01HYRKRJETPVQA84VQR9AR{n:04d}".encode()
        for line in log_lines:
            obj = orjson.loads(line.replace(RUNME_TRACE.encode(), trace_id))
            obj["ts"] += 10 * n
            out.append(orjson.dumps(obj) + b"\n")
    return out


def test_a_settled_trace_whose_late_line_names_another_block_leaves_the_old_one(
    tmp_path: Path, testdata: Path, cluster: Cluster
) -> None:
    """Its Trace is gone (settled), so the journal says which blocks it named."""
    log_lines = runme_lines(testdata)
    late = orjson.loads(log_lines[7])
    late.update(ts=late["ts"] - 5, knownID="01HF7B0KJM3HHFDVSX9YFTZ8PF")
    everything = tmp_path / "everything.json"
    everything.write_bytes(b"".join(log_lines) + orjson.dumps(late) + b"\n")
    want_traces, want_blocklogs = expected(everything)
    ((name, blocklog),) = want_blocklogs.items()
    assert blocklog["spec"]["id"] != RUNME_BLOCK
    pipeline = _kube_pipeline(tmp_path, cluster, FakeClock(2_000_000_000.0))  # all due
    store = pipeline.store
    try:
        pipeline.log.write_bytes(b"".join(log_lines))
        pipeline.sync(pipeline.log)
        assert store.list("Trace") == []
        assert [b["spec"]["id"] for b in store.list("BlockLog")] == [RUNME_BLOCK]
        with open(pipeline.log, "ab") as f:
            f.write(orjson.dumps(late) + b"\n")
        pipeline.sync(pipeline.log)
        assert store.list("Trace") == []
        assert _view(store, "BlockLog") == want_blocklogs
    finally:
        store.close()


def test_a_settled_execution_pushed_out_of_the_list_and_read_again_counts_once(
    tmp_path: Path, testdata: Path, cluster: Cluster
) -> None:
    """22 settled executions of one block: the two oldest are only counted; reconciled
    again (a retry, a late line), the oldest must not count twice."""
    lines = _executions(runme_lines(testdata), MAX_LISTED + 2)
    pipeline = _kube_pipeline(tmp_path, cluster, FakeClock(2_000_000_000.0))  # all due
    store = pipeline.store
    try:
        pipeline.log.write_bytes(b"".join(lines))
        pipeline.sync(pipeline.log)
        (blocklog,) = store.list("BlockLog")
        assert blocklog["status"]["executions"] == MAX_LISTED + 2
        oldest = "01HYRKRJETPVQA84VQR9AR0000"
        assert oldest not in blocklog["spec"]["execTraceIds"]
        for name in pipeline.trace.reconcile([oldest]).downstream.get("blocklogs", set()):
            pipeline.blocklog.reconcile([name])
        (blocklog,) = store.list("BlockLog")
        assert blocklog["spec"]["olderExecutions"] == 2
        assert blocklog["status"]["executions"] == MAX_LISTED + 2
    finally:
        store.close()


def test_describe_finds_a_settled_trace_in_the_ingesters_journal(
    tmp_path: Path, testdata: Path, cluster: Cluster
) -> None:
    """A settled Trace is gone from the cluster: describe on the ingester's state dir shows
    it from the journal, and elsewhere says where it went."""
    pipeline = _kube_pipeline(tmp_path, cluster, FakeClock(2_000_000_000.0))  # all due
    try:
        pipeline.log.write_bytes(b"".join(runme_lines(testdata)))
        pipeline.sync(pipeline.log)
        assert pipeline.store.list("Trace") == []
    finally:
        pipeline.store.close()
    kube = ["--store", "kube", "--kubeconfig", cluster.kubeconfig]
    kube += ["--namespace", cluster.namespace]
    shown = foylectl("describe", "trace", RUNME_TRACE, *kube, "--state-dir", tmp_path)
    assert RUNME_TRACE in shown.stdout and "RunMe" in shown.stdout
    assert f"deleted from the cluster (--trace-retention); read from {tmp_path}" in shown.stdout
    elsewhere = foylectl(
        "describe", "trace", RUNME_TRACE, *kube, "--state-dir", tmp_path / "other", check=False
    )
    assert elsewhere.returncode == 1 and elsewhere.stdout == ""
    assert "settled" in elsewhere.stderr and "--state-dir" in elsewhere.stderr
    # its BlockLog lists it by what it keeps of it (its id and start time restored)
    block = foylectl("describe", "blocklog", RUNME_BLOCK, *kube, "--state-dir", tmp_path)
    assert f"{RUNME_TRACE}  RunMe  2024-05-25T" in block.stdout
