"""The Kubernetes Store backend: resources as namespaced custom objects (foyle.io/v1alpha1).

Data flow: every write is one API request through the `kubernetes` client's
CustomObjectsApi, paced by a client-side token bucket (qps, burst) so a
backlog of reconciles never floods the API server; a 429 from the server's
Priority and Fairness is sent again after its Retry-After. Reads are
requests too, except for `cached_kinds`, read from watch-fed caches
(controller.store.kubecache) as client-go's informers do. The API server is the
source of truth and does the concurrency control: `update` and
`update_status` send the resourceVersion the caller read, and its 409 becomes
the same `Conflict` the SQLite store raises; status goes through the status
subresource, so spec writers and status writers never overwrite each other,
except for the kinds whose status is derived in the same write as their spec
(BlockLog, Session: `status_with_spec`), one request for both.

`watch` streams `?watch=true` from a resourceVersion. A stream that ends
(server timeout, dropped connection) is reopened from the last version seen,
so callers see one unbroken sequence. When the API server answers 410 Gone,
the history the caller needs is lost and no re-list inside the watch could
reconstruct the deletions it missed, so `Gone` goes to the caller, whose
contract is to re-list (`list_with_version`) and watch again.

etcd refuses a request over 1.5 MiB (its default --max-request-bytes), and
one object is one request: `create` and the updates measure the body first and
raise `ObjectTooLarge` (counted in `foyle_kube_objects_too_large_total` once
`attach_metrics` is called) instead of sending it, so the error names the
object and its size rather than surfacing as etcd's "request is too large".

The `kubernetes` package takes about a second to import; it is imported here
only, so `foylectl` commands that do not talk to a cluster stay fast.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from controller.api.kinds import BY_KIND, GROUP, VERSION, KindInfo, Resource
from controller.store.base import (
    AlreadyExists,
    Conflict,
    Gone,
    NotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnavailable,
    WatchEvent,
    status_with_spec,
)
from controller.store.kubecache import KindCache
from controller.store.tokenbucket import TokenBucket

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)
T = TypeVar("T")

# Like client-go's reflector: long watches with jitter, so many watchers do not reconnect together.
WATCH_SECONDS = (300, 600)
POLL = 0.05  # seconds between checks of `stop` and the deadline while a watch is idle
RECONNECT_DELAY = (0.1, 5.0)  # back-off bounds after a failed watch connection
CONNECT_TIMEOUT = 10.0
# etcd's default --max-request-bytes; a write carries the object plus a little framing.
ETCD_MAX_REQUEST_BYTES = 1_572_864
MAX_OBJECT_BYTES = ETCD_MAX_REQUEST_BYTES - 8_192
# A request the server throttles (429) is sent again after its Retry-After, this many times
# in all (client-go's default), the wait bounded so a bad header cannot stall a worker.
THROTTLED_ATTEMPTS = 10
MAX_RETRY_AFTER = 30.0
# Writes in flight at once (all stages together): each is a round trip the server handles
# in parallel (about 90 ms each on a loaded 2-core machine, so 8 held the catch-up to
# ~90 requests/s), and the token bucket (qps, burst) still paces them all.
WRITES_IN_FLIGHT = 32


class _Metrics(Protocol):
    """What the store needs from a metrics registry (runtime.metrics.MetricsRegistry fits)."""

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Any: ...


def load_api_client(kubeconfig: str | None = None) -> ApiClient:
    """An ApiClient from `kubeconfig`, else in-cluster config, else the default kubeconfig.

    The order is controller-runtime's: an explicit file wins; inside a pod the
    service account is used; elsewhere $KUBECONFIG or ~/.kube/config.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                # Read $KUBECONFIG now: the client reads it once, when first imported.
                default = os.environ.get("KUBECONFIG") or None
                config.load_kube_config(config_file=default, client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise StoreUnavailable(
            f"no Kubernetes configuration ({exc}); pass --kubeconfig, set KUBECONFIG, "
            "or run inside a cluster"
        ) from exc
    # Room for a watch per kind (the caches) beside the writes in flight, so no request
    # waits for a connection and none is opened only to be discarded.
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize, WRITES_IN_FLIGHT + len(BY_KIND) + 2
    )
    return client.ApiClient(configuration)


