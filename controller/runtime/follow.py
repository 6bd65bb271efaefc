"""Following a store's BlockLogs (or Sessions) from another process (`foylectl learn --follow`).

Informer-style: list, reconcile everything listed, then watch from the list's
resourceVersion. Reconciling the listed objects closes the gap between an
earlier pass (`learn_all`) and the watch: a BlockLog written in between would
otherwise wait for its next change. After Gone (the store pruned the history
the watch needed) the same resync runs, over Examples too, because an Example
whose BlockLog was deleted during the gap has no BlockLog event left to see.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.store.base import Gone, Store

log = logging.getLogger(__name__)

Reconcile = Callable[[str], object]


def follow(
    store: Store,
    kind: str,
    label: str,
    reconcile: Reconcile,
    stop: threading.Event | None = None,
) -> None:
    """Reconcile every `kind` object that changes, until `stop` is set; resync after Gone.

    `label` marks the Examples learned from `kind`: only those are resynced.
    """
    stop = stop or threading.Event()
    version = _resync(store, kind, label, reconcile)
    log.info("following %s changes from resourceVersion %s", kind, version)
    while not stop.is_set():
        try:
            for event in store.watch(kind, version, timeout=1.0, stop=stop.is_set):
                version = event.resource_version
                _reconcile_logged(reconcile, event.object["metadata"]["name"])
        except Gone:
            version = _resync(store, kind, label, reconcile)


def _resync(store: Store, kind: str, label: str, reconcile: Reconcile) -> str:
    """Reconcile every `kind` object and every Example learned from one; the watch version."""
    objects, version = store.list_with_version(kind)
    names = {b["metadata"]["name"] for b in objects}
    names |= {e["metadata"]["name"] for e in store.list("Example", label)}
    for name in sorted(names):
        _reconcile_logged(reconcile, name)
    return version


def _reconcile_logged(reconcile: Reconcile, name: str) -> None:
    try:
        reconcile(name)
    except Exception as err:  # one bad object never ends the loop
        log.warning("learn %s failed: %s", name, err)
