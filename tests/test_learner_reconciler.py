"""The learner reconciler over a real SQLite store, real training files and a real index."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api.result import Outcome, Result
from controller.index.embedders import (
    FIRST_RETRY_SECONDS,
    RETRY_EMBEDDING_SECONDS,
    EmbeddingError,
    EmbeddingOutage,
    EmbeddingUnavailable,
)
from controller.index.ledger import LEDGER_DIR
from controller.index.retrieval import ExampleIndex
from controller.index.training import TrainingWriter
from controller.learn import foyle_pb
from controller.pipeline import Pipeline
from controller.reconcilers.learner import LearnerReconciler, learn_all
from controller.runtime.metrics import MetricsRegistry
from controller.settings import Settings
from controller.store.base import NotFound, read_modify_write
from controller.store.journal import EXAMPLES, Journal
from controller.store.sqlite import SQLiteStore

NOW = 1_713_303_852.0
GENERATED = "gcloud logging read --project foyle-dev"
FIXED = "gcloud logging read 'resource.labels.cluster_name=\"dev\"' --project foyle-dev"


class ConstantEmbedder:
    """Vectors of a fixed length, to see what the learner says about each length."""

    def __init__(self, dims: int) -> None:
        self.name = f"constant-{dims}"
        self.dims = dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] * self.dims for _ in texts]


class FlakyEmbedder(ConstantEmbedder):
    """Foyle's 1536 floats, or the error an unreachable service gives; counts its calls."""

    def __init__(self) -> None:
        super().__init__(1536)
        self.down = True
        self.calls = 0

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.down:
            raise EmbeddingError("http://127.0.0.1:9/v1/embeddings: cannot reach the API")
        return super().embed(texts)


class Env:
    def __init__(self, tmp_path: Path, embedder: Any = None, clock: Any = None) -> None:
        self.store = SQLiteStore(tmp_path / "store.db")
        outage = EmbeddingOutage(clock) if clock else None
        self.index = ExampleIndex(tmp_path / "index.db", embedder, outage)
        self.training_dir = tmp_path / "training"
        self.metrics = MetricsRegistry()
        self.learner = LearnerReconciler(
            self.store,
            self.index,
            TrainingWriter([self.training_dir]),
            self.metrics,
            clock=lambda: NOW,
        )

    def put_blocklog(self, name: str, executed: str | None, **status: Any) -> None:
        """Create or change a BlockLog whose suggestion was GENERATED and ran `executed`."""
        desired_status: dict[str, Any] = {
            "doc": {"blocks": [{"kind": "MARKUP", "contents": f"read the {name} logs in dev"}]},
            "generatedBlock": {"kind": "CODE", "language": "bash", "contents": GENERATED},
            **status,
        }
        if executed is not None:
            desired_status["executedBlock"] = {
                "kind": "CODE",
                "language": "bash",
                "contents": executed,
                "id": name,
            }

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            obj = current or {
                "apiVersion": "foyle.io/v1alpha1",
                "kind": "BlockLog",
                "metadata": {"name": name},
                "spec": {"id": name, "genTraceId": "t1", "execTraceIds": []},
            }
            obj["status"] = desired_status
            return obj

        read_modify_write(self.store, "BlockLog", name, mutate)

    def example(self, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get("Example", name)
        except NotFound:
            return None

    def files(self) -> list[str]:
        return (
            sorted(p.name for p in self.training_dir.glob("*") if p.name != LEDGER_DIR)
            if self.training_dir.exists()
            else []
        )

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, labels) or 0.0


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.index.close()
    e.store.close()


def test_fixed_suggestion_becomes_example_file_and_index_entry(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])

    example = env.example("b1")
    assert example is not None
    blocklog = env.store.get("BlockLog", "b1")
    assert example["spec"] == {
        "id": "b1",
        "blockLog": "b1",
        "query": blocklog["status"]["doc"],
        "answer": [blocklog["status"]["executedBlock"]],
    }
    assert example["metadata"]["ownerReferences"][0]["uid"] == blocklog["metadata"]["uid"]
    path = str(env.training_dir / "b1.example.binpb")
    assert example["status"] == {
        "indexedTime": "2024-04-16T21:44:12.000000Z",
        "trainingFiles": [path],
        "observedGeneration": example["metadata"]["generation"],
        "foyleLoadable": False,  # no embedder: Foyle's agent would skip the file, and we say so
        "reason": "NoEmbedding",
    }
    assert env.counter("learner_foyle_unloadable_total", reason="NoEmbedding") == 1
    decoded = foyle_pb.Example.FromString(Path(path).read_bytes())
    assert (decoded.id, decoded.answer[0].contents) == ("b1", FIXED)
    [(name, _, body)] = env.index.search("read the logs of dev", k=3)
    assert name == "b1" and json.loads(body)["spec"]["answer"][0]["contents"] == FIXED
    assert env.counter("learner_examples_total", result="written") == 1