class KubeStore:
    """The Store contract (controller.store.base.Store) on custom objects in one namespace."""

    def __init__(
        self,
        namespace: str = "foyle",
        *,
        api_client: ApiClient | None = None,
        qps: float = 50.0,
        burst: int = 100,
        kubeconfig: str | None = None,
        cached_kinds: Sequence[str] = (),
    ) -> None:
        """`cached_kinds`: kinds whose reads come from a watch-fed cache (kubecache)."""
        from kubernetes import client

        self.namespace = namespace
        self._api_client = api_client if api_client is not None else load_api_client(kubeconfig)
        self._owns_client = api_client is None
        self._api = client.CustomObjectsApi(self._api_client)
        self._limiter = TokenBucket(qps, burst)
        self._closed = False
        self._too_large: Any = None
        self._throttles: Any = None
        self._writers = ThreadPoolExecutor(WRITES_IN_FLIGHT, thread_name_prefix="kube-write")
        self._caches = {
            kind: KindCache(kind, self.list_with_version, self._follow) for kind in cached_kinds
        }
        for cache in self._caches.values():
            cache.start()

    def attach_metrics(self, registry: _Metrics) -> None:
        """Count refused oversized objects (by kind) and throttled requests in `registry`."""
        self._too_large = registry.counter(
            "foyle_kube_objects_too_large_total",
            "Writes refused before sending: the object is over what etcd accepts in one request.",
            ("kind",),
        )
        self._throttles = registry.counter(
            "foyle_kube_throttled_requests_total",
            "Requests the API server answered 429 (Priority and Fairness), sent again later.",
        )

    def _fits(self, obj: Resource) -> None:
        size = len(json.dumps(obj, separators=(",", ":")))
        if size <= MAX_OBJECT_BYTES:
            return
        if self._too_large is not None:
            self._too_large.labels(obj["kind"]).inc()
        raise ObjectTooLarge(
            f"{obj['kind']}/{obj['metadata']['name']}: {size / 2**20:.2f} MiB is over the "
            f"{MAX_OBJECT_BYTES / 2**20:.2f} MiB etcd accepts in one object; not written"
        )

    # ---- plumbing ----

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One rate-limited API request, its failures translated into the Store's errors."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(1, THROTTLED_ATTEMPTS + 1):
            if self._closed:
                raise StoreUnavailable("the store is closed")
            self._limiter.acquire()
            try:
                return fn(GROUP, VERSION, self.namespace, *args, **kwargs)
            except ApiException as exc:
                if exc.status != 429 or attempt == THROTTLED_ATTEMPTS:
                    raise _translate(what, exc) from exc
                self._throttled(what, exc)
            except HTTPError as exc:
                raise StoreUnavailable(f"{what}: the API server cannot be reached: {exc}") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _throttled(self, what: str, exc: Any) -> None:
        """A 429: the server's Priority and Fairness rejected the request before doing
        anything, so repeating it is safe; wait what its Retry-After says (as client-go)."""
        seconds = _retry_after(exc)
        if self._throttles is not None:
            self._throttles.inc()
        log.info("%s: throttled by the API server (429); retrying in %.0f s", what, seconds)
        _wait(seconds, lambda: self._closed)

    @staticmethod
    def _info(kind: str) -> KindInfo:
        try:
            return BY_KIND[kind]
        except KeyError:
            raise ValueError(f"unknown kind {kind!r}") from None

    # ---- reads ----

    def get(self, kind: str, name: str) -> Resource:
        cache = self._caches.get(kind)
        if cache is not None and cache.ready():
            found = cache.lookup(name)
            if found is None:
                raise NotFound(f"{kind}/{name}: not found")
            return found
        return self._get(kind, name)

    def _get(self, kind: str, name: str) -> Resource:
        """One object from the API server."""
        info = self._info(kind)
        return self._call(
            f"{kind}/{name}", self._api.get_namespaced_custom_object, info.plural, name
        )

    def on_change(self, kind: str, listener: Callable[[Resource], None]) -> None:
        """Call `listener` with each change of a cached `kind` another writer made, as its
        watch brings it (an informer's event handler); nothing for kinds not cached."""
        cache = self._caches.get(kind)
        if cache is not None:
            cache.on_change(listener)

    def _refresh(self, kind: str, name: str) -> None:
        """After a conflict: the cached copy of this one object is stale, read it again."""
        cache = self._caches.get(kind)
        if cache is None:
            return
        try:
            cache.put(self._get(kind, name))
        except NotFound:
            cache.forget(name)

    def _written(
        self, kind: str, name: str, write: Callable[[], Any], *, deleted: bool = False
    ) -> Any:
        """Run one write; its result goes into the cache, a conflict refreshes the object."""
        cache = self._caches.get(kind)
        try:
            result = write()
        except (Conflict, AlreadyExists):
            self._refresh(kind, name)
            raise
        except NotFound:
            if cache is not None:
                cache.forget(name)
            raise
        if cache is not None:
            if deleted:
                cache.forget(name)
            else:
                cache.put(copy.deepcopy(result))
        return result

    def run_concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Each call on a writer thread (WRITES_IN_FLIGHT at once); the results in order,
        the first exception once every call has ended (none is left running)."""
        if len(calls) <= 1:
            return [call() for call in calls]
        try:
            futures = [self._writers.submit(call) for call in calls]
        except RuntimeError:  # the pool is shut down: closed
            raise StoreUnavailable("the store is closed") from None
        wait(futures)
        return [future.result() for future in futures]

    def _follow(self, kind: str, since: str, stop: Callable[[], bool]) -> Iterator[WatchEvent]:
        """The caches' watch: until the store closes or the cache stops."""
        return self.watch(kind, since, stop=stop)

    def list(self, kind: str, label_selector: str | None = None) -> list[Resource]:
        return self.list_with_version(kind, label_selector)[0]

    def count(self, kind: str) -> int:
        return len(self.list(kind))

    def list_with_version(
        self, kind: str, label_selector: str | None = None
    ) -> tuple[list[Resource], str]:
        info = self._info(kind)
        kwargs = {"label_selector": label_selector} if label_selector else {}
        result = self._call(kind, self._api.list_namespaced_custom_object, info.plural, **kwargs)
        items = sorted(result.get("items") or [], key=lambda o: o["metadata"]["name"])
        return items, result["metadata"]["resourceVersion"]

    # ---- writes ----

    def create(self, obj: Resource) -> Resource:
        """Create; the API server ignores status (subresource), so does this, but for a
        kind without the subresource: one request with its status."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        body = copy.deepcopy(obj)
        body["metadata"].pop("resourceVersion", None)
        if not status_with_spec(kind):
            body.pop("status", None)
        info = self._info(kind)
        self._fits(body)
        return self._written(
            kind,
            name,
            lambda: self._call(
                f"{kind}/{name}", self._api.create_namespaced_custom_object, info.plural, body
            ),
        )

    def update(self, obj: Resource) -> Resource:
        """Replace spec and metadata (the server keeps status, or writes it too for a kind
        without the subresource); Conflict when the version is stale.

        `managedFields: [{}]` clears the server's field-ownership record, as Kubernetes
        documents for an update: every write here is a whole-object PUT, so the record
        says nothing, yet it took about 360 bytes of each BlockLog and Session in etcd.
        The server adds none again to an object that has none (a create records its
        writer; the status subresource keeps what the object has)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        body = _versioned(obj)
        body["metadata"]["managedFields"] = [{}]
        self._fits(body)
        return self._written(
            kind,
            name,
            lambda: self._call(
                f"{kind}/{name}",
                self._api.replace_namespaced_custom_object,
                self._info(kind).plural,
                name,
                body,
            ),
        )

    def update_status(self, obj: Resource) -> Resource:
        """Replace status through the status subresource (a kind without it: `update`);
        Conflict when the version is stale."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        if status_with_spec(kind):
            return self.update(obj)
        body = _versioned(obj)
        body["status"] = body.get("status") or {}
        self._fits(body)
        return self._written(
            kind,
            name,
            lambda: self._call(
                f"{kind}/{name}",
                self._api.replace_namespaced_custom_object_status,
                self._info(kind).plural,
                name,
                body,
            ),
        )

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        from kubernetes.client import V1DeleteOptions, V1Preconditions

        options = V1DeleteOptions()
        if resource_version is not None:
            options.preconditions = V1Preconditions(resource_version=resource_version)
        self._written(
            kind,
            name,
            lambda: self._call(
                f"{kind}/{name}",
                self._api.delete_namespaced_custom_object,
                self._info(kind).plural,
                name,
                body=options,
            ),
            deleted=True,
        )

    # ---- watch ----

    def watch(
        self,
        kind: str,
        since: str,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes of `kind` after `since`, in order, across reconnects; Gone when too old."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def finished() -> bool:
            return (
                self._closed
                or (stop is not None and stop())
                or (deadline is not None and time.monotonic() >= deadline)
            )

        last = since
        delay = RECONNECT_DELAY[0]
        while not finished():
            try:
                stream = self._open_watch(kind, last, deadline)
            except StoreUnavailable as exc:
                log.warning("watch %s from %s: %s; retrying in %.1f s", kind, last, exc, delay)
                _wait(delay, finished)
                delay = min(delay * 2, RECONNECT_DELAY[1])
                continue
            delay = RECONNECT_DELAY[0]
            try:
                for event in stream.events(finished):
                    type_, obj = event["type"], event["object"]
                    if type_ == "ERROR":
                        raise _watch_error(kind, last, obj)
                    last = obj["metadata"]["resourceVersion"]
                    if type_ != "BOOKMARK":
                        yield WatchEvent(type_, obj)
            finally:
                stream.close()

    def _open_watch(self, kind: str, since: str, deadline: float | None) -> _WatchStream:
        seconds = random.randint(*WATCH_SECONDS)
        if deadline is not None:
            seconds = max(1, min(seconds, int(deadline - time.monotonic()) + 1))
        response = self._call(
            f"watch {kind}",
            self._api.list_namespaced_custom_object,
            self._info(kind).plural,
            watch=True,
            resource_version=since or None,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, seconds + 30),
        )
        return _WatchStream(response)

    # ---- lifecycle ----

    def close(self) -> None:
        """Stop watches at their next check and release the client's connections."""
        self._closed = True
        for cache in self._caches.values():
            cache.stop()
        self._writers.shutdown(wait=False)
        if self._owns_client:
            self._api_client.close()

    def __enter__(self) -> KubeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _WatchStream:
    """One watch response, read by a thread so the consumer can give up at any moment.

    A blocking socket read cannot see `stop()`; the reader thread can block
    instead, and `close` shuts the socket down under it.
    """

    _END = object()

    def __init__(self, response: Any) -> None:
        self._response = response
        self._queue: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, name="kube-watch", daemon=True).start()

    def _read(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(self._response):
                self._queue.put(line)
        except Exception as exc:  # a dropped connection: the consumer reconnects
            log.debug("watch stream ended: %s", exc)
        finally:
            self._queue.put(self._END)

    def events(self, finished: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """The decoded events until the stream ends or `finished()` becomes true."""
        while not finished():
            try:
                item = self._queue.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is self._END:
                return
            yield json.loads(item)

    def close(self) -> None:
        # The reader may be releasing a finished stream's connection right now: both are fine.
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            if self._response.connection is not None:
                self._response.shutdown()
        self._response.close()


def _wait(seconds: float, finished: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not finished() and time.monotonic() < end:
        time.sleep(min(POLL, max(0.0, end - time.monotonic())))


def _versioned(obj: Resource) -> Resource:
    """A copy to write; the API server would accept a PUT without a version, the Store must not."""
    version = obj.get("metadata", {}).get("resourceVersion")
    if not version:
        raise Conflict(
            f"{obj['kind']}/{obj['metadata']['name']}: no resourceVersion; read it first"
        )
    return copy.deepcopy(obj)


def _retry_after(exc: Any) -> float:
    """The seconds a 429's Retry-After header asks for (1 when absent or unreadable)."""
    value = (exc.headers or {}).get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _reason(exc: Any) -> tuple[str, str]:
    """The Status reason and message of an ApiException (its body is a Status object)."""
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        return "", str(exc.body or exc.reason)
    return status.get("reason", ""), status.get("message", "") or str(exc.reason)


def _translate(what: str, exc: Any) -> StoreError:
    reason, message = _reason(exc)
    text = f"{what}: {message or exc.reason}"
    if exc.status == 404:
        return NotFound(text)
    if exc.status == 409:
        return AlreadyExists(text) if reason == "AlreadyExists" else Conflict(text)
    if exc.status == 410:
        return Gone(text)
    if exc.status in (401, 403):
        return StoreUnavailable(f"{text} (check the credentials and the RBAC rules in deploy/)")
    if exc.status in (429, 500, 502, 503, 504):
        return StoreUnavailable(text)
    return StoreError(text)


def _watch_error(kind: str, since: str, status: dict[str, Any]) -> StoreError:
    """An ERROR event of a watch stream; 410 means the history after `since` is gone."""
    message = f"watch {kind} from {since}: {status.get('message', status)}"
    if status.get("code") == 410:
        return Gone(f"{message}; re-list and watch again")
    return StoreUnavailable(message)
