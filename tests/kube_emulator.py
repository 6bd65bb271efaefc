"""A Kubernetes API server emulator for tests: kmock's scaffold plus real API-server rules.

The fast tier: the kube Store backend and the operator run against this
emulator on 127.0.0.1 in every test run; the `apiserver` tier runs the same
tests against a real kube-apiserver (tests/control_plane.py), which is what
showed where the emulator disagreed (pruning, below).

What kmock gives (and is used here): the aiohttp server on a free port, request
parsing (group, version, plural, namespace, name, subresource), API discovery
(`/apis/foyle.io/v1alpha1` lists the resources, their short names, categories
and subresources, which kopf reads) and user-defined reactions for discovery.

What kmock's own `KubernetesEmulator` lacks, and `ApiServerEmulator` adds by
replacing its object handling (kmock merges JSON into dicts and nothing more):

* server-set `resourceVersion` (one monotonic counter, as etcd's revision),
  `uid`, `creationTimestamp`, and `generation` bumped only when something other
  than metadata changes (status only where the CRD has no status subresource);
  a write that changes nothing is a no-op;
* 201 on create, 409 AlreadyExists, `generateName`;
* pruning of fields a CRD's structural schema does not declare (unless
  `x-kubernetes-preserve-unknown-fields`), on every write, as the server does;
* PUT replace, and 409 Conflict when `metadata.resourceVersion` is stale
  (a PUT without one is unconditional, as for real custom resources);
* the status subresource: writes to `/status` change only status, writes to
  the main resource never change status, and create drops it;
* PATCH as JSON merge patch or JSON patch (a resourceVersion in the patch is a
  precondition); strategic merge patch is refused with 415, as for CRDs;
* DELETE with `preconditions.resourceVersion`, finalizers and `deletionTimestamp`;
* GET / LIST with `labelSelector`, sorted by name, with the list's resourceVersion;
* WATCH (`?watch=true&resourceVersion=N`) replaying history after N, then live
  ADDED/MODIFIED/DELETED; no N means "the current state as ADDED, then live";
  an N older than the kept history gets a 410 Expired ERROR event, as a real
  server sends; `timeoutSeconds` ends the stream (after a BOOKMARK when
  `allowWatchBookmarks` is set).

Not emulated (the `apiserver` tier verifies these): OpenAPI validation and
defaulting, admission, RBAC and authentication,
field selectors, managedFields/server-side apply, periodic bookmarks,
watch-cache timing, and label-selector watches seeing objects leave the selection.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import secrets
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import pytest
import yaml

from controller.store.base import matches_labels

CRDS = Path(__file__).resolve().parent.parent / "crds"
NAMESPACE = "foyle"

T = TypeVar("T")
Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource path "group/version/plural", namespace, name)


@dataclass(frozen=True)
class Served:
    """A resource the emulator serves: enough of a CRD to route and to split status."""

    group: str
    version: str
    plural: str
    kind: str
    status_subresource: bool = True
    schema: Obj | None = dataclasses.field(
        default=None, compare=False, hash=False
    )  # openAPIV3Schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"


@dataclass(frozen=True)
class _Change:
    rv: int
    path: str
    namespace: str
    event: Obj  # {"type": ..., "object": ...}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(code: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message)


def _status(code: int, reason: str, message: str) -> Obj:
    """A Kubernetes `Status` body, as the API server returns for errors."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _pruned(value: Any, schema: Obj) -> Any:
    """`value` without what `schema` does not declare, as the API server prunes custom resources."""
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return value
        if isinstance(schema.get("additionalProperties"), dict):  # a map: keys are data
            return {k: _pruned(v, schema["additionalProperties"]) for k, v in value.items()}
        properties = schema.get("properties", {})
        return {k: _pruned(v, properties[k]) for k, v in value.items() if k in properties}
    if isinstance(value, list) and "items" in schema:
        return [_pruned(v, schema["items"]) for v in value]
    return value


def _prune(served: Served, obj: Obj) -> Obj:
    """The object with its spec and status pruned (apiVersion, kind, metadata are the server's)."""
    if served.schema is None:
        return obj
    properties = served.schema.get("properties", {})
    for part in ("spec", "status"):
        if part in obj and part in properties:
            obj[part] = _pruned(obj[part], properties[part])
    return obj


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


