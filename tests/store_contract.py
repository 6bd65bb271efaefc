"""The Store contract, as tests every backend must pass.

A backend's test module provides two fixtures and star-imports this module:

* `store`: a fresh, empty Store;
* `new_store`: a factory giving another Store on the SAME data (another
  connection, as a second process would have).

Only the Store protocol (controller.store.base) is used here, so the SQLite
backend and the Kubernetes backend run the very same claims.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from controller.api.kinds import Resource
from controller.api.resource import new_resource
from controller.store.base import (
    AlreadyExists,
    Conflict,
    NotFound,
    Store,
    WatchEvent,
    read_modify_write,
    read_modify_write_many,
)

NewStore = Callable[[], Store]


def _trace(name: str, labels: dict[str, str] | None = None, **spec: object) -> Resource:
    return new_resource("Trace", name, {"id": name, "kind": "Generate", **spec}, labels=labels)


def _trace_with(obj: Resource, **spec: object) -> Resource:
    """A copy of `obj` with `spec` fields changed (keeps its resourceVersion)."""
    return {**obj, "spec": {**obj["spec"], **spec}, "metadata": dict(obj["metadata"])}


def _rv(obj: Resource) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.005)


# ---- create / get / list / delete ----


def test_create_sets_server_fields_and_get_returns_the_object(store: Store) -> None:
    created = store.create(_trace("a", {"team": "x"}))
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    got = store.get("Trace", "a")
    assert got == created
    assert got["spec"]["id"] == "a" and got["metadata"]["labels"] == {"team": "x"}


@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_each_object_created_gets_a_uid_of_its_own(store: Store, many: bool) -> None:
    """A random UUID, as the API server gives; a create through read_modify_write_many
    leaves the object its mutator made as it was (the store fills in its own copy)."""
    made = [_trace(name, {"team": "x"}) for name in ("a", "b", "c")]
    if many:
        mutations = {o["metadata"]["name"]: (lambda _c, o=o: o) for o in made}
        read_modify_write_many(store, "Trace", mutations)
        assert made == [_trace(name, {"team": "x"}) for name in ("a", "b", "c")]
    else:
        for obj in made:
            store.create(obj)
    uids = [uuid.UUID(store.get("Trace", name)["metadata"]["uid"]) for name in "abc"]
    assert len(set(uids)) == 3 and {u.version for u in uids} == {4}


def test_create_ignores_status_as_the_api_server_does(store: Store) -> None:
    obj = _trace("a")
    obj["status"] = {"phase": "Complete"}
    store.create(obj)
    assert not store.get("Trace", "a").get("status")


def test_create_existing_raises_already_exists(store: Store) -> None:
    store.create(_trace("a"))
    with pytest.raises(AlreadyExists):
        store.create(_trace("a"))


def test_get_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get("Trace", "missing")


def test_list_returns_only_that_kind_sorted_by_name(store: Store) -> None:
    for name in ("c", "a", "b"):
        store.create(_trace(name))
    store.create(new_resource("BlockLog", "a", {"id": "a"}))
    assert [o["metadata"]["name"] for o in store.list("Trace")] == ["a", "b", "c"]
    assert [o["kind"] for o in store.list("BlockLog")] == ["BlockLog"]


def test_count_counts_one_kind(store: Store) -> None:
    assert store.count("Trace") == 0
    for name in ("c", "a", "b"):
        store.create(_trace(name))
    store.create(new_resource("BlockLog", "a", {"id": "a"}))
    assert (store.count("Trace"), store.count("BlockLog"), store.count("Example")) == (3, 1, 0)


def test_returned_objects_are_fresh_copies(store: Store) -> None:
    created = store.create(_trace("a"))
    created["spec"]["kind"] = "Execute"
    store.get("Trace", "a")["spec"]["kind"] = "RunMe"
    store.list("Trace")[0]["spec"]["kind"] = "RunMe"
    assert store.get("Trace", "a")["spec"]["kind"] == "Generate"


def test_delete_removes_the_object(store: Store) -> None:
    store.create(_trace("a"))
    store.delete("Trace", "a")
    with pytest.raises(NotFound):
        store.get("Trace", "a")
    assert store.list("Trace") == []


def test_delete_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.delete("Trace", "missing")


def test_delete_with_stale_version_raises_conflict(store: Store) -> None:
    old = store.create(_trace("a"))
    current = store.update(_trace_with(old, exitCode=1))
    with pytest.raises(Conflict):
        store.delete("Trace", "a", old["metadata"]["resourceVersion"])
    store.delete("Trace", "a", current["metadata"]["resourceVersion"])
    with pytest.raises(NotFound):
        store.get("Trace", "a")


# ---- update / update_status ----


def test_stale_update_raises_conflict(store: Store) -> None:
    old = store.create(_trace("a"))
    store.update(_trace_with(old, exitCode=1))
    with pytest.raises(Conflict):
        store.update(_trace_with(old, exitCode=2))
    assert store.get("Trace", "a")["spec"]["exitCode"] == 1


def test_update_without_resource_version_raises_conflict(store: Store) -> None:
    created = store.create(_trace("a"))
    blind = _trace_with(created, exitCode=1)
    del blind["metadata"]["resourceVersion"]
    with pytest.raises(Conflict):
        store.update(blind)


def test_stale_update_status_raises_conflict(store: Store) -> None:
    old = store.create(_trace("a"))
    store.update_status({**old, "status": {"phase": "InProgress"}})
    with pytest.raises(Conflict):
        store.update_status({**old, "status": {"phase": "Complete"}})
    assert store.get("Trace", "a")["status"] == {"phase": "InProgress"}


def test_update_of_missing_object_raises_not_found(store: Store) -> None:
    created = store.create(_trace("a"))
    store.delete("Trace", "a")
    with pytest.raises(NotFound):
        store.update(created)


def test_generation_bumps_on_spec_change_only(store: Store) -> None:
    obj = store.create(_trace("a"))
    obj = store.update_status({**obj, "status": {"phase": "Complete"}})
    assert obj["metadata"]["generation"] == 1
    relabelled = _trace_with(obj)
    relabelled["metadata"]["labels"] = {"team": "x"}
    obj = store.update(relabelled)
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["labels"] == {"team": "x"}
    obj = store.update(_trace_with(obj, exitCode=3))
    assert obj["metadata"]["generation"] == 2
    assert store.get("Trace", "a")["metadata"]["generation"] == 2


def test_update_keeps_the_stored_status(store: Store) -> None:
    obj = store.create(_trace("a"))
    obj = store.update_status({**obj, "status": {"phase": "Complete", "entries": 2}})
    changed = _trace_with(obj, exitCode=1)
    changed["status"] = {"phase": "Abandoned"}
    result = store.update(changed)
    assert result["status"] == {"phase": "Complete", "entries": 2}
    assert store.get("Trace", "a")["status"] == {"phase": "Complete", "entries": 2}


def test_update_status_keeps_spec_and_labels(store: Store) -> None:
    obj = store.create(_trace("a", {"team": "x"}))
    changed = _trace_with(obj, exitCode=9)
    changed["metadata"]["labels"] = {"team": "y"}
    changed["status"] = {"phase": "Complete"}
    store.update_status(changed)
    got = store.get("Trace", "a")
    assert got["status"] == {"phase": "Complete"}
    assert "exitCode" not in got["spec"]
    assert got["metadata"]["labels"] == {"team": "x"}


# ---- a kind without the status subresource (BlockLog, Session: issue 19) ----


def _blocklog(status: dict[str, object] | None = None) -> Resource:
    return new_resource("BlockLog", "b", {"id": "b", "genTraceId": "g"}, status)


def test_a_kind_without_status_subresource_is_created_with_its_status(store: Store) -> None:
    created = store.create(_blocklog({"executions": 2}))
    assert created["status"] == {"executions": 2}
    assert store.get("BlockLog", "b")["status"] == {"executions": 2}
    assert created["metadata"]["generation"] == 1


def test_one_update_writes_spec_and_status_of_such_a_kind(store: Store) -> None:
    created = store.create(_blocklog({"executions": 2}))
    both = {**created, "spec": {"id": "b", "genTraceId": "h"}, "status": {"executions": 3}}
    updated = store.update(both)
    assert (updated["spec"]["genTraceId"], updated["status"]) == ("h", {"executions": 3})
    assert _rv(updated) > _rv(created)
    got = store.get("BlockLog", "b")
    assert (got["spec"], got["status"]) == (both["spec"], both["status"])
    assert got["metadata"]["generation"] == 2


def test_a_status_change_of_such_a_kind_bumps_its_generation(store: Store) -> None:
    obj = store.create(_blocklog({"executions": 1}))
    obj = store.update({**obj, "status": {"executions": 2}})
    assert obj["metadata"]["generation"] == 2
    obj = store.update_status({**obj, "status": {"executions": 3}})
    assert (obj["metadata"]["generation"], obj["status"]) == (3, {"executions": 3})
    relabelled = {**obj, "metadata": {**obj["metadata"], "labels": {"team": "x"}}}
    assert store.update(relabelled)["metadata"]["generation"] == 3
    assert store.get("BlockLog", "b")["metadata"]["generation"] == 3


@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_read_modify_write_of_such_a_kind_makes_one_version(store: Store, many: bool) -> None:
    """Spec and status in one write: one new resourceVersion, not two."""
    created = store.create(_blocklog())

    def mutate(obj: Resource | None) -> Resource | None:
        assert obj is not None
        obj["spec"]["genTraceId"], obj["status"] = "h", {"executions": 1}
        return obj

    if many:
        result = read_modify_write_many(store, "BlockLog", {"b": mutate})["b"]
    else:
        result = read_modify_write(store, "BlockLog", "b", mutate)
    assert result is not None
    got = store.get("BlockLog", "b")
    assert (got["spec"]["genTraceId"], got["status"], got["metadata"]["generation"]) == (
        "h",
        {"executions": 1},
        2,
    )
    watched = list(store.watch("BlockLog", created["metadata"]["resourceVersion"], timeout=1))
    assert [e.type for e in watched] == ["MODIFIED"]


# ---- labels and versions ----


def test_label_selectors_filter_list(store: Store) -> None:
    store.create(_trace("a", {"team": "x", "tier": "1"}))
    store.create(_trace("b", {"team": "y"}))
    store.create(_trace("c"))

    def names(selector: str) -> list[str]:
        return [o["metadata"]["name"] for o in store.list("Trace", selector)]

    assert names("team=x") == ["a"]
    assert names("team==y") == ["b"]
    assert names("team!=x") == ["b", "c"]
    assert names("team") == ["a", "b"]
    assert names("!team") == ["c"]
    assert names("team,tier=1") == ["a"]
    assert names("team=z") == []


def test_resource_version_increases_with_every_write(store: Store) -> None:
    versions = []
    a = store.create(_trace("a"))
    versions.append(_rv(a))
    versions.append(_rv(store.create(new_resource("BlockLog", "b", {"id": "b"}))))
    a = store.update(_trace_with(a, exitCode=1))
    versions.append(_rv(a))
    a = store.update_status({**a, "status": {"phase": "Complete"}})
    versions.append(_rv(a))
    store.delete("Trace", "a")
    _, after_delete = store.list_with_version("Trace")
    versions.append(int(after_delete))
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


# ---- watch ----


def _summary(events: list[WatchEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"]["name"]) for e in events]


def test_watch_from_old_version_replays_later_changes_in_order(store: Store) -> None:
    store.create(_trace("before"))
    _, since = store.list_with_version("Trace")
    a = store.create(_trace("a"))
    store.create(new_resource("BlockLog", "other-kind", {"id": "x"}))
    a = store.update(_trace_with(a, exitCode=1))
    a = store.update_status({**a, "status": {"phase": "Complete"}})
    store.delete("Trace", "a")

    events = list(itertools.islice(store.watch("Trace", since, timeout=10), 4))

    assert _summary(events) == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [int(e.resource_version) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert events[2].object["status"] == {"phase": "Complete"}
    assert events[3].object["spec"]["exitCode"] == 1  # the last state, with the delete's version


def test_watch_ends_after_timeout_when_nothing_changes(store: Store) -> None:
    _, since = store.list_with_version("Trace")
    started = time.monotonic()
    assert list(store.watch("Trace", since, timeout=0.2)) == []
    assert time.monotonic() - started < 5


def test_watch_sees_writes_made_through_another_instance(store: Store, new_store: NewStore) -> None:
    _, since = store.list_with_version("Trace")
    seen: list[WatchEvent] = []
    done = threading.Event()

    def follow() -> None:
        for event in store.watch("Trace", since, timeout=20, stop=done.is_set):
            seen.append(event)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        other = new_store()
        obj = other.create(_trace("a"))
        other.update(_trace_with(obj, exitCode=1))
        other.delete("Trace", "a")
        _wait_until(lambda: len(seen) >= 3)
    finally:
        done.set()
        follower.join(timeout=10)
    assert not follower.is_alive()
    assert _summary(seen) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


# ---- the mutator rule (one for every backend) ----


def _edit_in_place(obj: Resource | None) -> Resource | None:
    """A mutator that changes the spec and status it was given rather than replacing them."""
    if obj is None:
        return None
    obj["spec"]["exitCode"] = 7
    obj["status"]["phase"] = "Complete"
    return obj


@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_a_mutator_may_change_its_object_in_place(store: Store, many: bool) -> None:
    created = store.create(_trace("a", exitCode=1))
    store.update_status({**created, "status": {"phase": "InProgress"}})
    if many:
        read_modify_write_many(store, "Trace", {"a": _edit_in_place})
    else:
        read_modify_write(store, "Trace", "a", _edit_in_place)
    stored = store.get("Trace", "a")
    assert (stored["spec"]["exitCode"], stored["status"]["phase"]) == (7, "Complete")


# ---- concurrency ----


def _increment(obj: Resource | None) -> Resource:
    """A counter in a field the CRD schema declares (an API server prunes undeclared ones)."""
    if obj is None:
        return _trace("counter", exitCode=1)
    obj["spec"]["exitCode"] += 1
    return obj


def test_read_modify_write_from_8_threads_loses_no_increment(
    store: Store, new_store: NewStore
) -> None:
    threads_n, per_thread = 8, 200
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(target: Store) -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                # The claim is "no lost update", not "no starvation": allow many retries.
                read_modify_write(target, "Trace", "counter", _increment, attempts=10_000)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    # Half the threads share `store`, half use other instances on the same data.
    targets = [store if i % 2 == 0 else new_store() for i in range(threads_n)]
    threads = [threading.Thread(target=work, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    # A store reading from a watch-fed cache sees other instances' writes once its watch
    # delivers them: poll (a lost increment never arrives, and fails here).
    _wait_until(lambda: store.get("Trace", "counter")["spec"]["exitCode"] == threads_n * per_thread)
