"""Foyle training files: one `<name>.example.binpb` per Example in each training directory.

Foyle's agent globs `*.example.binpb` and may read while we write, so each file
is written to a hidden temp file in the same directory (the glob never matches
it) and renamed over the old one: a reader sees the old or the new file, never
half of one. No fsync: the files are derived data, and every start re-reconciles
every Example and rewrites a file whose bytes are not right; two fsyncs per
file were most of a learner reconcile's tail latency. The file name is the Example's `metadata.name`, which
is DNS-1123 safe, never the raw block id (untrusted, may hold `/` or `..`).
A file whose bytes are already right is left alone, so re-reconciling writes
nothing. Temp files a kill left behind are removed when a writer starts, once
they are old enough not to be another process's write in progress (issue 13).
Directories are created 0700 (controller.store.files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from controller.api.kinds import Resource
from controller.api.names import is_valid_name
from controller.learn.foyle_pb import example_to_proto
from controller.store.files import make_private_dirs

log = logging.getLogger(__name__)

SUFFIX = ".example.binpb"
FOYLE_DIMENSIONS = 1536  # Foyle's oai.SmallEmbeddingsDims
NO_EMBEDDING = "NoEmbedding"
EMBEDDING_LENGTH = "EmbeddingLength"


def foyle_skip_reason(embedding: Sequence[float] | None) -> str:
    """Why Foyle's agent would skip this Example's file ("" when it would load it).

    Foyle's InMemoryExampleDB.loadRow rejects any Example whose embedding is
    not exactly 1536 floats, logging an error nobody sees; it never embeds a
    file itself.
    """
    if not embedding:
        return NO_EMBEDDING
    if len(embedding) != FOYLE_DIMENSIONS:
        return EMBEDDING_LENGTH
    return ""


TEMP_GLOB = f".*{SUFFIX}.*.tmp"  # what _atomic_write's mkstemp names
STALE_TEMP_SECONDS = 600.0  # a write takes milliseconds; older temp files were abandoned


class TrainingWriter:
    """Writes and deletes an Example's training file in every configured directory."""

    def __init__(self, dirs: Sequence[Path], now: float | None = None) -> None:
        self.dirs = [Path(d).expanduser() for d in dirs]
        self.remove_stale_temp_files(time.time() if now is None else now)

    def remove_stale_temp_files(self, now: float) -> int:
        """Delete temp files older than STALE_TEMP_SECONDS; returns how many."""
        removed = 0
        for directory in self.dirs:
            for tmp in directory.glob(TEMP_GLOB):
                with contextlib.suppress(FileNotFoundError):
                    if now - tmp.lstat().st_mtime > STALE_TEMP_SECONDS:
                        tmp.unlink()
                        removed += 1
        if removed:
            log.info("removed %d temp files left by an interrupted write", removed)
        return removed

    def path_for(self, directory: Path, name: str) -> Path:
        if not is_valid_name(name):
            raise ValueError(f"not a safe Example name for a training file: {name[:80]!r}")
        return directory / f"{name}{SUFFIX}"

    def write(self, example: Resource, embedding: Sequence[float] | None = None) -> list[str]:
        """Write the Example's file everywhere; returns the paths (written or already right)."""
        data = example_to_proto(example, embedding)
        name = example["metadata"]["name"]
        paths = []
        for directory in self.dirs:
            path = self.path_for(directory, name)
            if _read(path) != data:
                _atomic_write(path, data)
            paths.append(str(path))
        return paths

    def delete(self, name: str) -> None:
        """Remove the Example's file from every directory (absent files are fine)."""
        for directory in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                self.path_for(directory, name).unlink()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
