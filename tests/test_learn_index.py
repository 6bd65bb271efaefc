"""The retrieval index (BM25 and embeddings) and the OpenAI embedder against a local fake server."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, serve, vector_for

from controller.api.result import TerminalError
from controller.index.embedders import EmbeddingError, OpenAIEmbedder
from controller.index.retrieval import ExampleIndex

QUERIES = {
    "pods": "List the pods running in the dev namespace of the cluster",
    "logs": "Read the logs of the cluster dev in project foyle-dev with gcloud",
    "buckets": "Create a storage bucket for the build artifacts",
}
VOCABULARY = ("pod", "log", "bucket", "cluster", "dev")


class CountingEmbedder:
    """A bag-of-words embedder over a tiny vocabulary that records every text it embeds."""

    def __init__(self, name: str = "bag-of-words") -> None:
        self.name = name
        self.calls: list[str] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.extend(texts)
        return [[float(t.lower().count(w)) + 0.01 for w in VOCABULARY] for t in texts]


def filled(index: ExampleIndex) -> ExampleIndex:
    for name, text in QUERIES.items():
        index.upsert(name, text, json.dumps({"name": name}))
    return index


def test_bm25_puts_the_matching_intent_first(tmp_path: Path) -> None:
    index = filled(ExampleIndex(tmp_path / "index.db"))
    hits = index.search("how do I list pods in dev?", k=3)
    assert [name for name, _, _ in hits][0] == "pods"
    assert hits[0][2] == json.dumps({"name": "pods"})
    assert hits[0][1] > hits[-1][1]
    assert [n for n, _, _ in index.search("show me the gcloud logging output", k=1)] == ["logs"]


def test_an_exact_match_scores_1_even_where_bm25_gives_common_words_nothing(
    tmp_path: Path,
) -> None:
    index = ExampleIndex(tmp_path / "index.db")
    index.upsert("a", "list the pods in dev", "{}")
    index.upsert("b", "list the pods in prod", "{}")  # every word but one in both
    hits = index.search("list the pods in dev", k=2)
    assert [(name, score) for name, score, _ in hits] == [("a", 1.0), ("b", 0.8)]


def test_search_returns_at_most_k_and_nothing_for_no_words(tmp_path: Path) -> None:
    index = filled(ExampleIndex(tmp_path / "index.db"))
    assert len(index.search("the cluster dev", k=2)) == 2
    assert index.search("?!", k=3) == []
    assert index.search("pods", k=0) == []
    assert index.search('"quoted" OR NEAR(x) * -pods', k=1)[0][0] == "pods"  # no FTS syntax


def test_upsert_replaces_and_delete_forgets(tmp_path: Path) -> None:
    index = filled(ExampleIndex(tmp_path / "index.db"))
    index.upsert("pods", "Scale the deployment to three replicas", '{"v": 2}')
    assert len(index) == 3
    assert [n for n, _, _ in index.search("list pods", k=3)] != ["pods"]
    [(name, _, body)] = index.search("scale replicas", k=1)
    assert (name, body) == ("pods", '{"v": 2}')
    index.delete("pods")
    index.delete("never-there")
    assert len(index) == 2
    assert index.names() == {"logs", "buckets"}
    assert index.search("scale replicas deployment", k=3) == []


def test_index_persists_across_instances_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    filled(ExampleIndex(path)).close()
    reopened = ExampleIndex(path)
    assert len(reopened) == 3
    assert reopened.search("storage bucket", k=1)[0][0] == "buckets"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_embeddings_are_made_only_for_new_or_changed_texts(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    embedder = CountingEmbedder()
    index = filled(ExampleIndex(path, embedder))
    assert sorted(embedder.calls) == sorted(QUERIES.values())

    embedder.calls.clear()
    index.upsert("pods", QUERIES["pods"], '{"changed": "json only"}')
    index.upsert("logs", QUERIES["logs"], json.dumps({"name": "logs"}))
    assert embedder.calls == []
    index.upsert("logs", "Tail the logs of the cluster", "{}")
    assert embedder.calls == ["Tail the logs of the cluster"]
    index.close()

    embedder.calls.clear()
    restarted = ExampleIndex(path, embedder)
    assert restarted.search("pods pods", k=1)[0][0] == "pods"
    assert embedder.calls == ["pods pods"]  # only the query: nothing re-embedded


def test_vector_search_ranks_by_cosine(tmp_path: Path) -> None:
    index = filled(ExampleIndex(tmp_path / "index.db", CountingEmbedder()))
    hits = index.search("which pod is failing?", k=3)
    assert hits[0][0] == "pods"
    assert 1.0 >= hits[0][1] > hits[1][1] >= hits[2][1] > 0  # cosine of positive vectors
    vector = index.embedding("pods")
    assert vector is not None and math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)


def test_examples_indexed_before_an_embedder_are_embedded_once_on_search(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    filled(ExampleIndex(path)).close()
    embedder = CountingEmbedder()
    index = ExampleIndex(path, embedder)
    assert index.embedding("pods") is None
    assert index.search("bucket", k=1)[0][0] == "buckets"
    assert sorted(embedder.calls) == sorted([*QUERIES.values(), "bucket"])
    embedder.calls.clear()
    index.search("bucket", k=1)
    assert embedder.calls == ["bucket"]

    other = ExampleIndex(path, CountingEmbedder("another-model"))
    other.search("bucket", k=1)
    assert len(other._embedder.calls) == 4  # type: ignore[union-attr]  # new vector space


# ---- OpenAI embedder against a local fake server ----


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with serve() as fake:
        yield fake


def test_openai_embedder_posts_texts_as_foyle_does_and_returns_vectors_in_order(
    fake_openai: FakeOpenAI,
) -> None:
    embedder = OpenAIEmbedder("sk-test", base_url=fake_openai.url, timeout=5)
    assert embedder.embed(["a", "b", "c"]) == [vector_for(t, 2) for t in "abc"]
    [request] = fake_openai.requests
    assert request["path"] == "/v1/embeddings"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"] == {
        "model": "text-embedding-3-small",
        "input": ["a", "b", "c"],
        "encoding_format": "float",
    }
    assert embedder.embed([]) == []
    assert len(fake_openai.requests) == 1


def test_azure_embedder_uses_the_deployment_url_and_api_key_header(
    fake_openai: FakeOpenAI,
) -> None:
    base = fake_openai.url.removesuffix("/v1")
    embedder = OpenAIEmbedder("az-key", base_url=base, azure_deployment="emb", timeout=5)
    embedder.embed(["a"])
    [request] = fake_openai.requests
    assert request["path"] == "/openai/deployments/emb/embeddings?api-version=2024-02-01"
    assert request["headers"]["api-key"] == "az-key"
    assert "authorization" not in request["headers"]


def test_a_custom_base_url_needs_no_key_but_openai_does(fake_openai: FakeOpenAI) -> None:
    OpenAIEmbedder("", base_url=fake_openai.url, timeout=5).embed(["a"])
    assert "authorization" not in fake_openai.requests[0]["headers"]
    with pytest.raises(ValueError, match="API key is required"):
        OpenAIEmbedder("")


def test_openai_error_is_explained_without_the_key(fake_openai: FakeOpenAI) -> None:
    fake_openai.status = 401
    embedder = OpenAIEmbedder("sk-secret", base_url=fake_openai.url, timeout=5)
    with pytest.raises(EmbeddingError, match="HTTP 401: Incorrect API key provided") as err:
        embedder.embed(["a"])
    assert "sk-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("status", "terminal"), [(400, True), (422, True), (429, False), (500, False)]
)
def test_rejected_input_is_a_terminal_error_and_overload_is_not(
    fake_openai: FakeOpenAI, status: int, terminal: bool
) -> None:
    fake_openai.status = status
    embedder = OpenAIEmbedder("k", base_url=fake_openai.url, timeout=5)
    with pytest.raises(EmbeddingError, match=f"HTTP {status}") as err:
        embedder.embed(["a"])
    assert isinstance(err.value, TerminalError) is terminal


def test_openai_unreachable_server_is_a_clear_error(fake_openai: FakeOpenAI) -> None:
    port = int(fake_openai.url.rsplit(":", 1)[1].split("/")[0])
    closed = OpenAIEmbedder("k", base_url=f"http://127.0.0.1:{port + 1}/v1", timeout=2)
    with pytest.raises(EmbeddingError, match="cannot reach the embeddings API"):
        closed.embed(["a"])


def test_openai_embedder_feeds_the_index(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    index = ExampleIndex(tmp_path / "index.db", OpenAIEmbedder("k", base_url=fake_openai.url))
    index.upsert("one", "some text", "{}")
    assert index.embedding("one") == pytest.approx(vector_for("some text", 2), rel=1e-6)
