"""Trace retention for the kube store: a finished Trace is settled, then deleted.

Every Trace is a custom resource in etcd, whose quota (2 GiB by default) the
whole cluster shares, while users look at BlockLogs, Sessions and Examples.
So, as Kubernetes does with Events, a Trace finished (Complete or Abandoned)
`--trace-retention` seconds ago leaves the cluster: the trace reconciler
settles it (its BlockLogs and Session keep its contribution in their specs,
analyze.blocklogs/sessions) and deletes its Trace. A trace already due when
it is first reduced (a catch-up on old logs) is never written at all. The
ingester's journal keeps every trace for `describe`, and a late line brings
its Trace back until it is due again.

What is due is decided here (`due`); `TraceRetention` is the periodic job of
the manager (`sweep_logged`, added by `foylectl run --store kube` only) that
finds the Traces that became due since they were written and queues them for
the trace reconciler, the one place that settles. The SQLite store lives on
the node's disk and keeps every Trace.

`join_view` (what the joins read of a Trace's bodies) is what the trace
reconciler falls back to for a Trace too large for etcd; `write_joined` writes
a batch's BlockLogs or Sessions, and one too large with what it keeps of its
settled members smaller (`smaller_specs`, `write_each_smaller`) instead of
retrying it forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller.analyze.traces import CONTEXT, EXECUTE, GENERATE, LOG_EVENT, RUNME
from controller.api.kinds import Resource
from controller.api.names import name_for_id
from controller.api.resource import parse_rfc3339
from controller.api.result import Outcome
from controller.reconcilers.join import Join, SpecChange, membership_mutations
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import (
    Mutator,
    ObjectTooLarge,
    Store,
    StoreError,
    read_modify_write,
    read_modify_write_many,
)

log = logging.getLogger(__name__)

FINISHED = ("Complete", "Abandoned")
# What the joins read from each kind's request and response (a Trace too large for etcd
# is written with these only).
JOIN_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    GENERATE: {"request": ("doc",), "response": ("blocks",)},
    EXECUTE: {"request": ("block",)},
    RUNME: {"request": ("commands", "languageId")},
    LOG_EVENT: {
        "request": (
            "eventType",
            "block",
            # the Session join (analyze/sessions.py) reads these too
            "selectedCellId",
            "eventId",
            "executeStatus",
            "selectedIndex",
            "cells",
        )
    },
    CONTEXT: {"request": ("context",)},  # a Session's full notebook context
}


def join_view(spec: dict[str, Any]) -> dict[str, Any]:
    """The Trace spec with request/response reduced to what the joins read."""
    keep = JOIN_FIELDS.get(spec.get("kind", ""), {})
    out = {k: v for k, v in spec.items() if k not in ("request", "response")}
    for body in ("request", "response"):
        value = spec.get(body)
        if isinstance(value, dict) and body in keep:
            out[body] = {k: value[k] for k in keep[body] if k in value}
    return out


def smaller_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec, then with bodies elided to the joins' fields, then without them."""
    elided = join_view(spec)
    no_request = {k: v for k, v in elided.items() if k != "request"}
    bare = {k: v for k, v in no_request.items() if k != "response"}
    return [spec, elided, no_request, bare]


def write_joined(
    store: Store,
    join: Join,
    traces: TraceSpecs,
    batch: dict[str, dict[str, Any]],
    changes_at: Callable[[int], dict[str, list[SpecChange]]],
) -> Joined:
    """Write a batch's membership changes of one joined kind (`changes_at(n)`: raw id ->
    changes, settled members from their n-th `smaller_specs`), each status derived in
    the same write; the names touched, by what is left to do for them (`Joined`).

    All at once; when one is too large for etcd, each alone at the first level that
    fits: with its status derived, then (a notebook too large for etcd, as a Trace's
    may be) the membership alone, as the stage would find it.
    """
    changes = changes_at(0)
    derived: dict[str, bool] = {}
    mutations = partial(membership_mutations, store, join, traces, batch=batch, derived=derived)
    try:
        read_modify_write_many(store, join.kind, mutations(changes))
    except ObjectTooLarge:
        levels = [changes, *(changes_at(n) for n in (1, 2, 3))]
        write_each_smaller(
            store,
            join.kind,
            [
                *(mutations(level) for level in levels),
                *(mutations(level, with_status=False) for level in levels),
            ],
        )
    touched = {name_for_id(raw) for raw in changes}
    return Joined(
        derived={n for n in touched if derived.get(n)},
        untaught={n for n in touched if derived.get(n) is False},
        rest=touched - derived.keys(),
    )


@dataclass(frozen=True)
class Joined:
    """The joined resources a batch wrote: `derived`, those written with their derived
    status that the learner must look at, `untaught`, those written with their derived
    status where neither it nor the one before teaches (`Join.teaches`), and the `rest`
    (a status left stale or not derived again, or no members left), which the kind's
    stage must see."""

    derived: set[str]
    untaught: set[str]
    rest: set[str]

    def hand_on(self, outcome: Outcome, stage: str, learner: str, *, atomic: bool) -> None:
        """The derived ones straight to the learner when the batch is `atomic` (one
        transaction, the local store): their stage would find nothing to write, and
        the untaught ones to no one: the learner would find nothing either. Not with
        the API server, where another batch may write a member's Trace between this
        derivation and this batch's own Traces: the stage derives them all again."""
        if atomic:
            outcome.hand_on(stage, self.rest)
            outcome.hand_on(learner, self.derived)
        else:
            outcome.hand_on(stage, self.rest | self.derived | self.untaught)


def write_each_smaller(store: Store, kind: str, levels: list[dict[str, Mutator]]) -> None:
    """Each object (by name) alone, at the first level that fits etcd: level n keeps
    its settled members from their n-th `smaller_specs` (the objects that fit at once
    were written already, or are written again to no change)."""
    for name in levels[0]:
        for level, mutations in enumerate(levels):
            try:
                read_modify_write(store, kind, name, mutations[name])
                break
            except ObjectTooLarge as err:
                if level == len(levels) - 1:
                    raise
                log.warning("%s %s: %s; its settled members smaller", kind, name, err)


def _finished_at(trace: Resource) -> float | None:
    spec = trace.get("spec", {})
    when = spec.get("endTime") or spec.get("startTime")
    if trace.get("status", {}).get("phase") not in FINISHED or not isinstance(when, str):
        return None
    try:
        return parse_rfc3339(when)
    except ValueError:
        return None


def due(trace: Resource, now: float, retention: float) -> bool:
    """Finished for at least `retention` seconds (by the time of its last line)."""
    finished = _finished_at(trace)
    return finished is not None and now - finished >= retention


class TraceRetention:
    """Periodically queues the Traces that became due for the trace reconciler to settle."""

    def __init__(
        self,
        store: Store,
        retention: float,
        settle: Callable[[list[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention = retention
        self.settle = settle
        self.clock = clock

    def sweep(self) -> int:
        """One pass over the Traces; returns how many were due (and queued)."""
        now = self.clock()
        keys = [t["spec"]["id"] for t in self.store.list("Trace") if due(t, now, self.retention)]
        self.settle(keys)
        return len(keys)

    def sweep_logged(self) -> None:
        """One sweep as a periodic job runs it: a store error waits for the next (one line)."""
        try:
            count = self.sweep()
        except StoreError as exc:
            log.warning("trace retention: %s; retrying at the next sweep", exc)
            return
        if count:
            log.info("trace retention: %d finished traces to settle and delete", count)
