"""A settled Trace for `describe`: gone from the cluster, still in its ingester's journal.

In kube mode a Trace finished `--trace-retention` ago is settled into its
BlockLogs and Session and deleted from etcd (issue 19), while the journal of
the ingester that read it keeps everything read of it. Run on that ingester's
state dir, `describe` reduces the trace from the journal, as the trace
reconciler would; anywhere else the NotFound line says where it went.
"""

from __future__ import annotations

from pathlib import Path

from controller.analyze.traces import reduce_trace
from controller.api.kinds import Resource
from controller.api.resource import new_resource

SETTLED_NOTE = "Settled:      deleted from the cluster (--trace-retention); read from {path}"
NOT_HERE = (
    " (a Trace finished --trace-retention ago is settled into its BlockLogs and Session"
    " and deleted from the cluster; describe it on the ingester that read it, by its"
    " trace id, with that ingester's --state-dir)"
)


def settled_trace(journal_path: Path, trace_id: str) -> Resource | None:
    """The Trace the journal at `journal_path` derives for `trace_id`; None when there is
    no journal there (none is created) or it never read the trace."""
    if not journal_path.is_file():
        return None
    from controller.store.journal import Journal

    journal = Journal(journal_path)
    try:
        state = journal.trace_states([trace_id]).get(trace_id)
    finally:
        journal.close()
    reduced = reduce_trace(trace_id, state.acc) if state is not None else None
    return None if reduced is None else new_resource("Trace", trace_id, *reduced)
