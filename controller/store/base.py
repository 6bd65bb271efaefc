"""The Store contract: what every backend (SQLite, Kubernetes) must provide.

Objects are Kubernetes-shaped dicts (see controller.api.kinds). The contract
mirrors the API server's:

* `resourceVersion` is an opaque string set by the store on every write and
  monotonic across the whole store (SQLite) or per the API server's rules;
* `update` and `update_status` require the resourceVersion the caller read and
  raise `Conflict` when the stored one differs; nothing writes blind;
* `update` writes spec/metadata (labels) only and bumps `metadata.generation`
  when the spec changed; `update_status` writes status only;
* except for a kind without the status subresource (`status_with_spec`: BlockLog,
  Session), as the API server has it: `create` keeps its status, `update` (and
  `update_status`, the same request) writes spec and status together, and a
  change of either bumps `metadata.generation`;
* `watch(kind, since)` yields every change after resourceVersion `since`, and
  raises `Gone` when the store no longer remembers that far back (re-list).

`read_modify_write` is the one safe way to change an object concurrently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import orjson

from controller.api.kinds import BY_KIND, Resource
from controller.api.resource import get_path
from controller.api.selectors import parse_selector


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object changed since the caller read it (stale resourceVersion)."""


class Gone(StoreError):
    """A watch asked for history the store no longer keeps: re-list and watch again."""


class ObjectTooLarge(StoreError):
    """An object bigger than the backend stores (etcd's request limit): sending it would
    only fail later, less clearly."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened; the message says how to recover."""


EventType = Literal["ADDED", "MODIFIED", "DELETED"]
T = TypeVar("T")


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Resource

    @property
    def resource_version(self) -> str:
        return self.object["metadata"]["resourceVersion"]