def test_reconciling_again_writes_nothing(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])
    _, version = env.store.list_with_version("Example")
    inode = (env.training_dir / "b1.example.binpb").stat().st_ino

    env.learner.reconcile(["b1"])
    env.learner.reconcile(["b1"])

    assert env.store.list_with_version("Example")[1] == version
    assert (env.training_dir / "b1.example.binpb").stat().st_ino == inode
    assert env.counter("learner_examples_total", result="written") == 1


def test_a_later_fix_updates_the_example_and_its_file(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])
    env.put_blocklog("b1", FIXED + " --limit 10")
    env.learner.reconcile(["b1"])

    example = env.example("b1")
    assert example is not None
    assert example["spec"]["answer"][0]["contents"] == FIXED + " --limit 10"
    assert example["metadata"]["generation"] == 2
    assert example["status"]["observedGeneration"] == 2
    decoded = foyle_pb.Example.FromString((env.training_dir / "b1.example.binpb").read_bytes())
    assert decoded.answer[0].contents == FIXED + " --limit 10"
    assert env.counter("learner_examples_total", result="written") == 2


@pytest.mark.parametrize(
    ("executed", "status", "reason"),
    [
        (GENERATED, {}, "unchanged"),
        (FIXED, {"evalMode": True}, "eval-mode"),
        (None, {}, "no-executed-block"),
    ],
)
def test_blocklog_that_stops_being_learnable_loses_everything_derived(
    env: Env, executed: str | None, status: dict[str, Any], reason: str
) -> None:
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])
    assert env.files() == ["b1.example.binpb"]

    env.put_blocklog("b1", executed, **status)  # e.g. a later execution reverts the fix
    env.learner.reconcile(["b1"])

    assert env.example("b1") is None
    assert env.files() == []
    assert len(env.index) == 0
    assert env.counter("learner_not_learnable_total", reason=reason) == 1


def test_deleted_blocklog_takes_its_example_along(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])
    env.store.delete("BlockLog", "b1")
    env.learner.reconcile(["b1"])
    assert (env.example("b1"), env.files(), len(env.index)) == (None, [], 0)
    env.learner.reconcile(["b1"])  # nothing left to delete is fine


def test_a_key_that_fails_is_reported_failed_and_counted_and_the_others_learned(
    env: Env,
) -> None:
    env.put_blocklog("b1", FIXED)
    env.put_blocklog("b2", FIXED + " | head")
    (env.training_dir / "b1.example.binpb").mkdir(parents=True)  # b1's file cannot be written

    outcome = env.learner.reconcile(["b1", "b2"])

    assert list(outcome.failed) == ["b1"]
    assert env.counter("learner_reconcile_errors_total") == 1
    assert env.example("b2") is not None and env.example("b2")["status"]["trainingFiles"]


def test_a_batchs_index_entries_are_committed_once(env: Env) -> None:
    names = [f"b{i}" for i in range(5)]
    for i, name in enumerate(names):
        env.put_blocklog(name, f"{FIXED} | head -{i}")
    statements: list[str] = []
    env.index._conn.set_trace_callback(statements.append)

    outcome = env.learner.reconcile(names)

    assert not outcome.failed
    assert statements.count("COMMIT") == 1  # FTS5 writes a segment per commit
    assert sorted(env.index.names()) == names
    assert env.files() == [f"{name}.example.binpb" for name in names]


def test_a_batchs_example_specs_and_statuses_are_one_store_write_each(env: Env) -> None:
    names = [f"b{i}" for i in range(5)]
    for i, name in enumerate(names):
        env.put_blocklog(name, f"{FIXED} | head -{i}")
    statements: list[str] = []
    env.store._conn().set_trace_callback(statements.append)

    outcome = env.learner.reconcile(names)

    assert not outcome.failed
    reads = [s for s in statements if s.startswith("SELECT") and "o.kind = 'Example'" in s]
    assert len(reads) == 3  # the batch's Examples, then one read for each bulk write
    assert statements.count("BEGIN IMMEDIATE") == 2  # the specs, then the statuses
    writes = [s for s in statements if s.startswith("INSERT INTO changes")]
    assert len(writes) == 10  # traced once a row: 5 specs, then 5 statuses
    for name in names:
        example = env.example(name)
        assert example is not None and example["status"]["trainingFiles"]


