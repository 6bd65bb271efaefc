"""Following a store's BlockLogs from another process (`foylectl learn --follow`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.store.base import Gone, Store

log = logging.getLogger(__name__)


def follow_blocklogs(
    store: Store, reconcile: Callable[[str], object], stop: threading.Event | None = None
) -> None:
    """Reconcile every BlockLog that changes, until `stop` is set; re-list after Gone."""
    stop = stop or threading.Event()
    items, version = store.list_with_version("BlockLog")
    while not stop.is_set():
        try:
            for event in store.watch("BlockLog", version, timeout=1.0, stop=stop.is_set):
                version = event.resource_version
                try:
                    reconcile(event.object["metadata"]["name"])
                except Exception as err:  # one bad object never ends the loop
                    log.warning("learn %s failed: %s", event.object["metadata"]["name"], err)
        except Gone:
            items, version = store.list_with_version("BlockLog")
            for obj in items:
                reconcile(obj["metadata"]["name"])
