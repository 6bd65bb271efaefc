"""What became of the file at a path since it was last read: a pure decision.

The reconciler observes the path (device, inode, size, first bytes: a `Seen`)
and holds what the journal knows of it (a `FileIdentity` and a watermark);
`change()` says which of seven things happened, with no I/O, so every case is a
row in a table test:

    GONE       nothing at the path
    NEW        nothing known at the path
    SAME       the file read before, no new bytes
    GROWN      the file read before, longer
    SHRUNK     the file read before, shorter than the watermark but its first bytes
               unchanged (a last newline removed and put back): go on at the
               watermark, since reading from 0 would count every line twice
    TRUNCATED  same device and inode, but its first bytes changed or are gone
               (copytruncate, rewrite in place): the only case that starts again at 0
    REPLACED   another file at the path (rename+create rotation, inode reuse)

A file renamed from elsewhere is the REPLACED (or NEW) file that continues a
row the journal knows under another path: `continues()` on that row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

FINGERPRINT_BYTES = 1024
ROTATE_WAIT = 5.0  # seconds a rotated file's writer may be quiet before it is let go
# (Fluent Bit's Rotate_Wait is 5 s too)


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int
    fingerprint: str  # hex sha256[:32] of the first fingerprint_len bytes
    fingerprint_len: int  # min(size, FINGERPRINT_BYTES) when taken


@dataclass(frozen=True)
class Seen:
    """A path's file as it is now: which file, how long, its first bytes."""

    device: int
    inode: int
    size: int
    head: bytes  # the first FINGERPRINT_BYTES + 1 bytes (fewer in a shorter file)

    def identity(self) -> FileIdentity:
        length = fingerprint_length(self.head)
        return FileIdentity(self.device, self.inode, fingerprint(self.head[:length]), length)


class Change(Enum):
    GONE = "gone"
    NEW = "new"
    SAME = "same"
    GROWN = "grown"
    SHRUNK = "shrunk"
    TRUNCATED = "truncated"
    REPLACED = "replaced"


def change(known: FileIdentity | None, watermark: int, seen: Seen | None) -> Change:
    """Which change turns the file `known` (read up to `watermark`) into what is `seen`."""
    if seen is None:
        return Change.GONE
    if known is None:
        return Change.NEW
    if (seen.device, seen.inode) != (known.device, known.inode):
        return Change.REPLACED
    if not starts_like(known, seen.head):
        return Change.TRUNCATED
    if seen.size < watermark:
        return Change.SHRUNK
    return Change.GROWN if seen.size > watermark else Change.SAME


def continues(known: FileIdentity, watermark: int, seen: Seen) -> bool:
    """`seen` is the file `known` describes, so reading goes on from `watermark`."""
    return change(known, watermark, seen) in (Change.SAME, Change.GROWN, Change.SHRUNK)


def same_file(known: FileIdentity, seen: Seen) -> bool:
    """Same device, inode and first bytes, whatever the size."""
    return (seen.device, seen.inode) == (known.device, known.inode) and starts_like(
        known, seen.head
    )


def starts_like(known: FileIdentity, head: bytes) -> bool:
    """`head` starts with the bytes `known` was fingerprinted from."""
    prefix = head[: known.fingerprint_len]
    return len(prefix) == known.fingerprint_len and fingerprint(prefix) == known.fingerprint


def fingerprint_length(head: bytes) -> int:
    """How many first bytes of a file its fingerprint covers, given up to
    FINGERPRINT_BYTES + 1 of them: all but the last of a file that short.

    A writer may take a last newline away and put it back; a fingerprint over
    every byte of a short file would call that a truncation and read the file
    again from 0 (issue 24). One byte is the least that tells a file from empty.
    """
    return min(FINGERPRINT_BYTES, max(len(head) - 1, min(len(head), 1)))


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
