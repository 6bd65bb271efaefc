"""Learning end to end through `foylectl` (issue 4): real subprocesses, files and SQLite.

A generated corpus goes through `analyze`, `learn`, `learn --follow` and `run`;
the Examples, their training files and the search index are read back from
this process and checked against the learning rule applied to the BlockLogs.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from controller.index.ledger import LEDGER_DIR
from controller.index.retrieval import ExampleIndex
from controller.index.training import SUFFIX
from controller.learn import foyle_pb
from controller.learn.query import query_text
from controller.learn.rule import learnability
from controller.store.base import NotFound
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl, get_json, wait_for
from tests.fake_openai import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from gen_logs import Appender, generate  # noqa: E402
from learn_latency import (  # noqa: E402
    RUN_READY,
    Fix,
    Foylectl,
    append_execution,
    append_fix,
    searchable,
)

FOLLOWING = "following BlockLog changes"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("corpus") / "logs"
    generate(logs, size_bytes=300_000, seed=7)
    return logs


@pytest.fixture(scope="module")
def analyzed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`foylectl analyze` (learning on) of the corpus: (state dir, training dir)."""
    work = tmp_path_factory.mktemp("analyzed")
    state, training = work / "state", work / "training"
    foylectl("analyze", "--logs", corpus, "--state-dir", state, "--training-dir", training,
             "--no-progress")  # fmt: skip
    return state, training


def learnable_names(state: Path) -> set[str]:
    return {b["metadata"]["name"] for b in get_json(state, "blocklogs") if learnability(b)[0]}


def block_of(message: Any) -> dict[str, Any]:
    """A decoded protobuf Block in the Example resource's JSON shape."""
    return {
        "kind": foyle_pb.BlockKind.values_by_number[message.kind].name,
        "language": message.language,
        "contents": message.contents,
        "outputs": [
            {"items": [{"mime": i.mime, "textData": i.text_data} for i in output.items]}
            for output in message.outputs
        ],
        "id": message.id,
    }


def test_analyze_learns_exactly_the_learnable_blocklogs_with_decodable_training_files(
    analyzed: tuple[Path, Path],
) -> None:
    state, training = analyzed
    examples = {e["metadata"]["name"]: e for e in get_json(state, "examples")}
    assert set(examples) == learnable_names(state)
    assert len(examples) >= 5, "the corpus should hold several fixed suggestions"
    files = sorted(p.name for p in training.iterdir() if p.name != LEDGER_DIR)
    assert files == sorted(n + SUFFIX for n in examples)
    for name, example in examples.items():
        path = training / f"{name}{SUFFIX}"
        assert example["status"]["trainingFiles"] == [str(path)]
        decoded = foyle_pb.Example.FromString(path.read_bytes())
        spec = example["spec"]
        assert decoded.id == spec["id"]
        assert [block_of(b) for b in decoded.query.blocks] == spec["query"]["blocks"]
        assert [block_of(b) for b in decoded.answer] == spec["answer"]


