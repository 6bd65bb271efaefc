"""Units of work: several reconciles committed in one transaction per database.

Why: during catch-up a worker handles thousands of keys, and one SQLite
commit per write was most of the cost. A worker may take several keys from
its queue and run them inside `unit_of_work(journal, store)`: one
transaction on each database, committed together at the end (a failure rolls
back the whole unit; the worker then retries its keys one unit each).

Follow-ups that make other workers read what this unit wrote (enqueueing
keys) must wait for the commit, or the other worker could read the old state
and consume the hint: `after_commit(fn)` runs `fn` after the unit commits, or
at once outside a unit. A failed unit's follow-ups are dropped with its writes.

Commit order is the order of exit: resources are entered in the order given
and committed in reverse, so `unit_of_work(journal, store)` commits the store
first; a crash between the two leaves the journal's dirty marks in place and
the work is redone, never lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol, runtime_checkable


@runtime_checkable
class Transactional(Protocol):
    def transaction(self) -> AbstractContextManager[None]: ...


_local = threading.local()


def _hooks() -> list[Callable[[], None]] | None:
    return getattr(_local, "hooks", None)


def after_commit(fn: Callable[[], None]) -> None:
    """Run `fn` once the current unit commits (at once when no unit is open)."""
    hooks = _hooks()
    if hooks is None:
        fn()
    else:
        hooks.append(fn)


@contextmanager
def unit_of_work(*resources: Transactional) -> Iterator[None]:
    """One transaction on each resource for the block; follow-ups run after the commit."""
    if _hooks() is not None:  # nested: part of the enclosing unit
        yield
        return
    _local.hooks = []
    try:
        with ExitStack() as stack:
            for resource in resources:
                stack.enter_context(resource.transaction())
            yield
        hooks = _local.hooks
    finally:
        _local.hooks = None
    for fn in hooks:
        fn()
