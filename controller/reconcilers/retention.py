"""Trace retention for the kube store: finished Traces shed the bodies no BlockLog reads.

Every Trace is a custom resource in etcd, and etcd's quota (2 GiB by default)
is shared by the whole cluster, so request and response bodies must not stay
forever. After `--trace-retention` seconds a finished Trace (Complete or
Abandoned) keeps only its `join_view`: the fields the BlockLog join
(controller.analyze.blocklogs.blocklog_status) reads, the only reader of
Trace bodies (a Generate trace's doc and suggested blocks, an execution's
block, commands and language, an event's type and block; exit code, times and
ids are outside the bodies and stay), and it is annotated
`foyle.io/bodies-elided`. Command outputs, environment variables, working
directories and the like go. A new reader of Trace bodies must add what it
reads to JOIN_FIELDS.

Because the join reads nothing that is elided, a BlockLog rejoined from
elided Traces is identical to one joined from the originals (a test checks it
on the samples and a generated corpus), so eliding never has to wait for, or
coordinate with, the BlockLog reconciler. A Trace the trace reconciler writes
again (new lines, or a rewrite racing a sweep) gets its full bodies back until
the next sweep; the annotation says when bodies were last elided.

The sweep is a periodic job of the manager (`sweep_logged`), added by
`foylectl run --store kube` only; the SQLite store lives on the node's disk
and has no such quota.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from controller.analyze.traces import CONTEXT, EXECUTE, GENERATE, LOG_EVENT, RUNME
from controller.api.kinds import Resource
from controller.api.resource import parse_rfc3339, rfc3339_seconds
from controller.reconcilers.metrics import Metrics
from controller.store.base import Store, StoreError, json_copy, read_modify_write

log = logging.getLogger(__name__)

ELIDED = "foyle.io/bodies-elided"  # annotation: when the bodies were elided
FINISHED = ("Complete", "Abandoned")
# What the BlockLog join reads from each kind's request and response; the rest is elided.
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
        )
    },
    CONTEXT: {"request": ("context",)},  # a Session's full notebook context
}


def join_view(spec: dict[str, Any]) -> dict[str, Any]:
    """The Trace spec with request/response reduced to what the BlockLog join reads."""
    keep = JOIN_FIELDS.get(spec.get("kind", ""), {})
    out = {k: v for k, v in spec.items() if k not in ("request", "response")}
    for body in ("request", "response"):
        value = spec.get(body)
        if isinstance(value, dict) and body in keep:
            out[body] = {k: value[k] for k in keep[body] if k in value}
    return out


def _size(spec: dict[str, Any]) -> int:
    return len(orjson.dumps(spec))


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
    """Finished for longer than `retention` and holding something to elide.

    Not "not annotated yet": the trace reconciler may write full bodies back
    while keeping the annotation it read, and those must go again.
    """
    finished = _finished_at(trace)
    return (
        finished is not None
        and now - finished >= retention
        and join_view(trace["spec"]) != trace["spec"]
    )


class TraceRetention:
    """Periodically elides the bodies of Traces finished for longer than `retention` seconds."""

    def __init__(
        self,
        store: Store,
        retention: float,
        registry: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self._wrote = False  # whether the last mutation elided (rather than found nothing to do)
        self._elided = registry.counter(
            "foyle_trace_bodies_elided_total", "Traces whose bodies retention elided."
        )
        self._saved = registry.counter(
            "foyle_trace_bytes_elided_total", "JSON bytes of Trace bodies retention elided."
        )

    def sweep(self) -> int:
        """One pass over the Traces; returns how many were elided."""
        now = self.clock()
        elided = 0
        for trace in self.store.list("Trace"):
            if not due(trace, now, self.retention):
                continue
            result = read_modify_write(self.store, "Trace", trace["metadata"]["name"], self._elide)
            if result is not None and self._wrote:
                elided += 1
                self._elided.inc()
                self._saved.inc(max(0, _size(trace["spec"]) - _size(result["spec"])))
        return elided

    def _elide(self, current: Resource | None) -> Resource | None:
        """The mutation: re-checked on the version read, so a concurrent rewrite wins."""
        self._wrote = current is not None and due(current, self.clock(), self.retention)
        if not self._wrote:
            return None
        out = json_copy(current)
        out["spec"] = join_view(current["spec"])
        out["metadata"].setdefault("annotations", {})[ELIDED] = rfc3339_seconds(self.clock())
        return out

    def sweep_logged(self) -> None:
        """One sweep as a periodic job runs it: a store error waits for the next (one line)."""
        try:
            count = self.sweep()
        except StoreError as exc:
            log.warning("trace retention: %s; retrying at the next sweep", exc)
            return
        if count:
            log.info("trace retention: elided the bodies of %d traces", count)