def test_an_example_the_store_refuses_fails_alone_and_the_retry_learns_it(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.put_blocklog("b2", FIXED + " | head")
    env.store._conn().execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON changes"
        " WHEN NEW.kind = 'Example' AND NEW.name = 'b1'"
        " BEGIN SELECT RAISE(ABORT, 'store refused'); END"
    )

    outcome = env.learner.reconcile(["b1", "b2"])

    assert list(outcome.failed) == ["b1"] and "store refused" in str(outcome.failed["b1"])
    assert env.counter("learner_examples_total", result="failed") == 1
    assert env.counter("learner_examples_total", result="written") == 1
    assert env.example("b1") is None and env.files() == ["b2.example.binpb"]
    b2 = env.example("b2")
    assert b2 is not None and b2["status"]["trainingFiles"]
    env.store._conn().execute("DROP TRIGGER refuse")
    assert not env.learner.reconcile(["b1", "b2"]).failed
    b1 = env.example("b1")
    assert b1 is not None and b1["status"]["trainingFiles"]
    assert env.files() == ["b1.example.binpb", "b2.example.binpb"]


def test_an_index_commit_that_fails_fails_its_batch_and_the_retry_learns_it(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.put_blocklog("b2", FIXED + " | head")
    env.index._conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON examples BEGIN"
                            " SELECT RAISE(ABORT, 'index refused'); END")  # fmt: skip

    outcome = env.learner.reconcile(["b1", "b2"])

    assert sorted(outcome.failed) == ["b1", "b2"]
    assert env.counter("learner_examples_total", result="failed") == 2
    assert env.files() == []
    for name in ("b1", "b2"):  # the spec is written; no status claims an index entry
        example = env.example(name)
        assert example is not None and "indexedTime" not in example.get("status", {})
    env.index._conn.execute("DROP TRIGGER refuse")
    assert not env.learner.reconcile(["b1", "b2"]).failed
    assert sorted(env.index.names()) == ["b1", "b2"] and len(env.files()) == 2


def test_a_batch_the_store_cannot_read_raises(env: Env) -> None:
    env.put_blocklog("b1", FIXED)
    env.store.close()
    with pytest.raises(Exception, match="closed"):
        env.learner.reconcile(["b1"])


def test_learn_all_makes_examples_for_exactly_the_learnable_blocklogs(env: Env) -> None:
    env.put_blocklog("fixed-1", FIXED)
    env.put_blocklog("fixed-2", FIXED + " | head")
    env.put_blocklog("accepted", GENERATED)
    env.put_blocklog("eval", FIXED, evalMode=True)
    env.put_blocklog("gone", FIXED)
    env.learner.reconcile(["gone"])
    env.store.delete("BlockLog", "gone")

    counts = learn_all(env.store, env.learner)

    assert counts == {
        "blocklogs": 4,
        "learnable": 2,
        "notLearnable": 2,
        "orphans": 1,
        "errors": 0,
        "waitingForEmbedding": 0,
        "prunedFiles": 0,
    }
    assert {e["metadata"]["name"] for e in env.store.list("Example")} == {"fixed-1", "fixed-2"}
    assert env.index.names() == {"fixed-1", "fixed-2"}
    assert env.files() == ["fixed-1.example.binpb", "fixed-2.example.binpb"]
    assert learn_all(env.store, env.learner)["orphans"] == 0


@pytest.mark.parametrize(("dims", "reason"), [(1536, ""), (2, "EmbeddingLength")])
def test_example_status_says_whether_foyle_would_load_its_file(
    tmp_path: Path, dims: int, reason: str
) -> None:
    env = Env(tmp_path, ConstantEmbedder(dims))
    env.put_blocklog("b1", FIXED)
    env.learner.reconcile(["b1"])
    status = env.example("b1")["status"]  # type: ignore[index]
    assert status["foyleLoadable"] is (not reason)
    assert status.get("reason", "") == reason
    decoded = foyle_pb.Example.FromString((env.training_dir / "b1.example.binpb").read_bytes())
    assert len(decoded.embedding) == dims
    assert env.counter("learner_foyle_unloadable_total", reason="NoEmbedding") == 0


