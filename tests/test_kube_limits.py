"""Objects too large for etcd: refused by KubeStore before sending, with a clear error and a metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.api.resource import new_resource
from controller.reconcilers.logfile import LogFileReconciler
from controller.reconcilers.trace import TraceReconciler, TraceSettings
from controller.runtime.metrics import MetricsRegistry
from controller.store.journal import TRACES, Journal
from controller.store.kube import (
    ETCD_MAX_REQUEST_BYTES,
    MAX_OBJECT_BYTES,
    KubeStore,
    ObjectTooLarge,
)
from tests.control_plane import Cluster, ControlPlane

GENERATE_FN = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).Generate"
STREAM_FN = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).StreamGenerate.func2.2"


def _trace(name: str, total_bytes: int) -> dict[str, object]:
    """A Trace whose JSON is about `total_bytes` long (a notebook-sized request doc)."""
    trace = new_resource("Trace", name, {"id": name, "kind": "Generate", "request": {"doc": ""}})
    padding = total_bytes - len(json.dumps(trace, separators=(",", ":")))
    trace["spec"]["request"]["doc"] = "x" * padding
    return trace


def test_an_object_over_the_limit_is_refused_with_its_size_and_counted(cluster: Cluster) -> None:
    registry = MetricsRegistry()
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as store:
        store.attach_metrics(registry)
        with pytest.raises(ObjectTooLarge, match=r"Trace/big: 1\.6\d MiB is over the 1\.49 MiB"):
            store.create(_trace("big", 1_700_000))
        small = store.create(_trace("small", 10_000))
        small["spec"]["request"]["doc"] = "y" * 1_700_000
        with pytest.raises(ObjectTooLarge):
            store.update(small)
        assert [t["metadata"]["name"] for t in store.list("Trace")] == ["small"]
        assert set(store.get("Trace", "small")["spec"]["request"]["doc"]) == {"x"}
    assert registry.value("foyle_kube_objects_too_large_total", {"kind": "Trace"}) == 2


@pytest.mark.apiserver
def test_the_limit_is_below_what_the_real_server_stores(apiserver: ControlPlane) -> None:
    """Just under the limit is stored; just over etcd's own limit the server refuses it."""
    namespace = apiserver.new_namespace("limits")
    with KubeStore(namespace, kubeconfig=str(apiserver.kubeconfig)) as store:
        stored = store.create(_trace("largest", MAX_OBJECT_BYTES))
        assert len(stored["spec"]["request"]["doc"]) > MAX_OBJECT_BYTES - 1000
    body = _trace("over", ETCD_MAX_REQUEST_BYTES + 10_000)
    body["metadata"]["namespace"] = namespace
    proc = apiserver.kubectl("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert proc.returncode != 0 and "too large" in proc.stderr, proc.stderr


def _huge_generate_trace() -> list[dict[str, Any]]:
    """The log lines of a Generate trace (2024) whose notebook is over etcd's limit."""
    doc = {"blocks": [{"kind": "MARKUP", "contents": "x" * 1_700_000, "id": "m"}]}
    return [
        {"time": 1.0, "function": GENERATE_FN, "traceId": "a" * 32, "request": {"doc": doc}},
        {
            "time": 2.0,
            "function": GENERATE_FN,
            "traceId": "a" * 32,
            "message": "Agent.Generate returning response",
            "response": {"blocks": [{"kind": "CODE", "contents": "ls", "id": "b1"}]},
        },
    ]


def test_a_trace_too_large_for_etcd_is_stored_with_its_bodies_elided(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The trace reconciler writes what BlockLogs read instead of retrying forever."""
    log = tmp_path / "logs" / "foyle.json"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(line) + "\n" for line in _huge_generate_trace()))
    journal = Journal(tmp_path / "journal.db")
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as store:
        read = LogFileReconciler(store, journal).reconcile([str(log)])
        TraceReconciler(store, journal).reconcile(sorted(read.downstream[TRACES]))
        trace = store.get("Trace", "a" * 32)
        assert trace["spec"]["response"]["blocks"][0]["id"] == "b1"  # the suggestion stays
        assert "request" not in trace["spec"]  # the 1.7 MB notebook could not
        assert store.get("BlockLog", "b1")["spec"]["genTraceId"] == "a" * 32


def _settle(store: KubeStore, tmp_path: Path, lines: list[dict[str, Any]]) -> None:
    """Read `lines` from a log file and reduce their traces, settled at once (finished in
    the past): their Traces are never written, their BlockLogs and Session are."""
    log = tmp_path / "logs" / "foyle.json"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal = Journal(tmp_path / "journal.db")
    read = LogFileReconciler(store, journal).reconcile([str(log)])
    settled = TraceSettings(settle_after=3600.0)
    TraceReconciler(store, journal, settled).reconcile(sorted(read.downstream[TRACES]))
    assert store.list("Trace") == []


def test_a_settled_notebook_too_large_for_its_blocklog_is_kept_smaller(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A finished Generate trace is settled into its BlockLog; its notebook does not fit
    there: the BlockLog keeps the suggestion without it instead of being retried forever
    (in its status, where a settled generation's suggestion is stored once)."""
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as store:
        _settle(store, tmp_path, _huge_generate_trace())
        blocklog = store.get("BlockLog", "b1")
        spec, status = blocklog["spec"], blocklog["status"]
        kept = spec["settled"]["a" * 32]
        assert spec["genTraceId"] == "a" * 32 and "request" not in kept and "doc" not in status
        assert status["generatedBlock"]["id"] == "b1"  # the suggestion stays


def test_a_settled_context_too_large_for_its_session_is_kept_smaller(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A finished full context (StreamGenerate's notebook) is settled into its Session; a
    notebook over etcd's limit does not fit there: the Session keeps the context's member
    without it instead of the trace being retried forever."""
    cells = [{"kind": "MARKUP", "value": "x" * 1_700_000, "metadata": {"id": "m"}}]
    line = {
        "time": 1.0,
        "function": STREAM_FN,
        "message": "Received full context",
        "traceId": "c" * 32,
        "contextId": "01HVMGZFBFN2EMPS5R5AF1ZTA1",
        "context": {"notebook": {"cells": cells}, "selected": 0},
    }
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as store:
        _settle(store, tmp_path, [line])
        (session,) = store.list("Session")
        kept = session["spec"]["settled"]["c" * 32]
        assert session["spec"]["traceIds"] == ["c" * 32] and kept["kind"] == "Context"
        assert "request" not in kept  # the 1.7 MB notebook could not stay
