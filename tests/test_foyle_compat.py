"""Compatibility with Foyle's agent: every learnable BlockLog yields a file Foyle loads and uses.

The training files `foylectl analyze` writes are read back with a strict
decoder written from Foyle's protos (`foyle_wire`) and Foyle's loader rules
(suffix, directory, 1536-float embedding, id), on the shared samples and on a
generated corpus, with a Foyle config naming a key file and a local fake
OpenAI server as its base URL. Each loaded Example must be the one Foyle's
learner would write: id = block id, query = CreateQuery of the suggestion's
doc, answer = the executed block, embedding = the vector of the exact text
Foyle's vectorizer embeds (BlocksToMarkdown of the query).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI, serve, vector_for
from foyle_wire import DIMENSIONS, WireError, decode, load_rules

from controller.index.ledger import LEDGER_DIR
from controller.learn import foyle_pb
from controller.learn.query import blocks_to_markdown, create_query
from controller.learn.rule import learnability
from controller.learn.session_rule import session_learnability
from tests.cli_helpers import foylectl, get_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from foyle_compat import compare_sessions  # noqa: E402
from foyle_reference import run_foyle  # noqa: E402
from gen_logs import generate  # noqa: E402


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with serve(dims=DIMENSIONS) as server:
        yield server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus") / "logs"


def generated(logs: Path, streaming: bool) -> Path:
    """A 300 kB corpus in `logs`: Foyle's older logs, or (`streaming`) v0.0.37+ sessions."""
    if not logs.exists():
        generate(logs, size_bytes=300_000, seed=11, streaming=streaming)
    return logs


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated(tmp_path_factory.mktemp("streaming") / "logs", streaming=True)


def analyze(logs: Path, work: Path, config_text: str) -> tuple[Path, Path]:
    """`foylectl analyze` with a Foyle config whose exampleDirs is `work/training`."""
    training = work / "training"
    config = work / "foyle" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(config_text + f"learner: {{exampleDirs: [{training}]}}\n")
    state = work / "state"
    foylectl("analyze", "--logs", logs, "--state-dir", state, "--foyle-config", config,
             "--no-progress")  # fmt: skip
    return state, training


def test_an_unreachable_embedding_service_is_one_warning_and_the_examples_wait(
    corpus: Path, tmp_path: Path
) -> None:
    """Issue 20: was a WARNING per Example and exit 1; now one warning, a status, a retry."""
    with serve(dims=DIMENSIONS) as down:
        down.status = 503
        config_text = with_key(tmp_path, down)
        training, config = tmp_path / "training", tmp_path / "foyle" / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(config_text + f"learner: {{exampleDirs: [{training}]}}\n")
        state = tmp_path / "state"
        proc = foylectl("analyze", "--logs", generated(corpus, streaming=False), "--state-dir",
                        state, "--foyle-config", config, "--no-progress")  # fmt: skip
        examples = get_json(state, "examples")
        assert len(examples) == len(learnable(state)) > 1
        warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and "embedding service unavailable" in warnings[0], warnings
        assert f"{len(examples)} waiting for the embedding service" in proc.stdout
        assert {e["status"]["reason"] for e in examples} == {"EmbeddingUnavailable"}
        assert load_rules([training]).files == 0  # no file Foyle's loader would reject

        down.status = 200  # back: the next start retries every one (their marks were kept)
        again = foylectl("analyze", "--logs", generated(corpus, streaming=False), "--state-dir",
                         state, "--foyle-config", config, "--no-progress")  # fmt: skip
        assert "waiting" not in again.stdout and "WARNING" not in again.stderr
    report = load_rules([training])
    assert report.files == len(report.loaded) == len(examples)
    assert all(e["status"]["foyleLoadable"] for e in get_json(state, "examples"))


def not_ledger(paths: list[str]) -> list[str]:
    """Files Foyle's loader ignores, but foylectl's ledger of what it wrote (issue 20)."""
    return [p for p in paths if LEDGER_DIR not in Path(p).parts]


def with_key(work: Path, fake: FakeOpenAI) -> str:
    key = work / "openai.key"
    key.write_text("sk-test\n")
    return f"openai: {{apiKeyFile: {key}, baseURL: {fake.url}}}\n"


def learnable(state: Path) -> dict[str, dict[str, Any]]:
    return {b["spec"]["id"]: b for b in get_json(state, "blocklogs") if learnability(b)[0]}


@pytest.mark.parametrize("source", ["samples", "generated"])
def test_every_learnable_blocklog_yields_a_file_foyle_loads_and_uses(
    source: str, testdata: Path, corpus: Path, fake: FakeOpenAI, tmp_path: Path
) -> None:
    logs = testdata if source == "samples" else generated(corpus, streaming=False)
    state, training = analyze(logs, tmp_path, with_key(tmp_path, fake))
    blocklogs = learnable(state)
    assert blocklogs, "the corpus must hold learnable BlockLogs for this test to mean anything"

    report = load_rules([training])
    assert report.skipped == {} and not_ledger(report.ignored) == []
    assert report.files == len(blocklogs) == len(report.loaded)
    embedded = set(fake.texts())
    for block_id, blocklog in blocklogs.items():
        example = report.loaded[block_id]
        expected_query = create_query(blocklog["status"]["doc"]["blocks"])
        assert example["query"].get("blocks", []) == [_proto_shape(b) for b in expected_query]
        assert example["answer"] == [_proto_shape(blocklog["status"]["executedBlock"])]
        text = blocks_to_markdown(expected_query)
        assert text in embedded
        assert example["embedding"] == pytest.approx(vector_for(text, DIMENSIONS), abs=1e-6)
    assert all(e["status"]["foyleLoadable"] for e in get_json(state, "examples"))


