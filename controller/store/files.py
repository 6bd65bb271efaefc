"""Directories the controller creates, and the state dir's permissions (issue 13).

One policy: every directory the controller creates is 0700, like the 0600
files in it, whatever the umask (mkdir's mode is filtered by it; 0777 under
umask 000). Logs, examples and the store hold commands and their outputs. A
directory that already exists is the user's choice and is left alone, but a
world-writable state dir is worth a warning: anyone could replace the store.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each 0700; existing ones are left as they are."""
    missing = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by a concurrent writer: theirs
            continue
        os.chmod(directory, DIR_MODE)


def world_writable_warning(path: Path) -> str | None:
    """A warning when `path` is a directory every user may write (without the sticky bit)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode) and mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        return (
            f"the state dir {path} is writable by every user (mode {stat.S_IMODE(mode):o}):"
            f" anyone can change what foylectl reads from it; run `chmod 700 {path}`"
        )
    return None
