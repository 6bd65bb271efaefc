"""BlockLog reconciler: member Trace resources -> BlockLog status (pure join).

Membership (`spec`) is written by the Trace reconciler, which also leaves a
durable dirty mark in the journal. Set-wise: `reconcile_many(names)` reads the
batch's BlockLogs in one query and every member Trace they list in one more,
derives each status with the pure `blocklog_status` (with
`observedGeneration`), writes the changed ones in one bulk write, deletes a
BlockLog no trace names any more, and clears the marks. The spec lists a
bounded number of members, so the work per BlockLog does not grow with how
often its cell was run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from controller.analyze.blocklogs import blocklog_status, member_ids
from controller.api.names import name_for_id
from controller.api.result import DONE, Result
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import Mutator, NotFound, Store, get_many, read_modify_write_many
from controller.store.journal import BLOCKLOGS, Journal


class BlockLogReconciler:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        on_change: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.on_change = on_change  # statuses changed or BlockLogs went: tell the learner
        self._traces = TraceSpecs(store)

    def reconcile(self, name: str) -> Result:
        self.reconcile_many([name])
        return DONE

    def reconcile_many(self, names: list[str]) -> None:
        seqs = self.journal.dirty_seqs(BLOCKLOGS, names)
        blocklogs = get_many(self.store, "BlockLog", names)
        empty = [n for n, b in blocklogs.items() if not member_ids(b["spec"])]
        for name in empty:
            with contextlib.suppress(NotFound):
                self.store.delete("BlockLog", name, blocklogs[name]["metadata"]["resourceVersion"])
        live = {n: b for n, b in blocklogs.items() if n not in empty}
        wanted = {name_for_id(t): t for b in live.values() for t in member_ids(b["spec"])}
        traces, generations = self._traces.read(wanted)
        statuses: dict[str, dict[str, Any]] = {}
        for name, blocklog in live.items():
            status = blocklog_status(blocklog["spec"], traces, generations)
            status["observedGeneration"] = blocklog["metadata"].get("generation", 1)
            if status != blocklog.get("status"):
                statuses[name] = status
        self._traces.keep_generations(generations, {t: n for n, t in wanted.items()})
        read_modify_write_many(
            self.store, "BlockLog", {n: _status_mutation(s) for n, s in statuses.items()}
        )
        changed = [*statuses, *empty]
        if changed and self.on_change is not None:
            self.on_change(changed)
        self.journal.clear_dirty(BLOCKLOGS, seqs)


def _status_mutation(status: dict[str, Any]) -> Mutator:
    """Write the derived status; a spec changed meanwhile leaves it to the next reconcile."""

    def mutate(current: dict | None) -> dict | None:
        if current is None or current["metadata"].get("generation", 1) != status.get(
            "observedGeneration"
        ):
            return None
        current["status"] = status
        return current

    return mutate
