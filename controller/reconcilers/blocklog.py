"""BlockLog reconciler: member Trace resources -> BlockLog status (pure join).

Membership (`spec`) is written by the Trace reconciler, which also leaves a
durable dirty mark in the journal; this reconciler clears it once it has
derived `status` from the Traces the spec names, with `observedGeneration`,
and deletes a BlockLog no trace names any more. A Conflict (someone wrote the
BlockLog meanwhile) is raised to the worker loop, which retries with back-off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from controller.analyze.blocklogs import blocklog_status
from controller.api.names import name_for_id
from controller.reconcilers.result import DONE, Result
from controller.store.base import NotFound, Store
from controller.store.journal import BLOCKLOGS, Journal


def member_ids(spec: dict[str, Any]) -> list[str]:
    ids = [spec["genTraceId"]] if spec.get("genTraceId") else []
    return ids + list(spec.get("execTraceIds", [])) + list(spec.get("eventIds", []))


class BlockLogReconciler:
    def __init__(
        self, store: Store, journal: Journal, on_change: Callable[[str], None] | None = None
    ) -> None:
        self.store = store
        self.journal = journal
        self.on_change = on_change  # the status changed or the BlockLog went: tell the learner

    def reconcile(self, name: str) -> Result:
        seq = self.journal.dirty_seq(BLOCKLOGS, name)
        self._converge(name)
        self.journal.clear_dirty(BLOCKLOGS, name, seq)
        return DONE

    def _converge(self, name: str) -> None:
        try:
            blocklog = self.store.get("BlockLog", name)
        except NotFound:
            return
        spec = blocklog["spec"]
        members = member_ids(spec)
        if not members:
            with contextlib.suppress(NotFound):
                self.store.delete("BlockLog", name, blocklog["metadata"]["resourceVersion"])
            self._changed(name)
            return
        traces: dict[str, dict[str, Any]] = {}
        for trace_id in members:
            try:
                traces[trace_id] = self.store.get("Trace", name_for_id(trace_id))["spec"]
            except NotFound:
                continue
        status = blocklog_status(spec, traces)
        status["observedGeneration"] = blocklog["metadata"].get("generation", 1)
        if status != blocklog.get("status"):
            blocklog["status"] = status
            self.store.update_status(blocklog)
            self._changed(name)

    def _changed(self, name: str) -> None:
        if self.on_change is not None:
            self.on_change(name)