class _Notifier(asyncio.Condition):
    """A Condition that synchronous code in the loop's thread can notify (no `async with` needed)."""

    def notify_all_later(self) -> None:
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self:
            self.notify_all()


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold serving objects with the API server's rules (see module doc)."""

    history_limit: int = 10_000
    _served: dict[str, Served] = attrs.field(factory=dict, init=False)
    _objects: dict[Key, Obj] = attrs.field(factory=dict, init=False)
    _history: deque[_Change] = attrs.field(factory=deque, init=False)
    # etcd's revision is never 0 in a real cluster, and "0" means "any version" to a watch.
    _rv: int = attrs.field(default=1, init=False)
    _compacted: int = attrs.field(default=0, init=False)  # watches from below this get 410
    _changed: _Notifier | None = attrs.field(default=None, init=False)
    _throttled: int = attrs.field(default=0, init=False)  # next requests answered 429
    _retry_after: int = attrs.field(default=1, init=False)

    # ---- configuration ----

    def serve(
        self, served: Served, *, short_names: tuple[str, ...] = (), categories: tuple[str, ...] = ()
    ) -> None:
        """Serve a resource and announce it in API discovery."""
        self._served[served.path] = served
        self.resources[served.path] = kmock.ResourceInfo(
            namespaced=True,
            kind=served.kind,
            singular=served.kind.lower(),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            shortnames=set(short_names),
            categories=set(categories),
            subresources={"status"} if served.status_subresource else set(),
        )

    def serve_crd(self, crd: Obj) -> None:
        """Serve the resource a CustomResourceDefinition (apiextensions.k8s.io/v1) defines."""
        spec = crd["spec"]
        names = spec["names"]
        [version] = [v for v in spec["versions"] if v.get("served", True)]
        self.serve(
            Served(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                status_subresource="status" in version.get("subresources", {}),
                schema=version.get("schema", {}).get("openAPIV3Schema"),
            ),
            short_names=tuple(names.get("shortNames", ())),
            categories=tuple(names.get("categories", ())),
        )

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next `requests` requests 429 with Retry-After, as the API server's
        Priority and Fairness does when a priority level's queues are full."""
        self._throttled, self._retry_after = requests, retry_after

    def compact(self) -> int:
        """Forget all history, as etcd compaction does: older watches now get 410. Returns the rv."""
        self._history.clear()
        self._compacted = self._rv
        return self._rv

    @property
    def resource_version(self) -> int:
        return self._rv

    # ---- request routing ----

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await super()._handle(request)  # discovery and anything non-Kubernetes
        served = self._served.get(f"{resource.group}/{resource.version}/{resource.plural}")
        if self._throttled > 0:
            self._throttled -= 1
            return aiohttp.web.json_response(
                _status(429, "TooManyRequests", "too many requests, please try again later"),
                status=429,
                headers={"Retry-After": str(self._retry_after)},
            )
        try:
            if served is None:
                raise _error(
                    404, "NotFound", f"the server could not find the resource {resource.plural}"
                )
            if request.namespace is None:
                raise _error(405, "MethodNotAllowed", "only namespaced requests are emulated")
            return await self._dispatch(served, request)
        except kmock.KubernetesError as exc:
            code, reason, message = exc.status, exc.reason or "", exc.message or ""
            return aiohttp.web.json_response(_status(code, reason, message), status=code)

    async def _dispatch(self, served: Served, request: kmock.Request) -> aiohttp.web.StreamResponse:
        method, name, sub = request.method.upper(), request.name, request.subresource
        ns = request.namespace
        assert ns is not None
        if sub not in (None, "status") or (sub == "status" and not served.status_subresource):
            raise _error(404, "NotFound", f"no subresource {sub!r}")
        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return await kmock.Response(payload=self._watch(served, ns, name, request.params))(
                request
            )
        if method == "GET" and name is None:
            return self._json(self._list(served, ns, request.params.get("labelSelector")))
        if method == "POST" and name is None:
            return self._json(self._create(served, ns, self._body(request)), 201)
        if name is None:
            raise _error(405, "MethodNotAllowed", f"{method} needs an object name")
        if method == "GET":
            return self._json(self._get(served, ns, name))
        if method == "PUT":
            return self._json(
                self._replace(served, ns, name, self._body(request), status=sub == "status")
            )
        if method == "PATCH":
            content_type = next(
                (v for k, v in request.headers.items() if k.lower() == "content-type"), ""
            )
            body = self._patched(self._get(served, ns, name), content_type, request.data)
            return self._json(self._replace(served, ns, name, body, status=sub == "status"))
        if method == "DELETE":
            return self._json(self._delete(served, ns, name, request.data or {}))
        raise _error(405, "MethodNotAllowed", f"{method} is not supported")

    @staticmethod
    def _json(obj: Obj, code: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(obj, status=code)

    @staticmethod
    def _body(request: kmock.Request) -> Obj:
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        return copy.deepcopy(request.data)

    @staticmethod
    def _patched(stored: Obj, content_type: str, patch: Any) -> Obj:
        if "json-patch" in content_type:
            try:
                return jsonpatch.apply_patch(stored, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"cannot apply the JSON patch: {exc}") from exc
        if "strategic-merge-patch" in content_type:
            raise _error(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
            )
        if not isinstance(patch, dict):
            raise _error(400, "BadRequest", "a merge patch must be a JSON object")
        result = _merge_patch(stored, patch)
        if "resourceVersion" not in patch.get("metadata", {}):
            result["metadata"].pop(
                "resourceVersion", None
            )  # no precondition unless the patch says so
        return result

    # ---- object semantics ----

    def _get(self, served: Served, ns: str, name: str) -> Obj:
        obj = self._objects.get((served.path, ns, name))
        if obj is None:
            raise _error(404, "NotFound", f'{served.plural}.{served.group} "{name}" not found')
        return copy.deepcopy(obj)

    def _list(self, served: Served, ns: str, selector: str | None) -> Obj:
        items = [
            copy.deepcopy(obj)
            for (path, namespace, _), obj in sorted(self._objects.items())
            if path == served.path and namespace == ns and matches_labels(obj, selector)
        ]
        return {
            "apiVersion": served.api_version,
            "kind": f"{served.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _create(self, served: Served, ns: str, body: Obj) -> Obj:
        meta = body.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise _error(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        if not name:
            raise _error(422, "Invalid", "metadata.name: Required value")
        if (served.path, ns, name) in self._objects:
            raise _error(
                409, "AlreadyExists", f'{served.plural}.{served.group} "{name}" already exists'
            )
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        for field in ("deletionTimestamp", "managedFields"):
            meta.pop(field, None)
        body["apiVersion"], body["kind"] = served.api_version, served.kind
        if served.status_subresource:
            body.pop("status", None)
        return self._commit(served, ns, "ADDED", _prune(served, body))

    def _replace(self, served: Served, ns: str, name: str, body: Obj, *, status: bool) -> Obj:
        stored = self._get(served, ns, name)
        body = _prune(served, body)
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise _error(
                400, "BadRequest", "the name of the object does not match the name in the URL"
            )
        given = meta.get("resourceVersion")
        current = stored["metadata"]["resourceVersion"]
        if given and given != current:
            raise _error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {served.plural}.{served.group} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if status:
            new = copy.deepcopy(stored)
            new["status"] = body.get("status") or {}
        else:
            new = self._main_resource_update(served, stored, body)
        if new == stored:
            return stored  # a no-op write: no new version, no event
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._commit(served, ns, "DELETED", new)
        return self._commit(served, ns, "MODIFIED", new)

    @staticmethod
    def _main_resource_update(served: Served, stored: Obj, body: Obj) -> Obj:
        """Everything from `body` but the server-owned metadata and (with the subresource) status."""
        new = _without(copy.deepcopy(body), "metadata", "status")
        new["apiVersion"], new["kind"] = served.api_version, served.kind
        meta = copy.deepcopy(body.get("metadata") or {})
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "managedFields",  # never recorded here; `[{}]` clears them on the server
        ):
            if field in stored["metadata"]:
                meta[field] = stored["metadata"][field]
            else:
                meta.pop(field, None)
        new["metadata"] = meta
        if served.status_subresource:
            if "status" in stored:
                new["status"] = stored["status"]
        elif "status" in body:
            new["status"] = copy.deepcopy(body["status"])
        # The server's rule: a change of anything but metadata makes a new generation;
        # with the subresource, status is the stored one here, so only spec counts.
        if _without(new, "metadata") != _without(stored, "metadata"):
            meta["generation"] = stored["metadata"].get("generation", 1) + 1
        return new

    def _delete(self, served: Served, ns: str, name: str, options: Obj) -> Obj:
        stored = self._get(served, ns, name)
        preconditions = options.get("preconditions") or {}
        for field in ("resourceVersion", "uid"):
            wanted = preconditions.get(field)
            if wanted and wanted != stored["metadata"].get(field):
                raise _error(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: {wanted}, "
                    f"{field} in object meta: {stored['metadata'].get(field)}",
                )
        if stored["metadata"].get("finalizers"):
            if stored["metadata"].get("deletionTimestamp"):
                return stored
            stored["metadata"]["deletionTimestamp"] = _now()
            return self._commit(served, ns, "MODIFIED", stored)
        return self._commit(served, ns, "DELETED", stored)

    def _commit(self, served: Served, ns: str, type_: str, obj: Obj) -> Obj:
        """Give `obj` the next resourceVersion, store or drop it, record and announce the change."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (served.path, ns, obj["metadata"]["name"])
        if type_ == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = copy.deepcopy(obj)
        self._history.append(
            _Change(self._rv, served.path, ns, {"type": type_, "object": copy.deepcopy(obj)})
        )
        while len(self._history) > self.history_limit:
            self._compacted = self._history.popleft().rv
        if self._changed is not None:
            self._changed.notify_all_later()
        return copy.deepcopy(obj)

    # ---- watch ----

    def _since(self, last: int) -> list[_Change] | None:
        """The kept changes after `last`; None when history before them is gone."""
        if last < self._compacted:
            return None
        return [change for change in self._history if change.rv > last]

    async def _watch(
        self, served: Served, ns: str, name: str | None, params: dict[str, str]
    ) -> AsyncIterator[Any]:
        yield b""  # send the headers at once, as the API server does
        selector = params.get("labelSelector")
        loop = asyncio.get_running_loop()
        seconds = params.get("timeoutSeconds")
        deadline = None if not seconds else loop.time() + float(seconds)

        def wanted(change: _Change) -> bool:
            obj = change.event["object"]
            return (
                change.path == served.path
                and change.namespace == ns
                and (name is None or obj["metadata"]["name"] == name)
                and matches_labels(obj, selector)
            )

        since = params.get("resourceVersion") or "0"
        last = int(since)
        if last == 0:  # "any version": the current state, then changes
            for obj in self._list(served, ns, selector)["items"]:
                if name is None or obj["metadata"]["name"] == name:
                    yield {"type": "ADDED", "object": obj}
            last = self._rv
        condition = self._condition()
        while True:
            changes = self._since(last)
            if changes is None:
                message = f"too old resource version: {last} ({self._compacted})"
                yield {"type": "ERROR", "object": _status(410, "Expired", message)}
                return
            for change in changes:
                last = change.rv
                if wanted(change):
                    yield change.event
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                if params.get("allowWatchBookmarks") in ("true", "1"):
                    bookmark = {
                        "apiVersion": served.api_version,
                        "kind": served.kind,
                        "metadata": {"resourceVersion": str(last)},
                    }
                    yield {"type": "BOOKMARK", "object": bookmark}
                return
            async with condition:
                if self._rv == last:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(condition.wait(), timeout=remaining)

    def _condition(self) -> _Notifier:
        """The condition watches wait on; made in the serving loop (asyncio objects bind to one)."""
        if self._changed is None:
            self._changed = _Notifier()
        return self._changed


class RunningEmulator:
    """An ApiServerEmulator served on 127.0.0.1 (a free port) from its own thread and event loop.

    Tests are synchronous (the kubernetes client blocks), so the server runs in a
    background thread; `call` runs a function on the server's loop, where the
    emulator's state lives.
    """

    def __init__(self, emulator: ApiServerEmulator, workdir: Path) -> None:
        self.emulator = emulator
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10) or self._error is not None:
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig()), encoding="utf-8")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by __init__ or stop()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.url = f"http://127.0.0.1:{server.port}"
            self._ready.set()
            await self._stopping.wait()

    def _kubeconfig(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-does-not-check"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "tester", "namespace": NAMESPACE},
                }
            ],
            "current-context": "emulator",
        }

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (where its state lives) and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def requests(self) -> list[kmock.Request]:
        """Every request the emulator has served so far, in order (kmock records them)."""
        return self.call(lambda: list(self.emulator))

    def stop(self) -> None:
        """Stop serving (idempotent): clients then see connections refused."""
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)


def foyle_emulator(**options: Any) -> ApiServerEmulator:
    """An emulator serving the committed foyle.io CRDs and core v1 Events (kopf posts them).

    Namespaces and CRDs are announced in discovery for kopf, not served.
    """
    emulator = ApiServerEmulator(**options)
    for path in sorted(CRDS.glob("*.foyle.io.yaml")):  # the CRDs, not their kustomization
        emulator.serve_crd(yaml.safe_load(path.read_text(encoding="utf-8")))
    emulator.serve(Served("", "v1", "events", "Event", status_subresource=False))
    # kopf waits for namespaces and CRDs in API discovery before it watches anything. They are
    # announced only: the operator disables kopf's scanning, so nothing lists or watches them.
    for path, kind in (
        ("/v1/namespaces", "Namespace"),
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition"),
    ):
        emulator.resources[path] = kmock.ResourceInfo(
            namespaced=False, kind=kind, verbs={"get", "list", "watch"}
        )
    return emulator


@pytest.fixture
def kube_emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    """A fresh emulator per test: `.url`, `.kubeconfig` (namespace foyle), `.emulator`, `.call`."""
    running = RunningEmulator(foyle_emulator(), tmp_path)
    try:
        yield running
    finally:
        running.stop()
