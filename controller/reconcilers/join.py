"""Joined resources (BlockLog, Session): member Trace resources -> status, set-wise.

Membership (`spec`) is written by the Trace reconciler, which hands the
joined resources it touched on to this stage. `reconcile(names)` reads a batch
of joined resources in one query and every member Trace they list in one more
(recently read Traces come from a cache by resourceVersion), derives each
status with the kind's pure function (plus `observedGeneration`), writes the
changed ones in one bulk write, deletes one no trace names any more, and hands
what changed on to the kind's learner. A spec lists a bounded number of
members, so the work per resource does not grow with its history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.analyze.blocklogs import Generation
from controller.api.kinds import Resource
from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.api.result import Outcome
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import Mutator, NotFound, Store, get_many, read_modify_write_many

Spec = dict[str, Any]
Status = Callable[[Resource, dict[str, Spec], dict[str, Generation]], dict[str, Any]]


@dataclass(frozen=True)
class Join:
    """What differs between joined kinds: the kind, who its members are, the pure status of
    a resource from its members' Trace specs, and the learner stage told of changes."""

    kind: str
    members: Callable[[Spec], list[str]]
    status: Status
    learner_queue: str


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
        statuses: dict[str, dict[str, Any]] = {}
        for name, obj in live.items():
            status = self.join.status(obj, traces, generations)
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            if status != obj.get("status"):
                statuses[name] = status
        self._traces.keep_generations(generations, {t: n for n, t in wanted.items()})
        read_modify_write_many(
            self.store, kind, {n: _status_mutation(s) for n, s in statuses.items()}
        )
        outcome = Outcome()
        # statuses changed or resources went: the learner looks again
        outcome.hand_on(self.join.learner_queue, [*statuses, *empty])
        return outcome


SpecChange = Callable[[Spec | None], Spec | None]


def membership_mutation(kind: str, raw_id: str, changes: list[SpecChange]) -> Mutator:
    """Apply a batch's membership changes to one joined resource's spec, in order.

    Creates the resource when it is absent and a change makes a spec; writes
    nothing when the spec ends as it was (or as None: nothing to join).
    """

    def mutate(current: Resource | None) -> Resource | None:
        spec = current["spec"] if current is not None else None
        for change in changes:
            spec = change(spec)
        if spec is None or (current is not None and spec == current["spec"]):
            return None
        if current is None:
            return new_resource(kind, raw_id, spec)
        current["spec"] = spec
        return current

    return mutate


def _status_mutation(status: dict[str, Any]) -> Mutator:
    """Write the derived status; a spec changed meanwhile leaves it to the next reconcile."""

    def mutate(current: Resource | None) -> Resource | None:
        if (
            current is None
            or current["metadata"].get("generation", 1) != status["observedGeneration"]
        ):
            return None
        current["status"] = status
        return current

    return mutate
