"""Which training files foylectl wrote, for which Example, from which state dir (issue 20).

A training directory is shared: Foyle's own learner (v0.0.37 and later) writes
`<id>.example.binpb` files there too, and several state dirs (an experiment, a
test corpus, the real one) may point at it. So whoever removes a file must
know it is ours, and which state dir's Example it came from. The ledger
records that beside the files, in `<dir>/.foylectl/ledger.db` (Foyle's loader
globs `*.example.binpb` in the directory itself and never looks inside), so it
outlives a deleted state dir, which is the case it exists for:

* a file is recorded with its Example's name, the owner (the state dir that
  wrote it) and the SHA-256 of the bytes written;
* a file is removed only while its bytes are still the ones recorded: a file
  Foyle's learner rewrote since is Foyle's, and is only forgotten;
* an owner is a state dir's id (`<state dir>/training-owner`, made once) and
  path: when that path no longer holds that id, the state dir was deleted and
  its files are abandoned (see `TrainingWriter.remove_abandoned`).

Writes skip fsync (the files are derived data, see training.py): a crash
loses at most the record of files the next reconcile writes and records again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from controller.store.files import make_private_dirs
from controller.store.sqlite_util import open_database

LEDGER_DIR = ".foylectl"
OWNER_FILE = "training-owner"
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file TEXT NOT NULL, owner TEXT NOT NULL, example TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (file, owner)
);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, state_dir TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Owner:
    """A state dir as the owner of training files: a random id kept in it, and its path."""

    id: str
    state_dir: str

    @classmethod
    def of(cls, state_dir: Path) -> Owner:
        """The state dir's owner id, made on first use."""
        path = Path(state_dir).expanduser().resolve()
        marker = path / OWNER_FILE
        with contextlib.suppress(FileNotFoundError):
            return cls(marker.read_text().strip(), str(path))
        make_private_dirs(path)
        with contextlib.suppress(FileExistsError):  # a concurrent first use: theirs wins
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(uuid.uuid4().hex + "\n")
        return cls(marker.read_text().strip(), str(path))

    def is_gone(self) -> bool:
        """True when its state dir was deleted (or replaced by another one).

        Not when its parent is missing too (an unmounted disk) or it cannot be
        read: files are never removed on a doubt.
        """
        state_dir = Path(self.state_dir)
        try:
            return (state_dir / OWNER_FILE).read_text().strip() != self.id
        except FileNotFoundError:
            return state_dir.parent.is_dir()
        except OSError:
            return False


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Record:
    file: str  # the file's name in the directory
    owner: str
    example: str
    sha256: str


class Ledger:
    """The records of one training directory (thread-safe: learners write from workers)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._conn = open_database(directory / LEDGER_DIR / "ledger.db")  # 0600, WAL, autocommit
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def register(self, owner: Owner) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO owners VALUES (?, ?) ON CONFLICT(owner) DO UPDATE"
                " SET state_dir = excluded.state_dir",
                (owner.id, owner.state_dir),
            )

    def record(self, file: str, owner: str, example: str, sha256: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?) ON CONFLICT(file, owner) DO UPDATE"
                " SET example = excluded.example, sha256 = excluded.sha256",
                (file, owner, example, sha256),
            )

    def forget(self, file: str, owner: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM files WHERE file = ? AND owner = ?", (file, owner))

    def records(self, owner: str | None = None) -> list[Record]:
        """Every record, or those of one owner."""
        query = "SELECT file, owner, example, sha256 FROM files"
        args: tuple[str, ...] = ()
        if owner is not None:
            query, args = query + " WHERE owner = ?", (owner,)
        with self._lock:
            return [Record(*row) for row in self._conn.execute(query, args)]

    def owners(self) -> list[Owner]:
        with self._lock:
            rows = self._conn.execute("SELECT owner, state_dir FROM owners").fetchall()
        return [Owner(owner_id, state_dir) for owner_id, state_dir in rows]

    def drop_owner(self, owner: str) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM files WHERE owner = ?", (owner,))
            self._conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))
            self._conn.execute("COMMIT")

    def others_holding(self, file: str, owner: str) -> bool:
        """True when another owner recorded the same file (it must stay)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM files WHERE file = ? AND owner != ? LIMIT 1", (file, owner)
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
