"""The whole analysis in one pass: the definition of a correct result, for tests.

No command calls it. Tests check that `foylectl analyze` and `foylectl run`,
which reach their result incrementally through the pipeline (per-trace journal
accumulators, set-wise membership writes, late lines), end up with exactly
these Trace and BlockLog resources.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from controller.analyze.blocklogs import Generation, blocklog_status, membership_add
from controller.analyze.traces import TraceAccumulator, reduce_trace, trace_key
from controller.api.entry import Entry
from controller.api.kinds import BLOCKLOG, TRACE, Resource
from controller.api.resource import name_of, new_resource


def analyze(entries: Iterable[Entry]) -> tuple[list[Resource], list[Resource]]:
    """Trace and BlockLog resources (no server fields) derived from `entries`, sorted by name."""
    accumulators: defaultdict[str, TraceAccumulator] = defaultdict(TraceAccumulator)
    for entry in entries:
        key = trace_key(entry)
        if key is not None:
            accumulators[key].add(entry)

    specs: dict[str, dict[str, Any]] = {}
    traces: list[Resource] = []
    for trace_id, acc in accumulators.items():
        reduced = reduce_trace(trace_id, acc)
        if reduced is not None:
            specs[trace_id] = reduced[0]
            traces.append(new_resource(TRACE.kind, trace_id, *reduced))

    membership: dict[str, dict[str, Any]] = {}
    for trace_id in sorted(specs):
        for block_id in specs[trace_id]["blockIds"]:
            membership[block_id] = membership_add(
                membership.get(block_id), block_id, specs[trace_id]
            )

    generations: dict[str, Generation] = {}
    blocklogs = [
        new_resource(BLOCKLOG.kind, block_id, spec, blocklog_status(spec, specs, generations))
        for block_id, spec in membership.items()
    ]
    return sorted(traces, key=name_of), sorted(blocklogs, key=name_of)
