"""Foyle training files: one `<name>.example.binpb` per Example in each training directory.

Foyle's agent globs `*.example.binpb` and may read while we write, so each file
is written to a hidden temp file in the same directory (the glob never matches
it) and renamed over the old one: a reader sees the old or the new file, never
half of one. No fsync: the files are derived data, and every start re-reconciles
every Example and rewrites a file whose bytes are not right; two fsyncs per
file were most of a learner reconcile's tail latency. The file name is Foyle's,
`<id>.example.binpb`, when the id is a safe file name, else the Example's
DNS-1123 `metadata.name` (a raw id is untrusted: it may hold `/` or `..`).
A file whose bytes are already right is left alone, so re-reconciling writes
nothing. Temp files a kill left behind are removed when a writer starts, once
they are old enough not to be another process's write in progress (issue 13).
Directories are created 0700 (controller.store.files).

Every file written is recorded in the directory's ledger (controller.index.ledger,
issue 20) with its Example and its owner, the state dir: a file is removed only
while it holds the bytes this writer recorded, so a file Foyle's own learner
wrote is never removed; `prune` removes the files whose Example is gone, and a
writer starting removes the files of state dirs deleted since they wrote them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from controller.api.kinds import Resource
from controller.api.names import is_hashed, is_valid_name
from controller.index.ledger import LEDGER_DIR, Ledger, Owner, digest
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


_SAFE_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
TEMP_GLOB = f".*{SUFFIX}.*.tmp"  # what _atomic_write's mkstemp names
STALE_TEMP_SECONDS = 600.0  # a write takes milliseconds; older temp files were abandoned


class TrainingWriter:
    """Writes, records and deletes an Example's training file in every configured directory."""

    def __init__(
        self, dirs: Sequence[Path], now: float | None = None, owner: Owner | None = None
    ) -> None:
        self.dirs = [Path(d).expanduser() for d in dirs]
        self.owner = owner or Owner("", "")  # anonymous: recorded, never found abandoned
        self._lock = threading.Lock()
        self._ledgers: dict[Path, Ledger] = {}
        self._recorded: dict[Path, dict[str, tuple[str, str]]] = {}  # see _records
        self.remove_stale_temp_files(time.time() if now is None else now)
        self.remove_abandoned()

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

    def file_name(self, example: Resource) -> str:
        """Foyle's own name for the Example's file, `<id>.example.binpb`, where the id is safe.

        Foyle's learners name a file after the Example's id, so a training dir
        holds one file per id whichever learner wrote it last (issue 20: Foyle
        v0.0.37+ learns the same sessions in-process). An id that is not a safe
        file name (untrusted: it may hold `/` or `..`) uses the Example's
        DNS-1123 `metadata.name` instead.
        """
        raw_id = example["spec"].get("id")
        if isinstance(raw_id, str) and _SAFE_FILE_ID.fullmatch(raw_id) and ".." not in raw_id:
            return raw_id + SUFFIX
        return self._checked(example["metadata"]["name"]) + SUFFIX

    @staticmethod
    def _checked(name: str) -> str:
        if not is_valid_name(name):
            raise ValueError(f"not a safe Example name for a training file: {name[:80]!r}")
        return name

    def write(self, example: Resource, embedding: Sequence[float] | None = None) -> list[str]:
        """Write the Example's file everywhere; returns the paths (written or already right)."""
        data = example_to_proto(example, embedding)
        name = self._checked(example["metadata"]["name"])
        file = self.file_name(example)
        sha256 = digest(data)
        paths = []
        for directory in self.dirs:
            path = directory / file
            if _read(path) != data:
                _atomic_write(path, data)
            recorded = self._records(directory)
            if recorded.get(name) != (file, sha256):
                previous = recorded.get(name)
                if previous is not None and previous[0] != file:
                    self._remove(directory, name)
                self._remove_legacy_file(directory, name, file)
                self._ledger(directory).record(file, self.owner.id, name, sha256)
                recorded[name] = (file, sha256)
            paths.append(str(path))
        return paths

    @staticmethod
    def _remove_legacy_file(directory: Path, name: str, file: str) -> None:
        """Before issue 20 a file was named after a hashed `metadata.name`, a name no Foyle
        learner writes (name_for_id's `-h<base32>` form): it would duplicate the id."""
        legacy = name + SUFFIX
        if legacy != file and is_hashed(name):
            with contextlib.suppress(FileNotFoundError):
                (directory / legacy).unlink()

    def delete(self, name: str) -> None:
        """Remove the Example's file from every directory where it is still what we wrote."""
        self._checked(name)
        for directory in self.dirs:
            self._remove(directory, name)

    def prune(self, live: set[str]) -> int:
        """Remove this owner's files whose Example is not in `live`; returns how many."""
        removed = 0
        for directory in self.dirs:
            for name in list(self._records(directory)):
                if name not in live and self._remove(directory, name):
                    removed += 1
        return removed

    def remove_abandoned(self) -> int:
        """Remove the files of state dirs deleted since they wrote them; returns how many.

        This ties a training dir to the state dirs writing into it: a throw-away
        state dir deleted leaves nothing behind in Foyle's directory once any
        foylectl learns there again. Files of other live state dirs are named
        in a warning, never touched.
        """
        removed = 0
        for directory in self.dirs:
            if not (directory / LEDGER_DIR).is_dir():
                continue
            ledger = self._ledger(directory)
            for owner in ledger.owners():
                if owner.id == self.owner.id:
                    continue
                records = ledger.records(owner.id)
                if not owner.is_gone():
                    if records:
                        log.warning(
                            "training dir %s also holds %d files of the state dir %s",
                            directory,
                            len(records),
                            owner.state_dir,
                        )
                    continue
                gone = [
                    r
                    for r in records
                    if self._remove_if_ours(ledger, directory, r.file, owner.id, r.sha256)
                ]
                ledger.drop_owner(owner.id)
                removed += len(gone)
                log.info(
                    "removed %d training files of %s from %s: that state dir was deleted",
                    len(gone),
                    owner.state_dir,
                    directory,
                )
        return removed

    def _remove(self, directory: Path, name: str) -> bool:
        """Remove the Example's file if it still holds our bytes; forget it either way."""
        record = self._records(directory).pop(name, None)
        if record is None:
            return False
        file, sha256 = record
        return self._remove_if_ours(self._ledger(directory), directory, file, self.owner.id, sha256)

    @staticmethod
    def _remove_if_ours(
        ledger: Ledger, directory: Path, file: str, owner: str, sha256: str
    ) -> bool:
        ledger.forget(file, owner)
        if ledger.others_holding(file, owner) or digest(_read(directory / file) or b"") != sha256:
            return False  # another state dir still has it, or someone (Foyle) rewrote it
        with contextlib.suppress(FileNotFoundError):
            (directory / file).unlink()
            return True
        return False

    def _ledger(self, directory: Path) -> Ledger:
        with self._lock:  # the BlockLog and Session learners share a writer
            if directory not in self._ledgers:
                ledger = self._ledgers[directory] = Ledger(directory)
                if self.owner.id:
                    ledger.register(self.owner)
            return self._ledgers[directory]

    def _records(self, directory: Path) -> dict[str, tuple[str, str]]:
        """This owner's files in `directory`: Example name -> (file, sha256)."""
        ledger = self._ledger(directory)
        with self._lock:
            if directory not in self._recorded:
                self._recorded[directory] = {
                    r.example: (r.file, r.sha256) for r in ledger.records(self.owner.id)
                }
            return self._recorded[directory]


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
