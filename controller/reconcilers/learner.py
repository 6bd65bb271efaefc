"""The learner: keeps one Example, its training files and its index entry per learnable source.

A source is a BlockLog (Foyle's learner before v0.0.37) or a Session (Foyle's
learner since then; issue 11): `Source` says which kind, and which pure rule
decides learnability and makes the Example. Keyed by the source's name (an
Example shares its source's name). `reconcile` reads the source and converges
everything derived from it:

* learnable -> the Example (spec written only when it changed), the index
  entry, the training files (with the index's embedding when there is one),
  then the Example's status (`indexedTime`, `trainingFiles`,
  `observedGeneration`, `foyleLoadable` and, when Foyle would skip the file,
  `reason`), rewritten only when something moved;
* absent or no longer learnable (e.g. a later execution undid the fix) -> the
  index entry, the training files and then the Example are deleted. Derived
  data goes first so a crash in between leaves an Example to find next time.

Level-triggered and idempotent: a repeated call on an unchanged source makes
no store writes and no file writes. Learning reads only BlockLogs and Sessions,
so it can be redone (`learn_all`) without reprocessing any log.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from controller.api.kinds import Resource
from controller.api.resource import rfc3339
from controller.api.result import DONE, Result, Unavailable
from controller.index.embedders import UNAVAILABLE_REASON, EmbeddingUnavailable
from controller.index.retrieval import ExampleIndex
from controller.index.training import TrainingWriter, foyle_skip_reason
from controller.learn.query import blocks_to_markdown
from controller.learn.rule import BLOCKLOG_LABEL, example_for, learnability
from controller.learn.session_rule import SESSION_LABEL, example_for_session, session_learnability
from controller.store.base import NotFound, Store, get_many, read_modify_write

log = logging.getLogger(__name__)

KIND = "Example"


@dataclass(frozen=True)
class Source:
    """What the learner learns from: a kind, the label on its Examples, and its pure rule."""

    kind: str
    label: str
    learnability: Callable[[Resource], tuple[bool, str]]
    example_for: Callable[[Resource], Resource | None]


BLOCKLOG_SOURCE = Source("BlockLog", BLOCKLOG_LABEL, learnability, example_for)
SESSION_SOURCE = Source("Session", SESSION_LABEL, session_learnability, example_for_session)
LEARN_FROM = {
    "blocklogs": (BLOCKLOG_SOURCE,),
    "sessions": (SESSION_SOURCE,),
    "both": (BLOCKLOG_SOURCE, SESSION_SOURCE),
}


class _Counter(Protocol):
    def labels(self, *values: str) -> _Counter: ...

    def inc(self, amount: float = 1) -> None: ...


class Metrics(Protocol):
    """What the learner needs from a metrics registry (runtime.metrics.MetricsRegistry fits)."""

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Any: ...


class _NullCounter:
    def labels(self, *values: str) -> _NullCounter:
        return self

    def inc(self, amount: float = 1) -> None:
        pass


class LearnerReconciler:
    """Source -> Example + training files + index entry (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        index: ExampleIndex,
        training: TrainingWriter,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        source: Source = BLOCKLOG_SOURCE,
    ) -> None:
        self.store = store
        self.source = source
        self.index = index
        self.training = training
        self.clock = clock
        self._learned: _Counter = _NullCounter()
        self._not_learnable: _Counter = _NullCounter()
        self._errors: _Counter = _NullCounter()
        self._unloadable: _Counter = _NullCounter()
        if metrics is not None:
            self._learned = metrics.counter(
                "learner_examples_total", "Examples created or changed by the learner."
            )
            self._not_learnable = metrics.counter(
                "learner_not_learnable_total",
                "Reconciles that found a BlockLog or Session not learnable, by reason.",
                ["reason"],
            )
            self._errors = metrics.counter(
                "learner_reconcile_errors_total", "Learner reconciles that raised."
            )
            self._unloadable = metrics.counter(
                "learner_foyle_unloadable_total",
                "Training files written that Foyle's agent would skip, by reason"
                " (NoEmbedding: no embedding provider; EmbeddingLength: not 1536 floats).",
                ["reason"],
            )

    def reconcile(self, name: str) -> Result:
        """Converge the Example and its derived data for the source named `name`."""
        try:
            self._reconcile(name)
        except Exception:
            self._errors.inc()
            raise
        return DONE

    def reconcile_many(self, names: list[str]) -> None:
        """Converge a batch: its sources and Examples are read in one query each.

        A source that is not learnable and has no Example needs no work: nothing
        derived from it can exist (an Example is written before its index entry and
        files, and deleted after them). During catch-up that is most of them.
        """
        sources = get_many(self.store, self.source.kind, names)
        examples = get_many(self.store, KIND, names)
        for name in names:
            source = sources.get(name)
            if name not in examples:
                learnable, reason = (
                    self.source.learnability(source) if source else (False, "NotFound")
                )
                if not learnable:
                    self._not_learnable.labels(reason).inc()
                    continue
            self.reconcile(name)

    def _reconcile(self, name: str) -> None:
        try:
            source = self.store.get(self.source.kind, name)
        except NotFound:
            self._forget(name)
            return
        learnable, reason = self.source.learnability(source)
        example = self.source.example_for(source) if learnable else None
        if example is None:
            self._not_learnable.labels(reason).inc()
            self._forget(name)
            return
        if self._write_spec(example):
            self._learned.inc()
        try:
            self.index.upsert(
                name,
                blocks_to_markdown(example["spec"]["query"]["blocks"]),
                orjson.dumps(example, option=orjson.OPT_SORT_KEYS).decode(),
            )
        except EmbeddingUnavailable:
            self._mark_waiting(name)  # visible on the Example while it is retried
            raise
        embedding = self.index.embedding(name)
        files = self.training.write(example, embedding)
        reason = foyle_skip_reason(embedding)
        if reason:
            self._unloadable.labels(reason).inc()
        self._write_status(name, files, reason)

    def _write_spec(self, example: Resource) -> bool:
        """Create or update the Example's spec, labels and owner; True when they changed."""
        changed = False

        def mutate(current: Resource | None) -> Resource | None:
            nonlocal changed
            if current is None:
                changed = True
                return example
            desired = dict(current, spec=example["spec"])
            desired["metadata"] = dict(current["metadata"])
            for key in ("labels", "ownerReferences"):
                if key in example["metadata"]:
                    desired["metadata"][key] = example["metadata"][key]
                else:
                    desired["metadata"].pop(key, None)
            changed = desired != current
            return desired if changed else None

        read_modify_write(self.store, KIND, example["metadata"]["name"], mutate)
        return changed

    def _write_status(self, name: str, files: list[str], reason: str) -> None:
        def mutate(current: Resource | None) -> Resource | None:
            if current is None:
                return None  # deleted meanwhile; the next reconcile decides again
            status = current.get("status") or {}
            generation = current["metadata"].get("generation", 1)
            if (
                status.get("observedGeneration") == generation
                and status.get("trainingFiles") == files
                and status.get("indexedTime")
                and status.get("foyleLoadable") == (not reason)
                and status.get("reason", "") == reason
            ):
                return None
            current["status"] = dict(
                status,
                indexedTime=rfc3339(self.clock()),
                trainingFiles=files,
                observedGeneration=generation,
                foyleLoadable=not reason,
            )
            current["status"].pop("reason", None)
            if reason:
                current["status"]["reason"] = reason
            return current

        read_modify_write(self.store, KIND, name, mutate)

    def _mark_waiting(self, name: str) -> None:
        """Status reason EmbeddingUnavailable: the Example waits for the embedding provider."""

        def mutate(current: Resource | None) -> Resource | None:
            status = (current or {}).get("status") or {}
            if current is None or status.get("reason") == UNAVAILABLE_REASON:
                return None
            current["status"] = dict(status, foyleLoadable=False, reason=UNAVAILABLE_REASON)
            return current

        read_modify_write(self.store, KIND, name, mutate)

    def _forget(self, name: str) -> None:
        self.index.delete(name)
        self.training.delete(name)
        with contextlib.suppress(NotFound):
            self.store.delete(KIND, name)


