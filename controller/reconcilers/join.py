"""Joined resources (BlockLog, Session): member Trace resources -> status, set-wise.

Membership (`spec`) is written by the Trace reconciler, which hands the
joined resources it touched on to this stage. `reconcile(names)` reads a batch
of joined resources in one query and every member Trace they list in one more
(recently read Traces come from a cache by resourceVersion), derives each
status with the kind's pure function (plus `observedGeneration`), writes the
changed ones in one bulk write, deletes one no trace names any more, and hands
what changed on to the kind's learner. A spec lists a bounded number of
members, so the work per resource does not grow with its history.

The Trace reconciler derives the status in the same write as the membership
(`membership_mutations`): a catch-up writes each joined resource once, one
request where the API server holds it (issue 19), and this stage finds nothing
left to write unless a member's Trace was not known then (another ingester's).
`status.observedGeneration` is the generation of the spec the status was
derived from: the generation the write itself makes, since a change of either
makes one for these kinds (store.base.generation_bumped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.analyze.blocklogs import Generation
from controller.api.kinds import Resource
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.api.result import Outcome
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import (
    Mutator,
    NotFound,
    Store,
    get_many,
    read_modify_write_many,
)

OBSERVED = "observedGeneration"

Spec = dict[str, Any]
Status = Callable[[Resource, dict[str, Spec], dict[str, Generation]], dict[str, Any]]
Compact = Callable[[Spec, Mapping[str, Any] | None], Spec]


@dataclass(frozen=True)
class Join:
    """What differs between joined kinds: the kind, who its members are, the pure status of
    a resource from its members' Trace specs, the learner stage told of changes, how
    a spec drops what its status already shows of its settled members (`compact`: the
    spec and that status -> the spec storing it once), and whether the learner would
    make an Example of a resource as stored (`teaches`: its learnability rule)."""

    kind: str
    members: Callable[[Spec], list[str]]
    status: Status
    learner_queue: str
    compact: Compact
    teaches: Callable[[Resource], bool]


class JoinReconciler:
    def __init__(self, join: Join, store: Store) -> None:
        self.join = join
        self.store = store
        self._traces = TraceSpecs(store)

    def reconcile(self, names: list[str]) -> Outcome:
        kind = self.join.kind
        found = get_many(self.store, kind, names)
        empty = [n for n, obj in found.items() if not self.join.members(obj["spec"])]
        for name in empty:
            with contextlib.suppress(NotFound):
                self.store.delete(kind, name, found[name]["metadata"]["resourceVersion"])
        live = {n: obj for n, obj in found.items() if n not in empty}
        wanted = {name_for_id(t): t for o in live.values() for t in self.join.members(o["spec"])}
        traces, generations = self._traces.read(wanted)
        statuses: dict[str, Mutator] = {}
        for name, obj in live.items():
            status = self.join.status(obj, traces, generations)
            generation = obj["metadata"].get("generation", 1)
            if obj.get("status") != {**status, OBSERVED: generation}:
                statuses[name] = _status_mutation(self.join, generation, status)
        self._traces.keep_generations(generations, {t: n for n, t in wanted.items()})
        read_modify_write_many(self.store, kind, statuses)
        outcome = Outcome()
        # The Trace stage derives most statuses in its membership write and hands the
        # names on here: each may have changed (or gone), so the learner looks again.
        outcome.hand_on(self.join.learner_queue, [*live, *empty])
        return outcome


SpecChange = Callable[[Spec | None], Spec | None]
Derive = Callable[[Resource], dict[str, Any] | None]


def membership_mutations(
    store: Store,
    join: Join,
    traces: TraceSpecs,
    changes: dict[str, list[SpecChange]],
    batch: dict[str, Spec],
    *,
    with_status: bool = True,
    derived: dict[str, bool],
) -> dict[str, Mutator]:
    """The mutation of each joined resource (by name) that `changes` (raw id -> its
    changes) touch: its membership and the status derived from it, in one write
    (`with_status` False: the membership alone, the status left to the stage).
    `derived` gets the names whose last write carried the status derived from it
    (see `membership_mutation`).

    The members' Trace specs: the batch's own (`batch`, by trace id, newer than any
    stored) and the others' read once for the batch (`traces`, a cache).
    """
    names = {name_for_id(raw): raw for raw in changes}
    if not with_status:
        return {
            name: membership_mutation(join, raw, changes[raw], _stale, derived)
            for name, raw in names.items()
        }
    current = get_many(store, join.kind, names)
    wanted = {
        name_for_id(t): t
        for obj in current.values()
        for t in join.members(obj["spec"])
        if t not in batch
    }
    stored, generations = traces.read(wanted)
    traces.keep_generations(generations, {t: n for n, t in wanted.items()})
    known = {**stored, **batch}

    def derive(resource: Resource) -> dict[str, Any] | None:
        spec = resource["spec"]
        settled = spec.get("settled") or {}
        if any(t not in known and t not in settled for t in join.members(spec)):
            return None  # a member this batch does not know: the stage derives it
        return join.status(resource, known, generations)

    return {
        name: membership_mutation(join, raw, changes[raw], derive, derived)
        for name, raw in names.items()
    }


def _stale(_resource: Resource) -> None:
    """No status derived: the stored one stays, stale (the stage derives it)."""


def membership_mutation(
    join: Join,
    raw_id: str,
    changes: list[SpecChange],
    derive: Derive,
    derived: dict[str, bool] | None = None,
) -> Mutator:
    """Apply a batch's membership changes to one joined resource's spec, in order, with
    the status `derive` makes of the result (None: the stored one, left stale), and
    what that status shows of the settled members dropped from the spec (`compact`).

    Creates the resource when it is absent and a change makes a spec; writes
    nothing when the spec ends as it was (or as None: nothing to join). `derived`
    holds its name after a write that carried its derived status and had members: its
    stage would find nothing to do for it. Its value says whether the learner must look:
    False when neither the stored status nor the new one teaches (`Join.teaches`), as
    in most of a catch-up: no Example can exist (the learner has seen, or has marked
    to see, every version before) and none is to be made. A conflict's retry notes again.
    """
    name = name_for_id(raw_id)

    def mutate(current: Resource | None) -> Resource | None:
        if derived is not None:
            derived.pop(name, None)
        spec = current["spec"] if current is not None else None
        for change in changes:
            spec = change(spec)
        if spec is None or (current is not None and spec == current["spec"]):
            return None
        # The spec changes: the write makes the next generation (1 for a create).
        generation = 0 if current is None else current["metadata"].get("generation", 1)
        taught = current is not None and join.teaches(current)
        resource = new_resource(join.kind, raw_id, spec) if current is None else current
        resource["spec"] = spec
        status = derive(resource)
        if status is not None:
            resource["status"] = {**status, OBSERVED: generation + 1}
            if derived is not None and join.members(spec):
                derived[name] = taught or join.teaches(resource)
        resource["spec"] = join.compact(spec, resource.get("status"))
        return resource

    return mutate


def _status_mutation(join: Join, generation: int, status: dict[str, Any]) -> Mutator:
    """Write the status derived from the spec of `generation` (a status change makes the
    next generation, which it names), the spec compacted against it in the same write; a
    spec changed meanwhile leaves it to the next reconcile."""

    def mutate(current: Resource | None) -> Resource | None:
        if current is None or current["metadata"].get("generation", 1) != generation:
            return None
        if current.get("status") == {**status, OBSERVED: generation}:
            return None
        current["status"] = {**status, OBSERVED: generation + 1}
        current["spec"] = join.compact(current["spec"], current["status"])
        return current

    return mutate
