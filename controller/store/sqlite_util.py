"""Opening SQLite databases the way every part of the controller needs them."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from controller.store.base import StoreUnavailable


def open_database(path: Path, busy_timeout_ms: int = 30000) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, the file created 0600.

    WAL lets `foylectl get` read while `foylectl run` writes; the busy timeout
    makes writers from several processes wait for each other instead of
    failing with SQLITE_BUSY (Foyle's issue with a shared SQLite DB).
    Transactions are explicit (isolation_level=None).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        raise StoreUnavailable(
            f"cannot open the database {path}: {err}. Move it aside and run `foylectl analyze`"
            " (or restart `foylectl run`) to rebuild it from the logs."
        ) from err
    return conn
