"""The garbage collector as `foylectl run` and `analyze` set it (runtime/collector.py):
young collections rarer, and reference cycles still collected, so garbage stays
bounded by the threshold, not by how long the process runs."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from controller.runtime.collector import YOUNG_THRESHOLD, collect_rarely


class _Node:
    """An object in a reference cycle with itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    collect_rarely()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_cycles_made_after_start_up_are_collected_along_the_way(tuned: None) -> None:
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    alive: weakref.WeakSet[_Node] = weakref.WeakSet()
    made = 6 * YOUNG_THRESHOLD
    for _ in range(made):
        alive.add(_Node())
    # Each node is garbage as soon as the next is made; without young collections
    # every one would still be alive here.
    assert len(alive) < 2 * YOUNG_THRESHOLD < made