class Store(Protocol):
    def get(self, kind: str, name: str) -> Resource: ...

    def list(self, kind: str, label_selector: str | None = None) -> list[Resource]: ...

    def count(self, kind: str) -> int:
        """How many objects of `kind` there are (without loading them where possible)."""
        ...

    def list_with_version(
        self, kind: str, label_selector: str | None = None
    ) -> tuple[list[Resource], str]:
        """The objects and the store's resourceVersion to start a watch from."""
        ...

    def create(self, obj: Resource) -> Resource: ...

    def update(self, obj: Resource) -> Resource: ...

    def update_status(self, obj: Resource) -> Resource: ...

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None: ...

    def watch(
        self,
        kind: str,
        since: str,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes after `since`, in order; ends after `timeout` s or when `stop()` is true."""
        ...

    def close(self) -> None: ...


Mutator = Callable[[Resource | None], Resource | None]


def read_modify_write(
    store: Store,
    kind: str,
    name: str,
    mutate: Mutator,
    *,
    attempts: int = 100,
) -> Resource | None:
    """Apply `mutate` to the current object and write it back, retrying on Conflict.

    `mutate` receives a deep copy of the stored object (None when absent), which
    it may change in place, and returns the desired object (None: leave it as
    it is). Spec and metadata go through `update` (or `create`), status through `update_status`, each with
    the resourceVersion just read, so concurrent writers never lose an update.
    Returns the stored result, or the unchanged current object.
    """
    for _ in range(attempts):
        try:
            current: Resource | None = store.get(kind, name)
        except NotFound:
            current = None
        desired = mutate(json_copy(current) if current is not None else None)
        if desired is None:
            return current
        try:
            return write_changes(store, current, desired)
        except (Conflict, AlreadyExists, NotFound):
            continue
    raise Conflict(f"{kind}/{name}: gave up after {attempts} conflicting attempts")


@runtime_checkable
class BulkStore(Protocol):
    """A backend that reads and writes whole batches at once (SQLite)."""

    def get_many(self, kind: str, names: Iterable[str]) -> dict[str, Resource]: ...

    def versions_many(self, kind: str, names: Iterable[str]) -> dict[str, tuple[str, int]]: ...

    def get_fields_many(
        self, kind: str, names: Iterable[str], paths: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]: ...

    def read_modify_write_many(
        self, kind: str, mutations: Mapping[str, Mutator]
    ) -> dict[str, Resource | None]: ...


def get_many(store: Store, kind: str, names: Iterable[str]) -> dict[str, Resource]:
    """The objects of `kind` among `names` that exist, by name: one query where possible."""
    if isinstance(store, BulkStore):
        return store.get_many(kind, names)
    found: dict[str, Resource] = {}
    for name in dict.fromkeys(names):
        try:
            found[name] = store.get(kind, name)
        except NotFound:
            continue
    return found


def get_fields_many(
    store: Store, kind: str, names: Iterable[str], paths: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """Some fields (`.a.b` paths) of each existing object among `names`, by name."""
    if isinstance(store, BulkStore):
        return store.get_fields_many(kind, names, paths)
    return {
        name: tuple(get_path(obj, path) for path in paths)
        for name, obj in get_many(store, kind, names).items()
    }


@runtime_checkable
class ChangeFeed(Protocol):
    """A backend shared with other writers (several ingesters) whose changes it learns
    from watches: a status derived from what this process saw must be derived again
    when another writer's change arrives."""

    def on_change(self, kind: str, listener: Callable[[Resource], None]) -> None: ...


@runtime_checkable
class ConcurrentStore(Protocol):
    """A backend where each write is a round trip, several of which can be in flight at
    once (the API server): a batch's independent writes are sent together."""

    def run_concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The results of `calls`, in order; the first exception once all have ended."""
        ...


def read_modify_write_many(
    store: Store, kind: str, mutations: Mapping[str, Mutator]
) -> dict[str, Resource | None]:
    """`read_modify_write` of each name; in one transaction where the backend can, or
    several at a time where each is a round trip.

    The mutator rule is the same on every backend: `mutate` gets a deep copy of
    its own and may change it in place.
    """
    if isinstance(store, BulkStore):
        return store.read_modify_write_many(kind, mutations)
    if isinstance(store, ConcurrentStore):
        names = list(mutations)
        results = store.run_concurrently(
            [partial(read_modify_write, store, kind, n, mutations[n]) for n in names]
        )
        return dict(zip(names, results, strict=True))
    return {name: read_modify_write(store, kind, name, fn) for name, fn in mutations.items()}


def delete_many(store: Store, kind: str, names: Sequence[str]) -> None:
    """Delete each object among `names` (one gone already is fine); several at a time
    where each is a round trip."""

    def delete(name: str) -> None:
        with contextlib.suppress(NotFound):
            store.delete(kind, name)

    calls = [partial(delete, n) for n in names]
    if isinstance(store, ConcurrentStore):
        store.run_concurrently(calls)
    else:
        for call in calls:
            call()


def status_with_spec(kind: str) -> bool:
    """Whether `kind` has no status subresource: one request writes its spec and status."""
    return not BY_KIND[kind].status_subresource


def generation_bumped(kind: str, current: Resource, new: Resource) -> bool:
    """Whether writing `new` over `current` makes a new generation, as the API server
    decides: a change of spec, or of status where it is written with the spec."""
    if (new.get("spec") or {}) != (current.get("spec") or {}):
        return True
    return status_with_spec(kind) and (new.get("status") or {}) != (current.get("status") or {})


def write_changes(store: Store, current: Resource | None, desired: Resource) -> Resource:
    """Write only what differs between `current` and `desired` (no write when equal): one
    request for a kind whose status goes with its spec, else spec and status apart."""
    if status_with_spec(desired["kind"]):
        if current is None:
            return store.create(desired)
        if (desired.get("status") or {}) == (current.get("status") or {}) and not _owned_differs(
            current, desired
        ):
            return current
        body = json_copy(desired)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return store.update(body)
    if current is None:
        created = store.create(desired)
        if desired.get("status") and created.get("status") != desired["status"]:
            created["status"] = desired["status"]
            created = store.update_status(created)
        return created
    result = current
    if _owned_differs(current, desired):
        body = json_copy(desired)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        result = store.update(body)
    if desired.get("status") != current.get("status"):
        body = json_copy(result)
        body["status"] = desired.get("status") or {}
        result = store.update_status(body)
    return result


def json_copy(obj: Resource) -> Resource:
    """A deep copy of a JSON document, several times faster than copy.deepcopy."""
    return orjson.loads(orjson.dumps(obj))


def _labels(obj: Resource) -> dict[str, Any]:
    return obj.get("metadata", {}).get("labels") or {}


def _owned_differs(current: Resource, desired: Resource) -> bool:
    """Whether `update` has anything to write: spec or the client's metadata."""
    return desired.get("spec") != current.get("spec") or _owned_metadata(
        desired
    ) != _owned_metadata(current)


def _owned_metadata(obj: Resource) -> tuple[Any, ...]:
    """The metadata a client writes with `update` (the rest is the server's)."""
    meta = obj.get("metadata", {})
    return tuple(meta.get(k) or {} for k in ("labels", "annotations", "ownerReferences"))


def matches_labels(obj: Resource, selector: str | None) -> bool:
    """Whether the object's labels satisfy `selector` (InvalidSelector when malformed)."""
    return parse_selector(selector).matches(_labels(obj))


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without what the store itself sets (for comparing two stores' contents)."""
    out = json_copy(obj)
    meta = out.get("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    return out
