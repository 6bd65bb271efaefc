"""One write per BlockLog and Session (issue 19): the Trace reconciler derives their status
in the same write as their membership, on every store, and hands them straight to the
learners: the BlockLog and Session stages would find nothing to write, and the learners
nothing to do for one that neither taught nor teaches. Real journal, real SQLite, the
emulator and the real API server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.api.resource import new_resource
from controller.api.result import Outcome
from controller.reconcilers.blocklog import BLOCKLOG_JOIN, BlockLogReconciler
from controller.reconcilers.join import Join, membership_mutation
from controller.reconcilers.logfile import LogFileReconciler
from controller.reconcilers.retention import Joined
from controller.reconcilers.session import SESSION_JOIN, SessionReconciler
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
    gen_logs.generate(logs, size_bytes=40_000, seed=3)
    journal = Journal(tmp_path / "journal.db")
    files = sorted(str(p) for p in logs.rglob("*.json"))
    traces = LogFileReconciler(store, journal).reconcile(files).downstream[TRACES]
    since = {kind: store.list_with_version(kind)[1] for kind in JOINED}
    settings = TraceSettings(settle_after=3600.0 if settle else 0.0)
    handed = TraceReconciler(store, journal, settings).reconcile(sorted(traces)).downstream

    teaching = [b for b in store.list("BlockLog") if BLOCKLOG_JOIN.teaches(b)]
    assert 0 < len(teaching) < len(store.list("BlockLog")), "some BlockLogs teach, not all"
    for kind in JOINED:
        written = _changes(store, kind, since[kind])
        objects = store.list(kind)
        assert objects, f"the corpus makes {kind}s"
        assert sorted(written) == sorted(("ADDED", o["metadata"]["name"]) for o in objects)
        for obj in objects:
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
    # Written with its status, each that teaches goes straight to its learner where the
    # batch is one transaction (SQLite), past its own stage, and one that does not to no
    # one (the learner would find nothing to do); with the API server, all to the stage ...
    names = {kind: sorted(o["metadata"]["name"] for o in store.list(kind)) for kind in JOINED}
    learners = isinstance(store, Transactional)
    joined = ((BLOCKLOGS, EXAMPLES, BLOCKLOG_JOIN), (SESSIONS, SESSION_EXAMPLES, SESSION_JOIN))
    for stage, learner, join in joined:
        teaching = sorted(o["metadata"]["name"] for o in store.list(join.kind) if join.teaches(o))
        if learners:
            assert sorted(handed.get(learner, [])) == teaching and stage not in handed
        else:
            assert sorted(handed[stage]) == names[join.kind] and learner not in handed
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


def _teaching_join() -> Join:
    """A joined kind whose status teaches when its members say so (spec.members)."""
    return Join(
        "BlockLog",
        members=lambda spec: spec.get("members", []),
        status=lambda _r, _t, _g: {},
        learner_queue=EXAMPLES,
        compact=lambda spec, _status: spec,
        teaches=lambda r: (r.get("status") or {}).get("teaches", False),
    )


@pytest.mark.parametrize(
    ("before", "after", "to_learner"),
    [
        (None, False, False),
        (None, True, True),
        (False, True, True),
        (True, False, True),
        (False, False, False),
    ],
)
def test_the_learner_sees_a_write_that_taught_or_teaches_and_no_other(
    before: bool | None, after: bool, to_learner: bool
) -> None:
    """An Example can exist only for a resource whose stored status taught: a write from
    a status that did not to one that does not leaves the learner nothing to do."""
    join = _teaching_join()
    current = None
    if before is not None:
        current = new_resource("BlockLog", "b", {"members": ["t0"]}, {"teaches": before})
        current["metadata"]["generation"] = 1
    derived: dict[str, bool] = {}
    mutate = membership_mutation(
        join,
        "b",
        [lambda spec: {"members": [*(spec or {}).get("members", []), "t1"]}],
        lambda _resource: {"teaches": after},
        derived,
    )
    assert mutate(current) is not None
    assert derived == {"b": to_learner}
    joined = Joined(
        derived={n for n, v in derived.items() if v},
        untaught={n for n, v in derived.items() if not v},
        rest=set(),
    )
    for atomic, stage, learner in (
        (True, set(), {"b"} if to_learner else set()),
        (False, {"b"}, set()),
    ):
        outcome = Outcome()
        joined.hand_on(outcome, BLOCKLOGS, EXAMPLES, atomic=atomic)
        assert set(outcome.downstream.get(BLOCKLOGS, ())) == stage
        assert set(outcome.downstream.get(EXAMPLES, ())) == learner
