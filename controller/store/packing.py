"""Bodies as SQLite keeps them: JSON text, deflated when that saves room.

Why: a store and journal that hold every Trace's request and response and every
BlockLog's notebook took 3 to 5 bytes per log byte (issue 23); JSON of this
shape deflates 3 to 5 times at level 1 for a few microseconds a kilobyte. A
body is only ever parsed by Python (no SQL reads inside it), so what is stored
need not be JSON. Plain JSON (written before, or too short to gain) starts with
`{` and is read as it is; a deflated body starts with zlib's header byte.
"""

from __future__ import annotations

import zlib

LEVEL = 1  # the fastest level: most of the gain, a fraction of the time of the default
MIN_BYTES = 200  # shorter bodies gain less than zlib's own overhead


def pack(text: bytes) -> bytes:
    """The bytes to store for the JSON `text`."""
    if len(text) < MIN_BYTES:
        return text
    return zlib.compress(text, LEVEL)


def unpack(stored: bytes | str) -> bytes | str:
    """The JSON text of a stored body (either form)."""
    if isinstance(stored, str) or stored[:1] == b"{":
        return stored
    return zlib.decompress(stored)
