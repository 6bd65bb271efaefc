"""Keeping the long-running process's resident memory flat (glibc only; a no-op elsewhere).

Many threads allocate and free kilobyte-sized JSON documents; glibc gives each
thread its own malloc arena and keeps freed memory in them, so the resident size
creeps up with the amount of data processed rather than with what is live.
Two arenas and a periodic `malloc_trim` keep it proportional to what is live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def limit_arenas() -> None:
    """Call once at start-up, before the worker threads exist."""
    if _LIBC is not None and not _LIBC.mallopt(M_ARENA_MAX, ARENAS):
        log.debug("mallopt(M_ARENA_MAX) refused")


def release_free_memory() -> None:
    """Return freed heap memory to the system (cheap; run from a periodic timer)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
