"""Opening a log path for reading: regular files only, and symlinks only into the roots.

Anything can sit behind a `*.jsonl` name. A FIFO blocks `open()` until a
writer comes (a worker lost, shutdown stalled); a character device such as
/dev/zero or /dev/urandom never ends and has no stable first bytes; a symlink
can point at any file the user can read, which would then be turned into
resources. So a path is opened with O_NONBLOCK (a FIFO opens at once), checked
on the open handle (no race between a check and the open), and kept only when
it is a regular file and, reached through a symlink, one whose real path lies
inside one of the watched roots, unless symlinks anywhere are allowed or no
roots are given (issue 13).
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


class NotALogFile(OSError):
    """The path is no regular file inside the roots: reported once, never read."""


def inside(path: str, roots: Sequence[str]) -> bool:
    """True when `path` (already resolved) lies in one of `roots` (resolved here)."""
    target = Path(path)
    return any(target.is_relative_to(Path(os.path.realpath(root))) for root in roots)


def open_log_file(path: str, roots: Sequence[str], *, symlinks_anywhere: bool) -> BinaryIO:
    """The path opened for binary reading, or NotALogFile saying why it is not read.

    Raises FileNotFoundError, PermissionError and other OSErrors as open() does.
    """
    real = os.path.realpath(path)
    # A path that is no link is read where it is: the journal's paths from a run with
    # other log dirs included. Only a link's target must stay inside the roots.
    confine = bool(roots) and not symlinks_anywhere and real != os.path.abspath(path)
    if confine and not inside(real, roots):
        raise NotALogFile(f"a symlink to {real}, outside the watched directories")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if roots and not symlinks_anywhere and not confine:
        flags |= os.O_NOFOLLOW  # no link when looked at: none may appear before the open
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotALogFile(f"not a regular file ({_file_type(st.st_mode)})")
        if confine and not _is_file_at(st, real):
            raise NotALogFile("replaced by another file while it was opened")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_file_at(st: os.stat_result, path: str) -> bool:
    """The handle is the file at `path` (a link swapped between check and open is not)."""
    try:
        at = os.stat(path)
    except OSError:
        return False
    return (at.st_dev, at.st_ino) == (st.st_dev, st.st_ino)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "of an unknown type"
