"""KubeStore on a real kube-apiserver and etcd: the shared Store contract, unchanged, plus 410."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from controller.store.base import Gone
from controller.store.kube import KubeStore
from tests.control_plane import READS, ControlPlane, start, store_factory
from tests.store_contract import *  # noqa: F403  (the contract's tests run here)
from tests.store_contract import _trace

pytestmark = pytest.mark.apiserver


@pytest.fixture(params=READS)
def new_store(
    apiserver: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[..., KubeStore]]:
    """Stores on one fresh namespace: empty collections for every test."""
    yield from store_factory(apiserver.kubeconfig, apiserver.new_namespace("store"), request.param)


@pytest.fixture
def store(new_store: Callable[..., KubeStore]) -> KubeStore:
    return new_store()


@pytest.fixture(scope="module")
def uncached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second server whose watches go to etcd: the session's serves them from its watch cache,
    which keeps its own window of events whatever etcd compacted."""
    yield from start(tmp_path_factory.mktemp("uncached"), "--watch-cache=false")


def test_watch_from_a_version_etcd_compacted_raises_gone(uncached: ControlPlane) -> None:
    store = KubeStore(uncached.new_namespace("gone"), kubeconfig=str(uncached.kubeconfig))
    _, since = store.list_with_version("Trace")
    store.create(_trace("a"))
    store.create(_trace("b"))
    uncached.compact_etcd()
    with pytest.raises(Gone):
        list(store.watch("Trace", since, timeout=10))
    _, fresh = store.list_with_version("Trace")
    store.create(_trace("c"))
    events = list(store.watch("Trace", fresh, timeout=2))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "c")]
    store.close()
