"""One write per BlockLog and Session (issue 19): the Trace reconciler derives their status
in the same write as their membership, on every store, and hands them straight to the
learners: the BlockLog and Session stages would find nothing to write. Real journal, real SQLite, the emulator and the real API server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.reconcilers.blocklog import BlockLogReconciler
from controller.reconcilers.logfile import LogFileReconciler
from controller.reconcilers.session import SessionReconciler
from controller.reconcilers.trace import TraceReconciler, TraceSettings
from controller.store.base import Store
from controller.store.journal import (
    BLOCKLOGS,
    EXAMPLES,
    SESSION_EXAMPLES,
    SESSIONS,
    TRACES,
    Journal,
)
from controller.store.kube import KubeStore
from controller.store.sqlite import SQLiteStore
from controller.store.unit import Transactional
from tests.control_plane import Cluster, ControlPlane

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

JOINED = ("BlockLog", "Session")


@pytest.fixture(
    params=["sqlite", "emulator", pytest.param("apiserver", marks=pytest.mark.apiserver)]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "store.db")
        yield sqlite
        sqlite.close()
        return
    if request.param == "emulator":
        cluster = Cluster(request.getfixturevalue("kube_emulator").kubeconfig, "foyle")
    else:
        plane: ControlPlane = request.getfixturevalue("apiserver")
        cluster = Cluster(plane.kubeconfig, plane.new_namespace("fusion"))
    with KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig)) as kube:
        yield kube


def _changes(store: Store, kind: str, since: str) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"]["name"]) for e in store.watch(kind, since, timeout=1.0)]


@pytest.mark.parametrize("settle", [False, True], ids=["traces", "settled"])
def test_a_catch_up_writes_each_blocklog_and_session_once_with_its_status(
    store: Store, tmp_path: Path, settle: bool
) -> None:
    logs = tmp_path / "logs"
    gen_logs.generate(logs, size_bytes=40_000, seed=19)
    journal = Journal(tmp_path / "journal.db")
    files = sorted(str(p) for p in logs.rglob("*.json"))
    traces = LogFileReconciler(store, journal).reconcile(files).downstream[TRACES]
    since = {kind: store.list_with_version(kind)[1] for kind in JOINED}
    settings = TraceSettings(settle_after=3600.0 if settle else 0.0)
    handed = TraceReconciler(store, journal, settings).reconcile(sorted(traces)).downstream

    for kind in JOINED:
        written = _changes(store, kind, since[kind])
        objects = store.list(kind)
        assert objects, f"the corpus makes {kind}s"
        assert sorted(written) == sorted(("ADDED", o["metadata"]["name"]) for o in objects)
        for obj in objects:
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
    # Written with its status, each goes straight to its learner where the batch is one
    # transaction (SQLite), past its own stage; with the API server, to its stage ...
    names = {kind: sorted(o["metadata"]["name"] for o in store.list(kind)) for kind in JOINED}
    learners = isinstance(store, Transactional)
    joined = ((BLOCKLOGS, EXAMPLES, "BlockLog"), (SESSIONS, SESSION_EXAMPLES, "Session"))
    for stage, learner, kind in joined:
        to, not_to = (learner, stage) if learners else (stage, learner)
        assert sorted(handed[to]) == names[kind] and not_to not in handed, kind
    # ... which would find every status as it derives it: no write.
    after = {kind: store.list_with_version(kind)[1] for kind in JOINED}
    BlockLogReconciler(store).reconcile(names["BlockLog"])
    SessionReconciler(store).reconcile(names["Session"])
    for kind in JOINED:
        assert _changes(store, kind, after[kind]) == [], kind


def test_a_stage_derives_a_status_left_stale_once_and_names_its_generation(
    store: Store, tmp_path: Path
) -> None:
    """A membership written without its status (a member's Trace unknown to the writer)
    is derived by the stage in one write, and observedGeneration is that write's."""
    logs = tmp_path / "logs"
    gen_logs.generate(logs, size_bytes=20_000, seed=7)
    journal = Journal(tmp_path / "journal.db")
    files = sorted(str(p) for p in logs.rglob("*.json"))
    traces = LogFileReconciler(store, journal).reconcile(files).downstream[TRACES]
    TraceReconciler(store, journal).reconcile(sorted(traces))
    name = store.list("BlockLog")[0]["metadata"]["name"]
    stale = store.get("BlockLog", name)
    stale["status"] = {"executions": 99, "observedGeneration": 1}
    stale = store.update(stale)
    assert stale["metadata"]["generation"] == 2  # a status change makes a generation
    BlockLogReconciler(store).reconcile([name])
    fixed = store.get("BlockLog", name)
    assert fixed["metadata"]["generation"] == 3
    assert fixed["status"]["observedGeneration"] == 3
    assert fixed["status"]["executions"] != 99
    BlockLogReconciler(store).reconcile([name])
    assert (
        store.get("BlockLog", name)["metadata"]["resourceVersion"]
        == (fixed["metadata"]["resourceVersion"])
    )