def test_every_learnable_session_yields_the_file_foyles_session_learner_writes(
    streaming: Path, fake: FakeOpenAI, tmp_path: Path
) -> None:
    state, training = analyze(streaming, tmp_path, with_key(tmp_path, fake))
    sessions = [s for s in get_json(state, "sessions") if session_learnability(s)[0]]
    blocklogs = learnable(state)
    assert sessions, "the corpus must hold learnable Sessions for this test to mean anything"

    report = load_rules([training])
    assert report.skipped == {} and not_ledger(report.ignored) == []
    assert report.files == len(sessions) + len(blocklogs) == len(report.loaded)
    for session in sessions:
        example = report.loaded[session["spec"]["contextId"]]
        context = session["status"]["fullContext"]
        query = create_query(context["notebook"]["blocks"][: context["selected"]])
        assert example["query"].get("blocks", []) == [_proto_shape(b) for b in query]
        [execution] = [
            e
            for e in session["status"]["logEvents"]
            if e["type"] == "EXECUTE" and e["executeStatus"] == "SUCCEEDED"
        ][-1:]
        [cell] = [c for c in execution["cells"] if c["id"] == execution["selectedId"]]
        answer = _proto_shape({**cell, "contents": cell["contents"].strip()})
        assert example["answer"] == [answer]
        text = blocks_to_markdown(query)
        assert example["embedding"] == pytest.approx(vector_for(text, DIMENSIONS), abs=1e-6)


def test_foyles_own_session_rules_learn_exactly_what_foylectl_learns(
    streaming: Path, fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Issue 20: Foyle v0.0.45's session builder and learner, run over the same raw lines.

    The corpus is shaped as Foyle v0.0.45 writes it (closure names, resent
    events, sessions that never end); hack/foyle_reference.py follows
    session_builder.go and learner.go line by line, independent of
    controller.analyze. Every Example Foyle would write is a file Foyle loads
    here, with Foyle's id, query and answer, and there is no Session Foyle
    would not make.
    """
    state, training = analyze(streaming, tmp_path, with_key(tmp_path, fake))
    foyle = run_foyle([streaming])
    counts = compare_sessions([streaming], state, training)
    assert counts["foyleLearned"] > 0 and counts["foyleSessions"] > counts["foyleLearnable"]
    assert counts["sessionExamplesLikeFoyle"] == counts["foyleLearned"]
    assert counts["missing"] == counts["sessionsFoyleWouldNotMake"] == 0
    assert counts["sessions"] == counts["foyleSessions"]
    ours = {
        s["spec"]["contextId"] for s in get_json(state, "sessions") if session_learnability(s)[0]
    }
    assert ours == set(foyle.examples)


def test_without_a_key_every_file_is_written_and_every_example_says_foyle_skips_it(
    corpus: Path, tmp_path: Path
) -> None:
    state, training = analyze(generated(corpus, streaming=False), tmp_path, "")
    report = load_rules([training])
    assert report.files == len(learnable(state)) > 0
    assert report.loaded == {}
    assert set(report.skipped.values()) == {f"embedding of 0 floats, not {DIMENSIONS}"}
    reasons = {(e["status"]["foyleLoadable"], e["status"]["reason"]) for e in get_json(state, "examples")}  # fmt: skip
    assert reasons == {(False, "NoEmbedding")}


def _proto_shape(block: dict[str, Any]) -> dict[str, Any]:
    """A block as the strict decoder returns it: proto3 leaves empty fields out."""
    shape = {k: v for k, v in block.items() if v not in ("", [], {}, None)}
    if shape.get("kind") == "UNKNOWN_BLOCK_KIND":
        del shape["kind"]
    outputs = [{"items": [_drop_empty(i) for i in o.get("items", [])]} for o in block.get("outputs", [])]  # fmt: skip
    if outputs:
        shape["outputs"] = [o if o["items"] else {} for o in outputs]
    return shape


def _drop_empty(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v}


def test_the_strict_decoder_rejects_what_foyle_does_not_define() -> None:
    good = foyle_pb.Example(id="x", embedding=[0.5] * 3).SerializeToString()
    assert decode(good) == {"id": "x", "embedding": [0.5] * 3}
    with pytest.raises(WireError, match="unknown field 5"):
        decode(good + bytes([5 << 3 | 2, 0]))
    with pytest.raises(WireError, match="wire type 0, Foyle defines 2"):
        decode(bytes([1 << 3 | 0, 1]))
    with pytest.raises(WireError, match="runs past the end"):
        decode(bytes([1 << 3 | 2, 9, 0x61]))
    with pytest.raises(WireError, match="not UTF-8"):
        decode(bytes([1 << 3 | 2, 1, 0xFF]))
