"""Recently read Trace specs, by resourceVersion, for the BlockLog reconciler.

Why: the BlockLogs of one suggestion share its Generate Trace. A 10,000-block
suggestion's BlockLogs are reconciled in ~40 batches, and each batch would load
and parse the same large Trace and index its response again, so the cost
per block would grow with the size of the suggestion. Versions are read
without bodies (one query); only Traces whose current version is not cached
are loaded. A cached spec is immutable (a new write is a new version), and
the cache is bounded by the bytes of the bodies it keeps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from controller.analyze.blocklogs import Generation
from controller.store.base import BulkStore, Store, get_many

DEFAULT_MAX_BYTES = 4 << 20  # of JSON text; parsed, it takes ~3.6x that (measured)


@dataclass
class _Cached:
    version: str
    size: int
    spec: dict[str, Any]
    generation: Generation | None = None


class TraceSpecs:
    def __init__(self, store: Store, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def read(self, names: Iterable[str]) -> tuple[dict[str, Any], dict[str, Generation]]:
        """The specs of the existing Traces among `names` by trace id, and known generations."""
        if not isinstance(self._store, BulkStore):  # no cheap versions: read them all
            found = get_many(self._store, "Trace", names)
            return {o["spec"]["id"]: o["spec"] for o in found.values()}, {}
        versions = self._store.versions_many("Trace", names)
        with self._lock:
            # By the batch's names, not over the whole cache: a batch's cost is its own size.
            cached = ((n, self._entries.get(n)) for n in versions)
            hits = {n: e for n, e in cached if e is not None and e.version == versions[n][0]}
        loaded = get_many(self._store, "Trace", [n for n in versions if n not in hits])
        with self._lock:
            for name, obj in loaded.items():
                version, spec = obj["metadata"]["resourceVersion"], obj["spec"]
                # The JSON text's length, not the stored (deflated) one: the budget is memory.
                self._remember(name, _Cached(version, len(orjson.dumps(spec)), spec))
            for name in hits:
                if name in self._entries:
                    self._entries.move_to_end(name)
        entries = [*hits.values(), *(_Cached("", 0, o["spec"]) for o in loaded.values())]
        specs = {e.spec["id"]: e.spec for e in entries}
        generations = {e.spec["id"]: e.generation for e in hits.values() if e.generation}
        return specs, generations

    def keep_generations(self, generations: dict[str, Generation], names: dict[str, str]) -> None:
        """Remember the generations worked out in a batch (`names`: trace id -> name)."""
        with self._lock:
            for trace_id, generation in generations.items():
                entry = self._entries.get(names.get(trace_id, ""))
                if entry is not None and entry.spec.get("id") == trace_id:
                    entry.generation = generation

    def _remember(self, name: str, entry: _Cached) -> None:
        old = self._entries.pop(name, None)
        if old is not None:
            self._bytes -= old.size
        if entry.size > self._max_bytes:
            return
        self._entries[name] = entry
        self._bytes += entry.size
        while self._bytes > self._max_bytes:
            _, victim = self._entries.popitem(last=False)
            self._bytes -= victim.size
