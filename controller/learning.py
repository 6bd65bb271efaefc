"""The one learner builder: settings and a store in, learners (and their controllers) out.

`foylectl run` and `analyze` host the learners in the Pipeline, `learn` runs
them once, `learn --follow` and the operator put them behind learning
controllers fed by a watch. All of them build the learners here, so the
embedder, the training directories and `--learn-from` mean the same in each
(the operator once fell behind because it built its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    from controller.runtime.manager import Manager
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


def learning_manager(
    learners: dict[str, LearnerReconciler],
    registry: MetricsRegistry,
    summary_interval: float | None = None,
) -> tuple[Manager, dict[str, Controller]]:
    """A manager with a controller per learner, for hosts fed by a watch (`learn --follow`,
    the operator): batches, retries with back-off, one warning per failing key, a stop within
    one deadline in all; with `summary_interval`, an INFO summary per interval while anything
    was learned (not a line per object). The controllers by source kind, to feed them."""
    from controller.runtime.controller import Controller
    from controller.runtime.manager import Manager

    manager = Manager(registry)
    controllers = {
        kind: manager.add(Controller(f"learn-{kind.lower()}", learner.reconcile, registry))
        for kind, learner in learners.items()
    }
    if summary_interval is not None:
        manager.every(summary_interval, _summary(controllers, summary_interval), "learner-summary")
    return manager, controllers


def _summary(controllers: dict[str, Controller], interval: float) -> Callable[[], None]:
    last = dict.fromkeys(controllers, 0)

    def log_summary() -> None:
        done = {kind: c.reconciled for kind, c in controllers.items()}
        if done != last:
            failing = sum(len(c.failing()) for c in controllers.values())
            log.info(
                "learner: %s reconciled in the last %gs; %d failing",
                ", ".join(f"{n - last[k]} {k}s" for k, n in done.items()),
                interval,
                failing,
            )
            last.update(done)

    return log_summary
