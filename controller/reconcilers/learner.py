"""The learner: keeps one Example, its training files and its index entry per learnable source.

A source is a BlockLog (Foyle's learner before v0.0.37) or a Session (Foyle's
learner since then; issue 11): `Source` says which kind, and which pure rule
decides learnability and makes the Example. Keyed by the source's name (an
Example shares its source's name). `reconcile(names)` reads a batch of sources
and their Examples in one query each and converges everything derived from each:

* learnable -> the Example (spec written only when it changed), the index
  entry, the training files (with the index's embedding when there is one),
  then the Example's status (`indexedTime`, `trainingFiles`,
  `observedGeneration`, `foyleLoadable` and, when Foyle would skip the file,
  `reason`), rewritten only when something moved;
* absent or no longer learnable (e.g. a later execution undid the fix) -> the
  index entry, the training files and then the Example are deleted. Derived
  data goes first so a crash in between leaves an Example to find next time.
* the embedding service unavailable (issue 20) -> the Example stays, without
  an index entry or training file (Foyle would skip a file without a vector),
  its status says `EmbeddingUnavailable`, and the source is handed back to be
  retried later (a requeue_after in its Outcome: the dirty mark stays until then);
  the index warns once per outage, not once per Example.

Level-triggered and idempotent: a repeated call on an unchanged source makes
no store writes and no file writes. Learning reads only BlockLogs and Sessions,
so it can be redone (`learn_all`) without reprocessing any log.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import orjson

from controller.api.kinds import Resource
from controller.api.resource import rfc3339
from controller.api.result import Outcome, Result
from controller.index.embedders import EmbeddingUnavailable
from controller.index.retrieval import ExampleIndex, IndexWrite
from controller.index.training import TrainingWriter, foyle_skip_reason
from controller.learn.query import blocks_to_markdown
from controller.learn.rule import BLOCKLOG_LABEL, example_for, learnability
from controller.learn.session_rule import SESSION_LABEL, example_for_session, session_learnability
from controller.reconcilers.metrics import Counter, Metrics, NullCounter
from controller.store.base import (
    Mutator,
    NotFound,
    Store,
    get_many,
    read_modify_write,
    read_modify_write_many,
)
from controller.store.unit import Transactional

log = logging.getLogger(__name__)

KIND = "Example"
EMBEDDING_UNAVAILABLE = "EmbeddingUnavailable"
LEARN_ALL_BATCH = 256  # sources per reconcile in `learn_all`, as the worker loop batches them


@dataclass(frozen=True)
class Source:
    """What the learner learns from: a kind, the label on its Examples, and its pure rule."""

    kind: str
    label: str
    learnability: Callable[[Resource], tuple[bool, str]]
    example_for: Callable[[Resource], Resource | None]


BLOCKLOG_SOURCE = Source("BlockLog", BLOCKLOG_LABEL, learnability, example_for)
SESSION_SOURCE = Source("Session", SESSION_LABEL, session_learnability, example_for_session)


@dataclass
class _Learning:
    """A learnable source within a batch: its Example (spec written), whether the spec
    changed, its index entry to write (None: up to date, or `waiting` for the
    embedding service), then its embedding and training files."""

    name: str
    example: Resource
    changed: bool
    write: IndexWrite | None
    waiting: bool
    embedding: list[float] | None = None  # what the index holds, once written
    files: list[str] = field(default_factory=list)  # the training files written


LEARN_FROM = {
    "blocklogs": (BLOCKLOG_SOURCE,),
    "sessions": (SESSION_SOURCE,),
    "both": (BLOCKLOG_SOURCE, SESSION_SOURCE),
}


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
        self._learned: Counter = NullCounter()
        self._not_learnable: Counter = NullCounter()
        self._errors: Counter = NullCounter()
        self._unloadable: Counter = NullCounter()
        if metrics is not None:
            self._learned = metrics.counter(
                "learner_examples_total",
                "Reconciles of a learnable source, by result: written (the Example was created"
                " or changed, with its index entry and files), skipped (already learned as it"
                " is), failed (raised, e.g. the embedding failed; retried).",
                ["result"],
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

    def reconcile(self, names: list[str]) -> Outcome:
        """Converge a batch: its sources and Examples are read in one query each, their
        specs and then their statuses written in one store transaction each, and their
        index entries in one index transaction.

        What is slow and outside the store (embedding calls, training files) runs
        between those transactions, never inside one: a store transaction holds the
        store's write lock, which every other stage waits on (issue 23: a batch of
        training files on ext4 held the trace stage up for seconds). A crash in between
        leaves the dirty mark, and the batch is converged again.

        A source that is not learnable and has no Example needs no work: nothing
        derived from it can exist (an Example is written before its index entry and
        files, and deleted after them). During catch-up that is most of them. A
        source whose convergence fails is reported failed on its own; what it wrote
        before failing is converged from by the retry. One waiting for the embedding
        service is looked at again later (its dirty mark stays until then).
        """
        sources = get_many(self.store, self.source.kind, names)
        examples = get_many(self.store, KIND, names)
        outcome = Outcome()
        wanted: list[tuple[str, Resource]] = []
        for name in names:
            source = sources.get(name)
            learnable, reason = self.source.learnability(source) if source else (False, "NotFound")
            if not learnable and name not in examples:
                self._not_learnable.labels(reason).inc()
                continue
            example = None
            try:
                example = self.source.example_for(source) if source and learnable else None
                if example is None:
                    self._not_learnable.labels(reason).inc()
                    self._forget(name)
                else:
                    wanted.append((name, example))
            except Exception as err:
                self._failed(outcome, name, err, learnable=example is not None)
        learning = self._write_specs(wanted, outcome)
        self._index(learning, outcome)
        learning = [item for item in learning if item.name not in outcome.failed]
        for item in learning:
            self._guarded(outcome, item.name, self._write_files, item)
        self._finish([item for item in learning if item.name not in outcome.failed], outcome)
        for item in learning:
            if item.waiting and item.name not in outcome.failed:
                outcome.set_result(item.name, Result(requeue_after=self.index.outage.retry_in()))
        return outcome

    def _transaction(self) -> AbstractContextManager[None]:
        """One store transaction (a store of round trips has none: each write is one)."""
        return self.store.transaction() if isinstance(self.store, Transactional) else nullcontext()

    def _guarded(
        self, outcome: Outcome, name: str, step: Callable[[_Learning], None], item: _Learning
    ) -> None:
        try:
            step(item)
        except Exception as err:
            self._failed(outcome, name, err, learnable=True)

    def _write_specs(self, wanted: list[tuple[str, Resource]], outcome: Outcome) -> list[_Learning]:
        """Write the Examples' specs (one bulk write), then make their index entries
        (embedded where they must be, outside any transaction)."""
        changed: dict[str, bool] = {}
        mutations = {name: _spec_mutation(example, changed) for name, example in wanted}
        self._write_each(mutations, outcome)
        learning = []
        for name, example in wanted:
            if name not in changed or name in outcome.failed:
                continue
            try:
                learning.append(self._prepare(name, example, changed[name]))
            except Exception as err:
                self._failed(outcome, name, err, learnable=True)
        return learning

    def _write_each(self, mutations: dict[str, Mutator], outcome: Outcome) -> None:
        """The Examples' `mutations` in one bulk write (one statement per batch on SQLite);
        if it fails, each on its own, in one transaction, so only the failing ones fail."""
        try:
            read_modify_write_many(self.store, KIND, mutations)
            return
        except Exception:
            log.debug("learner: a bulk write of %d Examples failed; one by one", len(mutations))
        with self._transaction():
            for name, mutate in mutations.items():
                try:
                    read_modify_write(self.store, KIND, name, mutate)
                except Exception as err:
                    self._failed(outcome, name, err, learnable=True)

    def _prepare(self, name: str, example: Resource, changed: bool) -> _Learning:
        """The Example's index entry to write, its vector made when it must be."""
        try:
            write = self.index.prepared(
                name,
                blocks_to_markdown(example["spec"]["query"]["blocks"]),
                orjson.dumps(example, option=orjson.OPT_SORT_KEYS).decode(),
            )
        except EmbeddingUnavailable:
            return _Learning(name, example, changed, None, waiting=True)
        return _Learning(name, example, changed, write, waiting=False)

    def _index(self, learning: list[_Learning], outcome: Outcome) -> None:
        """The batch's index entries in one transaction; if it fails, each of them fails."""
        writes = [item.write for item in learning if item.write is not None]
        try:
            self.index.apply(writes)
        except Exception as err:
            for write in writes:
                self._failed(outcome, write.name, err, learnable=True)

    def _write_files(self, item: _Learning) -> None:
        """The training files of an indexed Example; none for one waiting for the embedding
        service (Foyle would skip a file without a vector), and no index entry either."""
        if item.waiting:
            self.index.delete(item.name)
            self.training.delete(item.name)
            return
        item.embedding = self.index.embedding(item.name)
        item.files = self.training.write(item.example, item.embedding)

    def _finish(self, learning: list[_Learning], outcome: Outcome) -> None:
        """The statuses that say what `_write_files` did (one bulk write), then the
        learned counts."""
        now = rfc3339(self.clock())
        reasons = {  # why Foyle would skip the training files ("": it would not)
            item.name: EMBEDDING_UNAVAILABLE if item.waiting else foyle_skip_reason(item.embedding)
            for item in learning
        }
        moved: dict[str, bool] = {}
        mutations = {
            item.name: _status_mutation(
                item.name, [] if item.waiting else item.files, reasons[item.name], now, moved
            )
            for item in learning
        }
        self._write_each(mutations, outcome)
        for item in learning:
            if item.name in outcome.failed:
                continue
            if reasons[item.name]:
                self._unloadable.labels(reasons[item.name]).inc()
            if item.waiting:
                self._learned.labels("failed").inc()
                continue
            # A retry that finishes what a failed attempt began counts as written.
            written = item.changed or moved.get(item.name, False)
            self._learned.labels("written" if written else "skipped").inc()

    def _failed(self, outcome: Outcome, name: str, err: Exception, *, learnable: bool) -> None:
        if learnable:
            self._learned.labels("failed").inc()
        self._errors.inc()
        outcome.failed[name] = err

    def _forget(self, name: str) -> None:
        self.index.delete(name)
        self.training.delete(name)
        with contextlib.suppress(NotFound):
            self.store.delete(KIND, name)


