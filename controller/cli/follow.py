"""Following a store's BlockLogs (or Sessions) from another process (`foylectl learn --follow`).

Informer-style: list, queue everything listed, then watch from the list's
resourceVersion, queueing each changed name into a `Controller`, so the
learner runs under the same worker loop and retry rules as in `run`.
Queueing the listed objects closes the gap between an earlier pass
(`learn_all`) and the watch: a BlockLog written in between would otherwise
wait for its next change. After Gone (the store pruned the history the watch
needed) the same resync runs, over Examples too, because an Example whose
BlockLog was deleted during the gap has no BlockLog event left to see.
"""

from __future__ import annotations

import logging
import threading

from controller.runtime.controller import Controller
from controller.store.base import Gone, Store

log = logging.getLogger(__name__)


def follow(
    store: Store,
    kind: str,
    label: str,
    controller: Controller,
    stop: threading.Event,
) -> None:
    """Queue every `kind` object that changes into `controller` until `stop`; resync after Gone.

    `label` marks the Examples learned from `kind`: only those are resynced.
    """
    version = _resync(store, kind, label, controller)
    log.info("following %s changes from resourceVersion %s", kind, version)
    while not stop.is_set():
        try:
            for event in store.watch(kind, version, timeout=1.0, stop=stop.is_set):
                version = event.resource_version
                controller.add(event.object["metadata"]["name"])
        except Gone:
            version = _resync(store, kind, label, controller)


def _resync(store: Store, kind: str, label: str, controller: Controller) -> str:
    """Queue every `kind` object and every Example learned from one; the watch version."""
    objects, version = store.list_with_version(kind)
    names = {b["metadata"]["name"] for b in objects}
    names |= {e["metadata"]["name"] for e in store.list("Example", label)}
    for name in sorted(names):
        controller.add(name)
    return version
