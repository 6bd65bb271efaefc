"""Which file is this? Device, inode and a fingerprint of the first bytes.

A path alone cannot say whether a watermark still applies: logs are renamed,
truncated (copytruncate) and inodes are reused. (device, inode) follows a
file across renames; the hash of its first bytes tells a truncated and
rewritten file, or a new file on a reused inode, from the one we read.
Reads use os.pread so the caller's file position is left alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from typing import BinaryIO

FINGERPRINT_BYTES = 1024


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int
    fingerprint: str  # hex sha256[:32] of the first fingerprint_len bytes
    fingerprint_len: int  # min(size, FINGERPRINT_BYTES) when taken


def identify(f: BinaryIO) -> FileIdentity:
    """The identity of the open file `f` as it is now."""
    st = os.fstat(f.fileno())
    head = _head(f, FINGERPRINT_BYTES)
    return FileIdentity(st.st_dev, st.st_ino, _hash(head), len(head))


def still_same(known: FileIdentity, f: BinaryIO) -> bool:
    """True when `f` is the file `known` was taken from, with its first bytes unchanged."""
    return _same_file(known, f) and _extends(known, _head(f, known.fingerprint_len))


def grow_fingerprint(known: FileIdentity, f: BinaryIO) -> FileIdentity:
    """Re-take a short fingerprint once the file is longer, so it tells files apart better.

    Raises ValueError when `f` is no longer the file `known` describes: growing
    the fingerprint of another file would silently adopt that file's content.
    """
    head = _head(f, FINGERPRINT_BYTES)  # one read both re-checks and extends the prefix
    if not (_same_file(known, f) and _extends(known, head)):
        raise ValueError("not the same file: cannot grow its fingerprint")
    if len(head) <= known.fingerprint_len:
        return known
    return replace(known, fingerprint=_hash(head), fingerprint_len=len(head))


def _same_file(known: FileIdentity, f: BinaryIO) -> bool:
    st = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (known.device, known.inode)


def _extends(known: FileIdentity, head: bytes) -> bool:
    """`head` starts with the bytes `known` was fingerprinted from."""
    prefix = head[: known.fingerprint_len]
    return len(prefix) == known.fingerprint_len and _hash(prefix) == known.fingerprint


def _head(f: BinaryIO, length: int) -> bytes:
    return os.pread(f.fileno(), length, 0) if length else b""


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
