"""Trace retention (controller/reconcilers/retention.py): elided Traces still join the same BlockLogs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.analyze.blocklogs import blocklog_status
from controller.api.resource import new_resource
from controller.reconcilers.blocklog import member_ids
from controller.reconcilers.retention import ELIDED, TraceRetention, join_view
from controller.runtime.metrics import MetricsRegistry
from controller.store.kube import KubeStore
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl
from tests.control_plane import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

NOW = 2_000_000_000.0  # 2033: every sample and generated trace finished long before


@pytest.fixture(params=["samples", "generated"])
def analyzed(request: pytest.FixtureRequest, testdata: Path, tmp_path: Path) -> SQLiteStore:
    logs = testdata
    if request.param == "generated":
        logs = tmp_path / "logs"
        gen_logs.generate(logs, size_bytes=300_000, seed=5, bad_lines=0)
    foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "state", "--no-learn")
    return SQLiteStore(tmp_path / "state" / "store.db")


def test_every_blocklog_joins_the_same_from_elided_traces(analyzed: SQLiteStore) -> None:
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    elided = {trace_id: join_view(spec) for trace_id, spec in traces.items()}
    size = sum(len(orjson.dumps(s)) for s in traces.values())
    assert sum(len(orjson.dumps(s)) for s in elided.values()) < size  # something went
    blocklogs = analyzed.list("BlockLog")
    assert blocklogs
    for blocklog in blocklogs:
        spec = blocklog["spec"]
        assert set(member_ids(spec)) <= set(traces)
        assert blocklog_status(spec, elided) == blocklog_status(spec, traces), spec["id"]


def _trace(name: str, phase: str, end: str, **spec: Any) -> dict[str, Any]:
    body = {"id": name, "kind": "Execute", "startTime": end, "endTime": end, **spec}
    return new_resource("Trace", name, body, status={"phase": phase})


def test_sweep_elides_only_finished_traces_past_the_retention(cluster: Cluster) -> None:
    bodies = {
        "request": {"block": {"kind": "CODE", "contents": "ls"}},
        "response": {"outputs": [{"items": [{"textData": "x" * 5000}]}]},
    }
    old, recent = "2024-05-25T12:30:40Z", "2033-05-18T03:33:10Z"
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as store:
        for trace in (
            _trace("done-old", "Complete", old, **bodies),
            _trace("open-old", "InProgress", old, **bodies),
            _trace("done-recent", "Complete", recent, **bodies),
            _trace("nothing-to-elide", "Complete", old, request=bodies["request"]),
        ):
            created = store.create(trace)
            store.update_status({**created, "status": trace["status"]})
        registry = MetricsRegistry()
        retention = TraceRetention(store, 3600.0, registry, clock=lambda: NOW)
        assert retention.sweep() == 1
        assert retention.sweep() == 0  # idempotent
        by_name = {t["metadata"]["name"]: t for t in store.list("Trace")}
        annotated = {
            n for n, t in by_name.items() if ELIDED in t["metadata"].get("annotations", {})
        }
        assert annotated == {"done-old"}
        assert by_name["done-old"]["spec"] == join_view(
            _trace("done-old", "Complete", old, **bodies)["spec"]
        )
        assert "response" not in by_name["done-old"]["spec"]
        assert registry.value("foyle_trace_bodies_elided_total") == 1
        assert registry.value("foyle_trace_bytes_elided_total") > 5000
