"""Which file is this? Device, inode and a fingerprint of the first bytes (the I/O half).

A path alone cannot say whether a watermark still applies: logs are renamed,
truncated (copytruncate) and inodes are reused. (device, inode) follows a
file across renames; the hash of its first bytes tells a truncated and
rewritten file, or a new file on a reused inode, from the one we read. This
module observes an open file; logs.transition decides what the observation
means. Reads use os.pread so the caller's file position is left alone.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import BinaryIO

from controller.logs.transition import (
    FINGERPRINT_BYTES,
    FileIdentity,
    Seen,
    fingerprint,
    fingerprint_length,
    same_file,
)


def observe(f: BinaryIO) -> Seen:
    """The open file `f` as it is now."""
    st = os.fstat(f.fileno())
    # one byte more than a fingerprint covers: a file of exactly that size is short
    return Seen(st.st_dev, st.st_ino, st.st_size, os.pread(f.fileno(), FINGERPRINT_BYTES + 1, 0))


def grow_fingerprint(known: FileIdentity, f: BinaryIO) -> FileIdentity:
    """Re-take a short fingerprint once the file is longer, so it tells files apart better.

    Raises ValueError when `f` is no longer the file `known` describes: growing
    the fingerprint of another file would silently adopt that file's content.
    """
    seen = observe(f)  # one read both re-checks and extends the prefix
    if not same_file(known, seen):
        raise ValueError("not the same file: cannot grow its fingerprint")
    length = fingerprint_length(seen.head)
    if length <= known.fingerprint_len:
        return known
    return replace(known, fingerprint=fingerprint(seen.head[:length]), fingerprint_len=length)
