"""Watch-fed caches of custom objects, one per kind: what client-go's informers do.

Why: a reconcile reads each object it writes (previous blocks, read-modify-write),
and over the API server each read is a request paced by the client's rate
limit, so reads dominated kube mode (23 requests per Trace). A kind's cache is
listed once and then kept current by one watch, so steady-state reads cost no
request.

Staleness is safe because nothing writes blind: a write carries the
resourceVersion of the cached object, the API server refuses a stale one
(409), and the store then refreshes that one object (`KubeStore._refresh`),
so the retry of `read_modify_write` reads the current version. The store's
own writes go into the cache at once (read-your-writes); an event older than
what the cache holds (resourceVersions compared as etcd revisions) is
ignored, so a watch lagging behind a write never takes the cache back.
A watch that gets 410 Gone lists again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from controller.api.kinds import Resource
from controller.store.base import Gone, StoreError, WatchEvent, json_copy

log = logging.getLogger(__name__)

RELIST_DELAY = (1.0, 60.0)  # back-off bounds (s) before listing again after a failure
SYNC_TIMEOUT = 60.0  # seconds a read waits for the first list before going to the server

Lister = Callable[[str], tuple[list[Resource], str]]
Watcher = Callable[[str, str, Callable[[], bool]], Iterator[WatchEvent]]


def _revision(obj: Resource) -> int:
    """The etcd revision in a resourceVersion (-1 when it is not one: always replaced)."""
    version = obj.get("metadata", {}).get("resourceVersion") or ""
    return int(version) if version.isdigit() else -1


class KindCache:
    """One kind's objects by name, from one list and then its watch (on a daemon thread)."""

    def __init__(self, kind: str, list_kind: Lister, watch_kind: Watcher) -> None:
        self.kind = kind
        self._list = list_kind
        self._watch = watch_kind
        self._objects: dict[str, Resource] = {}
        self._deleted: dict[str, int] = {}  # name -> revision it was deleted at or after
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._gave_up = False
        self._listeners: list[Callable[[Resource], None]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cache-{kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def ready(self) -> bool:
        """Whether reads may come from the cache. The first read waits for the first list
        (SYNC_TIMEOUT at most); a cache that cannot list (RBAC, an outage) leaves reads to
        the server meanwhile, without making each of them wait again."""
        if self._synced.is_set():
            return True
        if self._gave_up:
            return False
        self._gave_up = not self._synced.wait(SYNC_TIMEOUT)
        return not self._gave_up

    def lookup(self, name: str) -> Resource | None:
        """A copy of the cached object (the caller may change it), None when absent."""
        with self._lock:
            found = self._objects.get(name)
            return json_copy(found) if found is not None else None

    def on_change(self, listener: Callable[[Resource], None]) -> None:
        """Call `listener` with each object a watch event brings that the cache did not
        hold yet (another writer's change; this store's own writes are in it already)."""
        self._listeners.append(listener)

    def put(self, obj: Resource) -> bool:
        """Keep `obj` unless the cache holds it or a newer version (or saw it deleted
        later); whether it was new."""
        name, revision = obj["metadata"]["name"], _revision(obj)
        with self._lock:
            held = self._objects.get(name)
            if held is not None and 0 <= revision <= _revision(held):
                return False
            if held is None and revision >= 0 and revision <= self._deleted.get(name, -1):
                return False
            self._deleted.pop(name, None)
            self._objects[name] = obj
            return True

    def forget(self, name: str, revision: int = -1) -> None:
        """The object is gone (as of `revision` when known)."""
        with self._lock:
            held = self._objects.get(name)
            if held is not None and 0 <= revision < _revision(held):
                return  # deleted and created again since
            self._objects.pop(name, None)
            self._deleted[name] = max(revision, _revision(held) if held is not None else -1)

    def _replace(self, objects: list[Resource], revision: int) -> None:
        """A fresh list: objects absent from it and not newer than it are gone. A listed
        object this store deleted since the list was served stays deleted (the tombstones
        are dropped only after the listed objects went through them)."""
        listed = {o["metadata"]["name"]: o for o in objects}
        with self._lock:
            for name, held in list(self._objects.items()):
                if name not in listed and _revision(held) <= revision:
                    del self._objects[name]
        for obj in objects:
            self.put(obj)
        with self._lock:
            self._deleted = {n: r for n, r in self._deleted.items() if r > revision}

    def _apply(self, event: WatchEvent) -> None:
        if event.type == "DELETED":
            self.forget(event.object["metadata"]["name"], _revision(event.object))
        elif self.put(event.object):
            for listener in self._listeners:
                listener(event.object)

    def _run(self) -> None:
        """List, then watch from the list's version; list again after Gone or an error."""
        delay = RELIST_DELAY[0]
        while not self._stopped.is_set():
            try:
                objects, version = self._list(self.kind)
                self._replace(objects, int(version) if version.isdigit() else -1)
                self._synced.set()
                delay = RELIST_DELAY[0]
                for event in self._watch(self.kind, version, self._stopped.is_set):
                    self._apply(event)
            except Gone:
                log.info("cache %s: watch history gone; listing again", self.kind)
                continue
            except (StoreError, LookupError, TypeError, ValueError) as exc:
                # A server error, or an object or event of a shape no cache expects: the
                # thread must not die (reads would go stale for good), so list again.
                log.warning("cache %s: %s; listing again in %.0f s", self.kind, exc, delay)
                self._stopped.wait(delay)
                delay = min(2 * delay, RELIST_DELAY[1])