def learn_all(store: Store, reconciler: LearnerReconciler) -> dict[str, int]:
    """One pass over every source object, plus its Examples and index entries left without one.

    Examples of the other source are left alone. A failing source object is
    logged and counted, and the pass goes on.
    """
    source = reconciler.source
    plural = source.kind.lower() + "s"
    counts = {plural: 0, "learnable": 0, "notLearnable": 0, "orphans": 0, "errors": 0}
    objects = store.list(source.kind)
    live = {b["metadata"]["name"] for b in objects}
    examples = store.list(KIND)
    ours = {e["metadata"]["name"] for e in examples if source.label in _labels(e)}
    others = {e["metadata"]["name"] for e in examples} - ours
    orphans = (ours | (reconciler.index.names() - others)) - live
    work = [(b["metadata"]["name"], source.learnability(b)[0]) for b in objects]
    for name in sorted(orphans):
        work.append((name, False))
    for name, learnable in work:
        try:
            reconciler.reconcile(name)
        except Unavailable:  # e.g. the embedding provider: reported once, where it is watched
            counts["errors"] += 1
            continue
        except Exception:
            log.exception("learner: reconcile of %s failed", name)
            counts["errors"] += 1
            continue
        if name in orphans:
            counts["orphans"] += 1
        else:
            counts[plural] += 1
            counts["learnable" if learnable else "notLearnable"] += 1
    return counts


def _labels(resource: Resource) -> dict[str, str]:
    return resource["metadata"].get("labels") or {}
