"""The BlockLog reconciler's cache of Trace specs: never stale, bounded in bytes."""

from __future__ import annotations

from pathlib import Path

from controller.api.resource import new_resource
from controller.reconcilers.tracecache import TraceSpecs
from controller.store.base import read_modify_write
from controller.store.sqlite import SQLiteStore


def _trace(store: SQLiteStore, trace_id: str, payload: str) -> None:
    spec = {"id": trace_id, "kind": "Generate", "request": {"text": payload}}
    read_modify_write(
        store,
        "Trace",
        trace_id,
        lambda cur: new_resource("Trace", trace_id, spec) if cur is None else {**cur, "spec": spec},
    )


def test_a_new_version_of_a_trace_is_read_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    _trace(store, "t1", "first")
    cache = TraceSpecs(store)
    specs, _ = cache.read(["t1", "absent"])
    assert set(specs) == {"t1"} and specs["t1"]["request"]["text"] == "first"
    _trace(store, "t1", "second")
    specs, _ = cache.read(["t1"])
    assert specs["t1"]["request"]["text"] == "second"


def test_generations_are_kept_only_for_the_version_they_came_from(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    _trace(store, "t1", "first")
    cache = TraceSpecs(store)
    cache.read(["t1"])
    cache.keep_generations({"t1": (None, {"b": {}})}, {"t1": "t1"})
    assert cache.read(["t1"])[1] == {"t1": (None, {"b": {}})}
    _trace(store, "t1", "second")
    assert cache.read(["t1"])[1] == {}, "a new version starts without the old generation"


def test_the_cache_keeps_at_most_its_byte_budget(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    for i in range(10):
        _trace(store, f"t{i}", "x" * 1000)
    cache = TraceSpecs(store, max_bytes=3000)
    specs, _ = cache.read([f"t{i}" for i in range(10)])
    assert len(specs) == 10
    assert cache._bytes <= 3000 and len(cache._entries) <= 2