def test_learn_in_a_fresh_process_gives_the_same_examples_and_search_ranks_the_fix_first(
    corpus: Path, analyzed: tuple[Path, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    foylectl("analyze", "--logs", corpus, "--state-dir", state, "--no-learn", "--no-progress")
    assert get_json(state, "examples") == []

    out = foylectl("learn", "--state-dir", state, "--training-dir", tmp_path / "training").stdout
    assert out.startswith("learned: ")
    assert "reads its training directories only at start-up" in out  # issue 11: no live pickup
    learned = {e["metadata"]["name"]: e["spec"] for e in get_json(state, "examples")}
    assert learned == {e["metadata"]["name"]: e["spec"] for e in get_json(analyzed[0], "examples")}

    # A query whose text no other Example shares, reworded: its Example must come first.
    texts = {name: query_text(spec["query"]) for name, spec in learned.items()}
    counts = Counter(texts.values())
    name = min(n for n, text in texts.items() if counts[text] == 1)
    _, rest = texts[name].split(maxsplit=1)
    reworded = f"{rest.lower().rstrip('?.')}, please"  # e.g. "is ... crash looping, please"
    search = ("examples", "search", reworded, "-k", "3", "--state-dir", state)
    hits = json.loads(foylectl(*search, "-o", "json").stdout)
    assert [h["name"] for h in hits][:1] == [name]
    assert hits[0]["score"] > hits[1]["score"]
    assert hits[0]["example"]["spec"] == learned[name]
    assert foylectl(*search).stdout.startswith(f"1. {name}  score=")


def foyle_sees(training: Path) -> set[str]:
    return {p.name for p in training.glob("*" + SUFFIX)}


def test_a_throwaway_state_dir_leaves_nothing_in_the_training_dir_it_wrote_into(
    corpus: Path, tmp_path: Path
) -> None:
    """Issue 20 item 3: an experiment's files go once its state dir is gone; Foyle's stay."""
    training = tmp_path / "training"
    training.mkdir()
    (training / "foyle-wrote-this.example.binpb").write_bytes(b"Foyle's own learner")
    experiment = tmp_path / "experiment"
    foylectl("analyze", "--logs", corpus, "--state-dir", experiment, "--training-dir", training,
             "--no-progress")  # fmt: skip
    written = foyle_sees(training) - {"foyle-wrote-this.example.binpb"}
    assert len(written) >= 5
    shutil.rmtree(experiment)

    real = tmp_path / "real"  # a state dir that learns nothing from these logs
    (tmp_path / "no-logs").mkdir()
    foylectl("analyze", "--logs", tmp_path / "no-logs", "--state-dir", real, "--training-dir",
             training, "--no-progress")  # fmt: skip
    assert foyle_sees(training) == {"foyle-wrote-this.example.binpb"}


def test_learn_removes_the_files_whose_example_is_gone(corpus: Path, tmp_path: Path) -> None:
    """The state dir's databases deleted and other logs analyzed into it: `learn` prunes."""
    state, training = tmp_path / "state", tmp_path / "training"
    foylectl("analyze", "--logs", corpus, "--state-dir", state, "--training-dir", training,
             "--no-progress")  # fmt: skip
    written = foyle_sees(training)
    for db in ("store.db", "journal.db", "examples-index.db"):
        (state / db).unlink()
    (tmp_path / "no-logs").mkdir()
    foylectl("analyze", "--logs", tmp_path / "no-logs", "--state-dir", state, "--no-learn",
             "--no-progress")  # fmt: skip
    out = foylectl("learn", "--state-dir", state, "--training-dir", training).stdout
    assert f"prunedFiles {len(written)}" in out
    assert foyle_sees(training) == set()


@pytest.fixture
def live(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small corpus to grow while a controller follows it: (logs, state, training)."""
    logs = tmp_path / "logs"
    generate(logs, size_bytes=100_000, seed=3)
    return logs, tmp_path / "state", tmp_path / "training"


def example_or_none(store: SQLiteStore, name: str) -> dict[str, Any] | None:
    try:
        return store.get("Example", name)
    except NotFound:
        return None


def learned_and_searchable(store: SQLiteStore, index: ExampleIndex, fix: Fix) -> bool:
    return example_or_none(store, fix.name) is not None and searchable(index, fix)


def test_learn_follow_in_a_second_process_learns_a_fix_that_run_ingests(
    live: tuple[Path, Path, Path], record_property: Any
) -> None:
    logs, state, training = live
    run = Foylectl("run", "--logs", logs, "--state-dir", state, "--no-learn",
                   log_path=state.parent / "run.log")  # fmt: skip
    follower = None
    try:
        run.wait_output(RUN_READY, 30)
        follower = Foylectl("learn", "--follow", "--state-dir", state, "--training-dir", training,
                            log_path=state.parent / "learn.log")  # fmt: skip
        follower.wait_output(FOLLOWING, 30)
        store, index = SQLiteStore(state / "store.db"), ExampleIndex(state / "examples-index.db")
        with Appender(logs, seed=5) as appender:
            fix = append_fix(appender)
            wait_for(lambda: learned_and_searchable(store, index, fix), 10, "the learned fix")
        latency_ms = (time.perf_counter() - fix.end_written) * 1000
        record_property("learn_follow_latency_ms", round(latency_ms, 1))
        print(f"learn --follow: fix searchable {latency_ms:.0f} ms after its execution ended")
        training_file = training / f"{fix.name}{SUFFIX}"
        wait_for(training_file.is_file, 10, "its training file")  # written after the index
        store.close()
        index.close()
    finally:
        if follower is not None:
            follower.stop()
        assert run.stop() == 0, run.output()


def test_run_deletes_the_example_and_its_training_file_when_a_later_execution_reverts_the_fix(
    live: tuple[Path, Path, Path],
) -> None:
    logs, state, training = live
    run = Foylectl("run", "--logs", logs, "--state-dir", state, "--training-dir", training,
                   log_path=state.parent / "run.log")  # fmt: skip
    try:
        run.wait_output(RUN_READY, 30)
        store, index = SQLiteStore(state / "store.db"), ExampleIndex(state / "examples-index.db")
        with Appender(logs, seed=8) as appender:
            fix = append_fix(appender)
            training_file = training / f"{fix.name}{SUFFIX}"
            wait_for(
                lambda: learned_and_searchable(store, index, fix) and training_file.is_file(),
                10,
                "the learned fix",
            )
            generated = store.get("BlockLog", fix.name)["status"]["generatedBlock"]["contents"]
            append_execution(appender, fix.block_id, generated)
            wait_for(
                lambda: example_or_none(store, fix.name) is None and not training_file.exists(),
                10,
                "the reverted fix to be forgotten",
            )
        assert not searchable(index, fix)
        blocklog = store.get("BlockLog", fix.name)
        assert blocklog["status"]["executedBlock"]["contents"] == generated
        assert learnability(blocklog) == (False, "unchanged")
        store.close()
        index.close()
    finally:
        assert run.stop() == 0, run.output()


def test_learn_with_an_unavailable_provider_warns_once_and_marks_every_example(
    corpus: Path, analyzed: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 18: one warning for the outage, not a traceback per Example; each says why."""
    state = tmp_path / "state"
    foylectl("analyze", "--logs", corpus, "--state-dir", state, "--no-learn", "--no-progress")
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    with serve(dims=1536) as fake:
        fake.status = 503
        learn = foylectl("learn", "--state-dir", state, "--training-dir", tmp_path / "training",
                         "--openai-api-key-file", key, "--openai-base-url", fake.url)  # fmt: skip
    examples = get_json(state, "examples")
    assert len(examples) == len(learnable_names(state)) >= 5
    assert {e["status"]["reason"] for e in examples} == {"EmbeddingUnavailable"}
    assert not any(e["status"]["foyleLoadable"] for e in examples)
    assert learn.stderr.count("embedding service unavailable") == 1, learn.stderr
    assert "Traceback" not in learn.stderr, learn.stderr
    assert f"waitingForEmbedding {len(examples)}" in learn.stdout
