"""What `learner_examples_total` counts (issue 22 item 9): what happened, by result.

It used to count every spec write, so a run where every embedding failed
reported thousands of examples learned. A real store, index, training dir and
OpenAI embedder, against the local fake OpenAI server.
"""

from __future__ import annotations

from pathlib import Path

from fake_openai import serve

from controller.index.embedders import RETRY_EMBEDDING_SECONDS, OpenAIEmbedder  # the longest wait
from tests.test_learner_reconciler import FIXED, Env


def results(env: Env) -> dict[str, float]:
    return {
        r: env.counter("learner_examples_total", result=r) for r in ("written", "skipped", "failed")
    }


def test_examples_that_fail_to_embed_are_counted_as_failed_not_learned(tmp_path: Path) -> None:
    now = [0.0]
    with serve(dims=1536) as fake:
        env = Env(tmp_path, OpenAIEmbedder("sk-test", base_url=fake.url), clock=lambda: now[0])
        fake.status = 500
        for attempt in range(3):  # the fix changes while the API is down: 3 new specs
            env.put_blocklog("b1", FIXED + f" --limit {attempt}")
            assert env.learner.reconcile(["b1"]).result("b1").requeue_after  # waits for the API
        assert results(env) == {"written": 0, "skipped": 0, "failed": 3}

        fake.status = 200
        now[0] += RETRY_EMBEDDING_SECONDS  # the outage's retry interval has passed
        env.learner.reconcile(["b1"])  # the retry finishes what the failed attempts began
        env.learner.reconcile(["b1"])  # nothing left to do
        assert results(env) == {"written": 1, "skipped": 1, "failed": 3}
        assert env.example("b1")["status"]["foyleLoadable"] is True  # type: ignore[index]
