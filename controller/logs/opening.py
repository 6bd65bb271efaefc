"""Opening a log path for reading: regular files only, and symlinks only into the roots.

Anything can sit behind a `*.jsonl` name. A FIFO blocks `open()` until a
writer comes (a worker lost, shutdown stalled); a character device such as
/dev/zero or /dev/urandom never ends and has no stable first bytes; a symlink
can point at any file the user can read, which would then be turned into
resources. So a path is opened with O_NONBLOCK (a FIFO opens at once), checked
on the open handle (no race between a check and the open), and kept only when
it is a regular file and its real path lies inside one of the watched roots,
unless symlinks anywhere are allowed or no roots are given (issue 13). The
real path is opened from its root down without following any symlink
(issue 24), so a directory swapped for a link meanwhile cannot lead outside.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

LOG_SUFFIXES = (".json", ".jsonl")


def is_log_file(path: str) -> bool:
    """A name the log dirs are watched for (other names are read only as rotated files)."""
    return path.endswith(LOG_SUFFIXES)


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
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not roots or symlinks_anywhere:
        return _checked(os.open(path, flags))
    real = os.path.realpath(path)
    root = next((r for r in map(os.path.realpath, roots) if inside(real, [r])), None)
    if root is None:
        if real != os.path.abspath(path):
            raise NotALogFile(f"a symlink to {real}, outside the watched directories")
        raise NotALogFile("outside the watched directories")
    return _checked(_open_beneath(root, real, flags))


def _open_beneath(root: str, real: str, flags: int) -> int:
    """Open `real` from `root` down, one component at a time, following no symlink.

    Checking a path and then opening it races with a directory swapped for a
    symlink in between (O_NOFOLLOW guards only the last component): each
    component is opened relative to the directory opened before it (openat),
    so a symlink appearing anywhere is refused, not followed (issue 24).
    """
    parts = [p for p in os.path.relpath(real, root).split(os.sep) if p not in ("", ".")]
    if not parts:
        raise IsADirectoryError(real)
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                below = os.open(
                    part,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=directory,
                )
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotALogFile("a symlink appeared in its path while it was opened") from err
                raise
            os.close(directory)
            directory = below
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=directory)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise NotALogFile("replaced by a symlink while it was opened") from err
            raise
    finally:
        os.close(directory)


def _checked(fd: int) -> BinaryIO:
    """The open descriptor as a blocking file, if it is a regular file (closed if not)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotALogFile(f"not a regular file ({_file_type(st.st_mode)})")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
