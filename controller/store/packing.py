"""Bodies as SQLite keeps them: JSON text, packed with zstd and a dictionary.

Why: a store and journal that hold every Trace's request and response and every
BlockLog's notebook took 3 to 5 bytes per log byte (issue 23). A body is packed
on its own (one row, one frame), and a kilobyte of JSON alone packs only about
2 times: its keys and structure are new to every frame. With a dictionary of
what bodies look like (`bodies.zdict`, trained by hack/train_body_dict.py)
zstd packs them 5 to 6 times for a few microseconds each, a third of zlib's
time. A body is only ever parsed by Python (no SQL reads inside it), so what is
stored need not be JSON. Plain JSON (an earlier store) starts with `{` and is
read as it is; a frame names its dictionary's id, so a retrained dictionary
(a new id, a new file) leaves the old frames readable.
"""

from __future__ import annotations

import threading
from pathlib import Path

import zstandard

LEVEL = 1  # the fastest level: with the dictionary, higher levels gain ~2 % more
_DICTIONARIES = {
    d.dict_id(): d
    for d in (
        zstandard.ZstdCompressionDict(path.read_bytes())
        for path in sorted(Path(__file__).parent.glob("bodies*.zdict"))
    )
}
_CURRENT = max(_DICTIONARIES, default=None)  # None: no dictionary installed, plain JSON
_local = threading.local()  # zstd (de)compressors are not thread-safe: one per thread


class UnreadableBody(ValueError):
    """A stored body that is damaged, or packed with a dictionary this version lacks."""


def pack(text: bytes) -> bytes:
    """The bytes to store for the JSON `text`."""
    if _CURRENT is None:
        return text
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=_DICTIONARIES[_CURRENT], write_checksum=False
        )
    packed: bytes = compressor.compress(text)
    return packed


def unpack(stored: bytes | str) -> bytes | str:
    """The JSON text of a stored body (either form)."""
    if isinstance(stored, str) or stored[:1] == b"{":
        return stored
    try:
        dict_id = zstandard.get_frame_parameters(stored).dict_id
        text: bytes = _decompressor(dict_id).decompress(stored)
    except zstandard.ZstdError as e:
        raise UnreadableBody(f"a stored body is damaged ({e})") from None
    return text


def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    decompressors = getattr(_local, "decompressors", None)
    if decompressors is None:
        decompressors = _local.decompressors = {}
    decompressor = decompressors.get(dict_id)
    if decompressor is None:
        if dict_id not in _DICTIONARIES:
            raise UnreadableBody(
                f"a body packed with dictionary {dict_id}: written by a later foyle-controller"
            )
        decompressor = decompressors[dict_id] = zstandard.ZstdDecompressor(
            dict_data=_DICTIONARIES[dict_id]
        )
    return decompressor
