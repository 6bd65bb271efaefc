"""KubeStore on the API server emulator: the shared Store contract, plus what only kube adds."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.store.base import Gone, StoreUnavailable, WatchEvent
from controller.store.kube import KubeStore
from controller.store.tokenbucket import TokenBucket
from tests.control_plane import store_factory
from tests.kube_emulator import RunningEmulator, kube_emulator  # noqa: F401  (fixture)
from tests.store_contract import *  # noqa: F403  (the contract's tests run here)
from tests.store_contract import _trace, _trace_with, _wait_until


@pytest.fixture
def new_store(kube_emulator: RunningEmulator) -> Iterator[Callable[..., KubeStore]]:  # noqa: F811
    """Stores on the emulator (unlimited pacing: pacing is tested on its own below)."""
    yield from store_factory(kube_emulator.kubeconfig, "foyle")


@pytest.fixture
def store(new_store: Callable[..., KubeStore]) -> KubeStore:
    return new_store()


def _watch_requests(kube: RunningEmulator) -> int:
    return sum(1 for r in kube.requests() if r.params.get("watch") == "true")


# ---- API-server specifics ----


def test_objects_live_in_the_store_namespace(
    store: KubeStore,
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    created = store.create(_trace("a"))
    assert created["metadata"]["namespace"] == "foyle"
    paths = [r.url.path for r in kube_emulator.requests()]
    assert paths == ["/apis/foyle.io/v1alpha1/namespaces/foyle/traces"]


def test_update_status_writes_through_the_status_subresource(
    store: KubeStore,
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    obj = store.create(_trace("a"))
    store.update_status({**obj, "status": {"phase": "Complete"}})
    last = kube_emulator.requests()[-1]
    assert (last.method, str(last.url.path)) == (
        "PUT",
        "/apis/foyle.io/v1alpha1/namespaces/foyle/traces/a/status",
    )


def test_watch_from_a_compacted_version_raises_gone(
    store: KubeStore,
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    _, since = store.list_with_version("Trace")
    store.create(_trace("a"))
    kube_emulator.call(kube_emulator.emulator.compact)
    with pytest.raises(Gone):
        list(store.watch("Trace", since, timeout=5))
    _, fresh = store.list_with_version("Trace")
    assert list(store.watch("Trace", fresh, timeout=0.2)) == []


def test_watch_reconnects_when_the_server_ends_the_stream(
    store: KubeStore,
    kube_emulator: RunningEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controller.store.kube.WATCH_SECONDS", (1, 1))
    _, since = store.list_with_version("Trace")
    seen: list[WatchEvent] = []
    done = threading.Event()

    def follow() -> None:
        seen.extend(store.watch("Trace", since, timeout=30, stop=done.is_set))

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        obj = store.create(_trace("a"))
        _wait_until(lambda: len(seen) == 1)
        _wait_until(lambda: _watch_requests(kube_emulator) >= 2)  # the first stream ended
        store.update(_trace_with(obj, exitCode=1))
        _wait_until(lambda: len(seen) == 2)
    finally:
        done.set()
        follower.join(timeout=10)
    assert not follower.is_alive()
    assert [(e.type, e.object["metadata"]["name"]) for e in seen] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
    ]


def test_watch_stops_promptly_when_asked(store: KubeStore) -> None:
    _, since = store.list_with_version("Trace")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert list(store.watch("Trace", since, stop=stop.is_set)) == []
    assert time.monotonic() - started < 2


def test_watch_from_empty_version_starts_with_the_current_objects(store: KubeStore) -> None:
    store.create(_trace("a"))
    events = list(itertools.islice(store.watch("Trace", "", timeout=10), 1))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_requests_are_paced_by_qps_after_the_burst(new_store: Callable[..., KubeStore]) -> None:
    store = new_store(qps=20.0, burst=2)
    started = time.monotonic()
    for _ in range(6):
        store.list("Trace")
    # two requests from the burst, then four at 20 per second
    assert time.monotonic() - started >= 4 / 20 - 0.01


def test_kubeconfig_from_the_environment_when_not_in_a_cluster(
    kube_emulator: RunningEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube_emulator.kubeconfig))
    with KubeStore() as store:
        store.create(_trace("a"))
        assert [o["metadata"]["name"] for o in store.list("Trace")] == ["a"]


def test_missing_kubeconfig_raises_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="kubeconfig"):
        KubeStore(kubeconfig=str(tmp_path / "missing"))


def test_unreachable_api_server_raises_store_unavailable(
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    store = KubeStore(kubeconfig=str(kube_emulator.kubeconfig))
    kube_emulator.stop()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.get("Trace", "a")


# ---- the token bucket ----


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_the_burst_then_one_per_interval() -> None:
    clock = _FakeClock()
    bucket = TokenBucket(qps=10.0, burst=3, clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == pytest.approx([0.1, 0.1])


def test_token_bucket_refills_while_idle_up_to_the_burst() -> None:
    clock = _FakeClock()
    bucket = TokenBucket(qps=10.0, burst=2, clock=lambda: clock.now, sleep=clock.sleep)
    bucket.acquire()
    bucket.acquire()
    clock.now += 60  # a long idle period refills only `burst` tokens
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_token_bucket_spaces_out_concurrent_reservations() -> None:
    clock = _FakeClock()
    bucket = TokenBucket(qps=4.0, burst=1, clock=lambda: clock.now, sleep=clock.sleep)
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize("qps, burst", [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_token_bucket_rejects_impossible_settings(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps=qps, burst=burst)


# ---- the emulator's API-server rules that the Store does not exercise (kopf relies on them) ----


@pytest.fixture
def api(kube_emulator: RunningEmulator) -> Iterator[Any]:  # noqa: F811
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(str(kube_emulator.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        yield client.CustomObjectsApi(api_client)


TRACES = ("foyle.io", "v1alpha1", "foyle", "traces")


def test_emulator_merge_patch_with_a_stale_version_is_a_conflict(api: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    created = api.create_namespaced_custom_object(*TRACES, _trace("a"))
    old = created["metadata"]["resourceVersion"]
    patched = api.patch_namespaced_custom_object_status(
        *TRACES, "a", {"status": {"phase": "Complete"}}
    )
    assert patched["status"] == {"phase": "Complete"}
    assert patched["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(
            *TRACES, "a", {"metadata": {"resourceVersion": old}, "spec": {"exitCode": 1}}
        )
    assert caught.value.status == 409


def test_emulator_delete_waits_for_finalizers(api: Any) -> None:
    body = _trace("a")
    body["metadata"]["finalizers"] = ["foyle.io/test"]
    api.create_namespaced_custom_object(*TRACES, body)
    api.delete_namespaced_custom_object(*TRACES, "a")
    marked = api.get_namespaced_custom_object(*TRACES, "a")
    assert marked["metadata"]["deletionTimestamp"]
    api.patch_namespaced_custom_object(*TRACES, "a", {"metadata": {"finalizers": None}})
    assert api.list_namespaced_custom_object(*TRACES)["items"] == []


def test_emulator_watch_filters_by_label_selector(api: Any) -> None:
    since = api.list_namespaced_custom_object(*TRACES)["metadata"]["resourceVersion"]
    api.create_namespaced_custom_object(*TRACES, _trace("a", {"team": "x"}))
    api.create_namespaced_custom_object(*TRACES, _trace("b", {"team": "y"}))
    stream = api.list_namespaced_custom_object(
        *TRACES,
        watch=True,
        resource_version=since,
        label_selector="team=y",
        timeout_seconds=1,
        _preload_content=False,
    )
    lines = [line for line in stream.read().decode().splitlines() if line]
    names = [json.loads(line)["object"]["metadata"]["name"] for line in lines]
    assert names == ["b"]


def test_emulator_announces_the_crds_in_discovery(api: Any) -> None:
    from kubernetes import client

    resources = client.CustomObjectsApi(api.api_client).get_api_resources("foyle.io", "v1alpha1")
    by_name = {r.name: r for r in resources.resources}
    plurals = ("logfiles", "traces", "blocklogs", "sessions", "examples")
    with_status = ("logfiles", "traces", "examples")  # BlockLog, Session: status with spec
    assert set(by_name) == set(plurals) | {f"{p}/status" for p in with_status}
    assert by_name["blocklogs"].short_names == ["bl"]
    assert by_name["blocklogs"].categories == ["foyle"]
