"""Python's cyclic garbage collector, set for a process that parses JSON in batches.

A batch holds thousands of parsed documents (lines, Trace specs, BlockLogs) alive
for a moment. With CPython's default threshold (a young collection every 700 net
allocations) they outlive young collections, are promoted, and set off a full
collection over everything alive (start-up's ~80,000 objects, the caches) every
few batches: 14 to 21 % of `foylectl analyze`'s CPU on a 50 MB corpus (issue 23),
for documents that hold no reference cycles and are freed by reference counting.
Cycles are still collected, after YOUNG_THRESHOLD net allocations instead of 700,
so the garbage they hold stays bounded. (Freezing start-up's objects as well saved
nothing more measurable, and kept the interpreter's exit from finalising the SQLite
connections made before it, which checkpoint and remove their WAL files.)
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # net allocations of tracked objects between young collections
OLDER_THRESHOLD = 20  # young collections per middle one, and middle ones per full one


def collect_rarely() -> None:
    """Call once at start-up, in a process that runs the pipeline."""
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
