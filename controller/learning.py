"""The one learner builder: settings and a store in, learners (and their controllers) out.

`foylectl run` and `analyze` host the learners in the Pipeline, `learn` runs
them once, `learn --follow` and the operator put them behind learning
controllers fed by a watch. All of them build the learners here, so the
embedder, the training directories and `--learn-from` mean the same in each
(the operator once fell behind because it built its own).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from controller.configure import writable_state_dir
from controller.errors import UsageError
from controller.settings import Settings
from controller.store.base import Store

if TYPE_CHECKING:
    from controller.foyleconfig import Provider
    from controller.index.embedders import Embedder
    from controller.index.retrieval import ExampleIndex
    from controller.reconcilers.learner import LearnerReconciler
    from controller.runtime.controller import Controller
    from controller.runtime.metrics import MetricsRegistry

log = logging.getLogger("foylectl")

NO_EMBEDDINGS_WARNING = (
    "no embedding provider (no openai.apiKeyFile/baseURL or azureOpenAI in Foyle's config,"
    " no --openai-api-key-file): training files in %s get no embedding and Foyle's agent will"
    " skip every one of them; examples search still works locally (BM25)"
)


def embedder_for(provider: Provider | None) -> Embedder | None:
    """The provider's embedder (the index reports its outages once each: EmbeddingOutage)."""
    if provider is None:
        return None
    from controller.index.embedders import OPENAI_BASE_URL, OpenAIEmbedder

    key = ""
    if provider.api_key_file is not None:
        try:
            key = provider.api_key_file.expanduser().read_text().strip()
        except OSError as err:
            raise UsageError(
                f"cannot read the {provider.kind} API key file {provider.api_key_file}:"
                f" {err.strerror}"
            ) from err
    if provider.kind == "azure" and not provider.base_url:
        raise UsageError("Foyle's config names azureOpenAI without a baseURL")
    try:
        return OpenAIEmbedder(
            key,
            base_url=provider.base_url or OPENAI_BASE_URL,
            azure_deployment=provider.deployment,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def example_index(settings: Settings) -> ExampleIndex:
    """The example index, embedding as Foyle does when a provider is configured."""
    from controller.index.retrieval import ExampleIndex

    return ExampleIndex(settings.index_path, embedder_for(settings.embedding_provider))


def build_learners(
    settings: Settings, store: Store, registry: MetricsRegistry | None = None
) -> dict[str, LearnerReconciler]:
    """One learner per source `--learn-from` names (issue 11), sharing the index and files."""
    from controller.index.ledger import Owner
    from controller.index.training import TrainingWriter
    from controller.reconcilers.learner import LEARN_FROM, LearnerReconciler

    writable_state_dir(settings.state_dir)
    index = example_index(settings)
    if not index.embeds:
        log.warning(NO_EMBEDDINGS_WARNING, ", ".join(str(d) for d in settings.training_dirs))
    training = TrainingWriter(settings.training_dirs, owner=Owner.of(settings.state_dir))
    return {
        s.kind: LearnerReconciler(store, index, training, metrics=registry, source=s)
        for s in LEARN_FROM[settings.learn_from]
    }


def pipeline_learners(learners: dict[str, LearnerReconciler]) -> dict[str, Any]:
    """The Pipeline's learner arguments for the learners built."""
    blocklogs, sessions = learners.get("BlockLog"), learners.get("Session")
    return {
        "learner": blocklogs.reconcile if blocklogs else None,
        "session_learner": sessions.reconcile if sessions else None,
    }


def learning_controllers(
    learners: dict[str, LearnerReconciler], registry: MetricsRegistry
) -> dict[str, Controller]:
    """A controller per learner, for hosts fed by a watch (`learn --follow`, the operator):
    batches, retries with back-off, one warning per failing key."""
    from controller.runtime.controller import Controller

    return {
        kind: Controller(f"learn-{kind.lower()}", learner.reconcile, registry)
        for kind, learner in learners.items()
    }


def stop_all(controllers: dict[str, Controller], timeout: float) -> bool:
    """Stop every controller within one deadline in all; True when all drained."""
    deadline = time.monotonic() + timeout
    drained = True
    for controller in controllers.values():
        drained &= controller.stop(max(0.0, deadline - time.monotonic()))
    return drained


def report_progress(
    controllers: dict[str, Controller], stop: threading.Event, interval: float = 60.0
) -> threading.Thread:
    """An INFO summary per interval while anything was learned (not a line per object)."""

    def loop() -> None:
        last = dict.fromkeys(controllers, 0)
        while not stop.wait(interval):
            done = {kind: c.reconciled for kind, c in controllers.items()}
            if done != last:
                failing = sum(len(c.failing()) for c in controllers.values())
                log.info(
                    "learner: %s reconciled in the last %gs; %d failing",
                    ", ".join(f"{n - last[k]} {k}s" for k, n in done.items()),
                    interval,
                    failing,
                )
                last = done

    thread = threading.Thread(target=loop, name="learner-summary", daemon=True)
    thread.start()
    return thread