def test_an_unreachable_embedding_service_is_one_warning_a_status_and_a_retry_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 20: no file Foyle would skip, no warning per Example, no give-up."""
    now = [100.0]
    embedder = FlakyEmbedder()
    env = Env(tmp_path, embedder, clock=lambda: now[0])
    names = [f"b{i}" for i in range(5)]
    for name in names:
        env.put_blocklog(name, FIXED + f" --limit {name}")
    with caplog.at_level("WARNING"):
        assert sorted(env.learner.reconcile(names).results) == names
    assert embedder.calls == 1  # the others waited at once, without a timeout each
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cannot reach the API" in caplog.text
    for name in names:
        status = env.example(name)["status"]  # type: ignore[index]
        assert (status["foyleLoadable"], status["reason"]) == (False, "EmbeddingUnavailable")
        assert status["trainingFiles"] == []
    assert env.files() == []
    assert env.learner.reconcile(["b0"]).result("b0").requeue_after == FIRST_RETRY_SECONDS

    embedder.down = False
    assert sorted(env.learner.reconcile(names).results) == names  # still within the outage
    now[0] += FIRST_RETRY_SECONDS
    assert env.learner.reconcile(names).results == {}
    assert env.files() == [f"{n}.example.binpb" for n in names]
    assert all(env.example(n)["status"]["foyleLoadable"] for n in names)  # type: ignore[index]
    assert env.index.outage.waiting == set()


@pytest.mark.parametrize("oneshot", [False, True])
def test_the_pipeline_keeps_a_waiting_sources_mark_and_run_looks_again_later(
    tmp_path: Path, oneshot: bool
) -> None:
    """Issue 20: waiting for the embedding service is neither done nor a failure."""
    settings = Settings(log_dirs=[tmp_path / "logs"], state_dir=tmp_path / "state")
    store, journal = SQLiteStore(tmp_path / "store.db"), Journal(tmp_path / "journal.db")

    def learner(names: list[str]) -> Outcome:
        outcome = Outcome()
        if "waits" in names:
            outcome.set_result("waits", Result(requeue_after=RETRY_EMBEDDING_SECONDS))
        return outcome

    pipeline = Pipeline(settings, store, journal, learner=learner, oneshot=oneshot)
    journal.mark_dirty(EXAMPLES, ["waits", "learned"])
    examples = pipeline.controllers_by_queue[EXAMPLES]
    for name in ("waits", "learned"):
        examples.process([name])
    assert set(journal.dirty_seqs(EXAMPLES, ["waits", "learned"])) == {"waits"}  # a start retries
    queue = examples.queue  # run: "waits" is delayed (nothing ready, not idle)
    assert (queue.len(), queue.is_settled(), queue.is_idle()) == (0, True, oneshot)
    queue.shutdown()
    store.close()
    journal.close()


class BlockingEmbedder(ConstantEmbedder):
    """Foyle's 1536 floats once `release` is set; `entered` says a call is waiting."""

    def __init__(self) -> None:
        super().__init__(1536)
        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.entered.set()
        if not self.release.wait(30):
            raise EmbeddingError("never released")
        return super().embed(texts)


def test_the_stores_other_writers_go_on_while_the_learner_waits_for_an_embedding(
    tmp_path: Path,
) -> None:
    """Issue 23: the learner's slow work (embedding calls, training files) ran inside
    the store's write transaction, holding every other stage up until it was done."""
    embedder = BlockingEmbedder()
    env = Env(tmp_path, embedder=embedder)
    journal = Journal(tmp_path / "journal.db")
    settings = Settings(log_dirs=[tmp_path / "logs"], state_dir=tmp_path / "state")
    pipeline = Pipeline(settings, env.store, journal, learner=env.learner.reconcile, oneshot=True)
    env.put_blocklog("b1", FIXED)
    journal.mark_dirty(EXAMPLES, ["b1"])
    examples = pipeline.controllers_by_queue[EXAMPLES]
    learning = threading.Thread(target=examples.process, args=(["b1"],))
    learning.start()
    try:
        assert embedder.entered.wait(30)
        other = threading.Thread(target=env.put_blocklog, args=("b2", None))
        other.start()
        other.join(10)  # a held write lock would keep it waiting until the release
        assert not other.is_alive()
    finally:
        embedder.release.set()
        learning.join(30)
    assert env.example("b1")["status"]["foyleLoadable"] is True
    assert journal.dirty_seqs(EXAMPLES, ["b1"]) == {}
    examples.queue.shutdown()
    env.index.close()
    env.store.close()
    journal.close()


def test_an_outage_is_probed_by_one_caller_at_a_time_with_back_off() -> None:
    """A blip costs seconds; a long outage is tried at most once a minute, by one caller."""
    now = [0.0]
    outage = EmbeddingOutage(lambda: now[0])
    outage.check("a")  # no outage: everyone may call
    outage.failed("a", EmbeddingError("down"))
    waits = []
    for _ in range(8):
        with pytest.raises(EmbeddingUnavailable):
            outage.check("b")
        waits.append(outage.retry_in())
        now[0] += outage.retry_in()
        outage.check("a")  # its turn: it probes...
        with pytest.raises(EmbeddingUnavailable):
            outage.check("b")  # ...while the others keep waiting
        outage.failed("a", EmbeddingError("still down"))
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    outage.succeeded("a")
    outage.check("b")  # the outage is over
    assert outage.retry_in() == 1.0