def _spec_mutation(example: Resource, changed: dict[str, bool]) -> Mutator:
    """Create or update the Example's spec, labels and owner; `changed` says whether they
    changed (once True, a conflict's retry finding its own write keeps it True)."""
    name = example["metadata"]["name"]

    def mutate(current: Resource | None) -> Resource | None:
        if current is None:
            changed[name] = True
            return example
        desired = dict(current, spec=example["spec"])
        desired["metadata"] = dict(current["metadata"])
        for key in ("labels", "ownerReferences"):
            if key in example["metadata"]:
                desired["metadata"][key] = example["metadata"][key]
            else:
                desired["metadata"].pop(key, None)
        differs = desired != current
        changed[name] = changed.get(name, False) or differs
        return desired if differs else None

    return mutate


def _status_mutation(
    name: str, files: list[str], reason: str, now: str, moved: dict[str, bool]
) -> Mutator:
    """The Example's status for the training files written (`reason`: why Foyle would
    skip them, "" if it would not); `moved` says whether it changed."""

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
            indexedTime=now,
            trainingFiles=files,
            observedGeneration=generation,
            foyleLoadable=not reason,
        )
        current["status"].pop("reason", None)
        if reason:
            current["status"]["reason"] = reason
        moved[name] = True
        return current

    return mutate


