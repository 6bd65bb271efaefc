"""KubeStore reading from watch-fed caches (what `foylectl run --store kube` uses), and
throttling: the Store contract unchanged, reads that cost no request, a conflict that
refreshes one object, and 429 + Retry-After honoured with a bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.api.kinds import Resource
from controller.api.result import Outcome
from controller.pipeline import Pipeline
from controller.settings import Settings
from controller.store.base import (
    NotFound,
    StoreUnavailable,
    read_modify_write,
    read_modify_write_many,
)
from controller.store.journal import BLOCKLOGS, SESSIONS, Journal
from controller.store.kube import THROTTLED_ATTEMPTS, WRITES_IN_FLIGHT, KubeStore
from controller.store.kubecache import KindCache
from tests.control_plane import store_factory
from tests.kube_emulator import RunningEmulator, kube_emulator  # noqa: F401  (fixture)
from tests.store_contract import *  # noqa: F403  (the contract's tests run here)
from tests.store_contract import _trace, _trace_with, _wait_until


@pytest.fixture
def new_store(kube_emulator: RunningEmulator) -> Iterator[Callable[..., KubeStore]]:  # noqa: F811
    """Stores on the emulator reading every kind from a watch-fed cache."""
    yield from store_factory(kube_emulator.kubeconfig, "foyle", reads="cache")


@pytest.fixture
def store(new_store: Callable[..., KubeStore]) -> KubeStore:
    return new_store()


def _reads(kube: RunningEmulator) -> int:
    """GET requests of single objects (not lists, not watches)."""
    return sum(
        1
        for r in kube.requests()
        if r.method.upper() == "GET" and r.name is not None and "watch" not in r.params
    )


def _seen(store: KubeStore, name: str, exit_code: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return store.get("Trace", name)["spec"].get("exitCode") == exit_code
        except NotFound:
            return False

    return check


def _create_and_wait(writer: KubeStore, reader: KubeStore, count: int) -> None:
    """Traces t0..t<count-1> (exitCode i) created by `writer`, once `reader` sees them all."""
    for i in range(count):
        writer.create(_trace(f"t{i}", exitCode=i))
    _wait_until(_seen(reader, f"t{count - 1}", count - 1))


def test_reads_cost_no_request_once_the_cache_is_listed(
    new_store: Callable[..., KubeStore],
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    reader = new_store()
    _create_and_wait(new_store(), reader, 20)
    before = _reads(kube_emulator)
    assert [reader.get("Trace", f"t{i}")["spec"]["exitCode"] for i in range(20)] == list(range(20))
    with pytest.raises(NotFound):
        reader.get("Trace", "absent")
    assert _reads(kube_emulator) == before


def _add_ten(obj: Resource | None) -> Resource | None:
    assert obj is not None
    obj["spec"]["exitCode"] += 10
    return obj


def test_a_conflict_refreshes_the_one_stale_object(
    new_store: Callable[..., KubeStore],
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    stale, other = new_store(), new_store()
    _create_and_wait(stale, other, 2)
    # White box: stop the stale store's watch, as a lagging watch would be, so its cache
    # learns only from its own requests from now on.
    cache = stale._caches["Trace"]
    cache.stop()
    cache._thread.join(timeout=10)
    other.update(_trace_with(other.get("Trace", "t1"), exitCode=2))
    assert stale.get("Trace", "t1")["spec"]["exitCode"] == 1  # stale
    before = _reads(kube_emulator)
    read_modify_write(stale, "Trace", "t1", _add_ten)
    assert stale.get("Trace", "t1")["spec"]["exitCode"] == 12  # the other update is not lost
    assert _reads(kube_emulator) == before + 1  # the conflict re-read that one object


def _throttled(
    new_store: Callable[..., KubeStore], kube: RunningEmulator, requests: int, retry_after: int
) -> KubeStore:
    """A store (no cache: its lists would take the throttled turns) on an emulator that
    answers the next `requests` requests 429."""
    store = new_store(cached_kinds=())
    kube.call(lambda: kube.emulator.throttle(requests, retry_after=retry_after))
    return store


def _posts(kube: RunningEmulator) -> int:
    return sum(1 for r in kube.requests() if r.method.upper() == "POST")


def test_a_throttled_request_is_sent_again_after_retry_after(
    new_store: Callable[..., KubeStore],
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    store = _throttled(new_store, kube_emulator, 2, retry_after=1)
    started = time.monotonic()
    store.create(_trace("a"))
    assert time.monotonic() - started >= 2 * 0.9  # waited what each Retry-After asked
    assert _posts(kube_emulator) == 3


def test_throttling_that_does_not_end_is_a_one_line_error(
    new_store: Callable[..., KubeStore],
    kube_emulator: RunningEmulator,  # noqa: F811
) -> None:
    store = _throttled(new_store, kube_emulator, 1000, retry_after=0)
    with pytest.raises(StoreUnavailable, match="Trace/a: too many requests"):
        store.create(_trace("a"))
    assert _posts(kube_emulator) == THROTTLED_ATTEMPTS


def test_a_batch_of_writes_is_in_flight_together(store: KubeStore) -> None:
    """Each write is a round trip: a batch's go at once (a barrier every mutator of the
    batch must reach before any returns would never open were they one after another)."""
    together = threading.Barrier(WRITES_IN_FLIGHT, timeout=10)

    def create(name: str) -> Callable[[Resource | None], Resource]:
        def mutate(_: Resource | None) -> Resource:
            together.wait()
            return _trace(name)

        return mutate

    names = sorted(f"t{i}" for i in range(WRITES_IN_FLIGHT))
    written = read_modify_write_many(store, "Trace", {n: create(n) for n in names})
    assert sorted(written) == names
    assert sorted(t["metadata"]["name"] for t in store.list("Trace")) == names


def test_a_batch_written_after_close_is_a_one_line_error(
    new_store: Callable[..., KubeStore],
) -> None:
    store = new_store()
    store.close()
    with pytest.raises(StoreUnavailable, match="the store is closed"):
        read_modify_write_many(store, "Trace", {n: lambda o, n=n: _trace(n) for n in "ab"})


def test_the_pipelines_stages_send_their_requests_at_the_same_time(
    store: KubeStore, tmp_path: Path
) -> None:
    """A reconcile waiting on the API server holds nothing another stage needs (issue 19:
    each held the journal's transaction, so one stage sent requests at a time): a barrier
    the BlockLog and the Session stages' reconciles must both reach opens."""
    settings = Settings(log_dirs=[tmp_path / "logs"], state_dir=tmp_path, store="kube")
    journal = Journal(tmp_path / "journal.db")
    pipeline = Pipeline(settings, store, journal)
    together = threading.Barrier(2, timeout=10)

    def waiting(keys: list[str]) -> Outcome:
        together.wait()
        return Outcome()

    stages = [pipeline.controllers_by_queue[q] for q in (BLOCKLOGS, SESSIONS)]
    try:
        for stage in stages:
            stage._reconcile = waiting
        threads = [threading.Thread(target=s.process, args=(["x"],)) for s in stages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert together.n_waiting == 0 and not together.broken
        assert all(s.reconciled == 1 for s in stages)
    finally:
        journal.close()


def test_an_object_deleted_while_the_first_list_is_in_flight_stays_deleted(
    store: KubeStore,
) -> None:
    """The list was served after the create and before the delete, and arrives after both
    (as the store's own writes go into its cache): the deleted object must not come back
    (it did, now and then, in the store contract's delete test)."""
    listed, deleted = threading.Event(), threading.Event()

    def list_in_between(kind: str) -> tuple[list[Resource], str]:
        found = store.list_with_version(kind)
        listed.set()
        deleted.wait(10)
        return found

    cache = KindCache("Trace", list_in_between, store._follow)
    cache.put(store.create(_trace("a")))
    cache.start()
    try:
        assert listed.wait(10)
        store.delete("Trace", "a")
        cache.forget("a")
        deleted.set()
        assert cache.ready()
        assert cache.lookup("a") is None
    finally:
        cache.stop()
