"""join_view (controller/reconcilers/retention.py), what a Trace too large for etcd keeps:
the BlockLogs join the same from it."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from controller.analyze.blocklogs import blocklog_status
from controller.reconcilers.blocklog import member_ids
from controller.reconcilers.retention import join_view
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402


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