def learn_all(store: Store, reconciler: LearnerReconciler) -> dict[str, int]:
    """One pass over every source object, plus its Examples and index entries left without one.

    Examples of the other source are left alone. A failing source object is
    logged and counted, and the pass goes on. Last, the training files this
    state dir wrote for Examples that no longer exist (of either source) are
    removed (`prunedFiles`; see TrainingWriter.prune).
    """
    source = reconciler.source
    plural = source.kind.lower() + "s"
    counts = {plural: 0, "learnable": 0, "notLearnable": 0, "orphans": 0, "errors": 0}
    counts["waitingForEmbedding"] = counts["prunedFiles"] = 0
    objects = store.list(source.kind)
    live = {b["metadata"]["name"] for b in objects}
    examples = store.list(KIND)
    ours = {e["metadata"]["name"] for e in examples if source.label in _labels(e)}
    others = {e["metadata"]["name"] for e in examples} - ours
    orphans = (ours | (reconciler.index.names() - others)) - live
    work = [(b["metadata"]["name"], source.learnability(b)[0]) for b in objects]
    for name in sorted(orphans):
        work.append((name, False))
    for start in range(0, len(work), LEARN_ALL_BATCH):
        batch = work[start : start + LEARN_ALL_BATCH]
        outcome = reconciler.reconcile([name for name, _ in batch])
        for name, learnable in batch:
            if name in outcome.failed:
                log.error("learner: reconcile of %s failed: %s", name, outcome.failed[name])
                counts["errors"] += 1
                continue
            if outcome.result(name).requeue_after is not None:
                counts["waitingForEmbedding"] += 1
            if name in orphans:
                counts["orphans"] += 1
            else:
                counts[plural] += 1
                counts["learnable" if learnable else "notLearnable"] += 1
    live = {e["metadata"]["name"] for e in store.list(KIND)}
    counts["prunedFiles"] = reconciler.training.prune(live)
    return counts


def _labels(resource: Resource) -> dict[str, str]:
    return resource["metadata"].get("labels") or {}
