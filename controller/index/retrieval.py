"""The retrieval index: find the Examples whose queries are nearest a new query.

One SQLite file holds every indexed Example (its query text and JSON) and is
updated a batch of Examples at a time, so there is never a full rebuild, and a
restart finds everything already there.

Two ways to rank, one file:

* default, no network and no model: SQLite's FTS5 full-text index with its
  built-in BM25 ranking (`bm25()`), porter-stemmed, so "listing pods" finds
  "list the pods". Score = -bm25 (higher is nearer).
* with an Embedder: each query text's vector is stored as a float32 BLOB,
  unit-normalised, and search is a brute-force cosine top-k as in Foyle's
  in-memory example DB. A vector is tagged with a hash of (embedder name,
  query text), so only new or changed texts, or texts last embedded by another
  model, are ever sent to the embedder. Score = cosine similarity.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import threading
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.index.embedders import (
    Embedder,
    EmbeddingError,
    EmbeddingOutage,
    EmbeddingRejected,
    EmbeddingUnavailable,
)
from controller.store.sqlite_util import open_database

MAX_QUERY_TERMS = 256  # bounds the cost of a BM25 search on a whole notebook's text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    query_text TEXT NOT NULL,
    example_json TEXT NOT NULL,
    embedding BLOB,
    embedding_key TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS examples_fts USING fts5(
    query_text, tokenize = 'porter unicode61'
);
"""

SearchHit = tuple[str, float, str]  # (Example name, score, Example JSON)


@dataclass(frozen=True)
class IndexWrite:
    """One Example's row as `ExampleIndex.apply` writes it (`vector` None: kept as it is)."""

    name: str
    query_text: str
    example_json: str
    vector: bytes | None
    key: str | None


BM25_CANDIDATES = 10  # candidates read per hit wanted, re-ranked by the share of words


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class ExampleIndex:
    """Incremental, persistent example retrieval over one SQLite file (mode 0600, WAL)."""

    def __init__(
        self, path: Path, embedder: Embedder | None = None, outage: EmbeddingOutage | None = None
    ) -> None:
        self.path = Path(path)
        self._embedder = embedder
        self.outage = outage or EmbeddingOutage()
        self._conn = open_database(self.path)
        self._lock = threading.Lock()  # one connection, shared by the reconciler's workers
        with self._lock:
            self._conn.executescript(_SCHEMA)  # idempotent; each statement is atomic

    @property
    def embeds(self) -> bool:
        """True when queries are embedded (vectors for Foyle's files); False: BM25 only."""
        return self._embedder is not None

    def upsert(self, name: str, query_text: str, example_json: str) -> None:
        """Add or replace one Example; embeds only when its text (or the model) is new."""
        write = self.prepared(name, query_text, example_json)
        if write is not None:
            self.apply([write])

    def prepared(self, name: str, query_text: str, example_json: str) -> IndexWrite | None:
        """What `apply` must write for this Example (None: indexed as it is already),
        its vector made when its text (or the model) is new, outside any transaction:
        a slow network call must block neither searches nor other writers."""
        key = self._key(query_text)
        with self._lock:
            row = self._conn.execute(
                "SELECT query_text, example_json, embedding_key FROM examples WHERE name = ?",
                (name,),
            ).fetchone()
        needs_vector = key is not None and (row is None or row[2] != key)
        if row is not None and row[:2] == (query_text, example_json) and not needs_vector:
            return None
        vector = self._vector(name, query_text) if needs_vector else None
        return IndexWrite(name, query_text, example_json, vector, key)

    def apply(self, writes: list[IndexWrite]) -> None:
        """Write prepared Examples in one transaction. FTS5 writes a segment per commit:
        one commit per Example cost ~11 pages each, 3.5x the CPU of 64 in one (issue 23)."""
        if not writes:
            return
        with self._transaction() as conn:
            for write in writes:
                self._write(conn, write)

    @staticmethod
    def _write(conn: sqlite3.Connection, write: IndexWrite) -> None:
        conn.execute(
            "INSERT INTO examples (name, query_text, example_json) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET"
            " query_text = excluded.query_text, example_json = excluded.example_json",
            (write.name, write.query_text, write.example_json),
        )
        (rowid,) = conn.execute("SELECT id FROM examples WHERE name = ?", (write.name,)).fetchone()
        if write.vector is not None:
            conn.execute(
                "UPDATE examples SET embedding = ?, embedding_key = ? WHERE id = ?",
                (write.vector, write.key, rowid),
            )
        conn.execute("DELETE FROM examples_fts WHERE rowid = ?", (rowid,))
        conn.execute(
            "INSERT INTO examples_fts (rowid, query_text) VALUES (?, ?)", (rowid, write.query_text)
        )

    def delete(self, name: str) -> None:
        """Forget one Example (absent is fine)."""
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM examples WHERE name = ?", (name,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM examples_fts WHERE rowid = ?", row)
                conn.execute("DELETE FROM examples WHERE id = ?", row)

    def search(self, text: str, k: int = 3) -> list[SearchHit]:
        """The `k` nearest Examples to `text`, nearest first."""
        if k <= 0:
            return []
        return self._search_vectors(text, k) if self._embedder else self._search_bm25(text, k)

    def embedding(self, name: str) -> list[float] | None:
        """The Example's current (unit-length) query vector, None without a fresh one."""
        if self._embedder is None:  # no vector is fresh without one (`_key`): no read
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT query_text, embedding, embedding_key FROM examples WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None or row[1] is None or row[2] != self._key(row[0]):
            return None
        return list(_floats(row[1]))

    def names(self) -> set[str]:
        with self._lock:
            return {n for (n,) in self._conn.execute("SELECT name FROM examples")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM examples").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- ranking ----

    def _search_bm25(self, text: str, k: int) -> list[SearchHit]:
        """Examples sharing words with `text`; the score is the cosine of the two word sets.

        BM25 alone scores a word near 0 once it is in half the examples or more,
        so an exact match in a small index showed 0.000 (issue 13); the share of
        the query's words alone tied every example holding the same ones (0.500
        each, issue 22). The cosine also weighs what the example holds beyond the
        query: 1.0 only for the same words. BM25 ranks candidates and breaks ties.
        """
        terms = list(dict.fromkeys(_words(text)))[:MAX_QUERY_TERMS]
        if not terms:
            return []
        # Quoted terms ORed: any shared word counts, BM25 weighs the rare ones.
        match = " OR ".join(f'"{t}"' for t in terms)
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.name, -bm25(examples_fts), e.query_text, e.example_json"
                " FROM examples_fts JOIN examples e ON e.id = examples_fts.rowid"
                " WHERE examples_fts MATCH ? ORDER BY bm25(examples_fts), e.name LIMIT ?",
                (match, max(k * BM25_CANDIDATES, k)),
            ).fetchall()
        scored = []
        for name, bm25, query_text, body in rows:
            words = set(_words(query_text))
            shared = sum(1 for t in terms if t in words)
            cosine = shared / math.sqrt(len(terms) * len(words)) if words else 0.0
            scored.append((cosine, float(bm25), name, body))
        scored.sort(key=lambda hit: (-hit[0], -hit[1], hit[2]))
        return [(name, share, body) for share, _, name, body in scored[:k]]

    def _search_vectors(self, text: str, k: int) -> list[SearchHit]:
        self._embed_stale()
        query = _floats(self._embed([text])[0])
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, embedding, example_json FROM examples WHERE embedding IS NOT NULL"
            ).fetchall()
        scored = (
            (sum(a * b for a, b in zip(query, _floats(blob), strict=False)), name, body)
            for name, blob, body in rows
        )
        best = sorted(scored, key=lambda hit: (-hit[0], hit[1]))[:k]  # ties: by name
        return [(name, float(score), body) for score, name, body in best]

    def _embed_stale(self) -> None:
        """Embed the texts indexed without a vector from this embedder (e.g. before it was set)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, query_text, embedding_key FROM examples"
            ).fetchall()
        stale = [(rowid, text) for rowid, text, key in rows if key != self._key(text)]
        if not stale:
            return
        vectors = self._embed([text for _, text in stale])
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE examples SET embedding = ?, embedding_key = ?"
                " WHERE id = ? AND query_text = ?",
                [
                    (vector, self._key(text), rowid, text)
                    for (rowid, text), vector in zip(stale, vectors, strict=True)
                ],
            )

    def _vector(self, name: str, text: str) -> bytes:
        """One Example's vector; EmbeddingUnavailable while the service cannot give it."""
        self.outage.check(name)
        try:
            [vector] = self._embed([text])
        except EmbeddingRejected:
            raise
        except EmbeddingError as err:
            self.outage.failed(name, err)
            raise EmbeddingUnavailable(str(err)) from err
        self.outage.succeeded(name)
        return vector

    def _embed(self, texts: list[str]) -> list[bytes]:
        """Unit-length float32 vectors (so cosine similarity is a dot product)."""
        assert self._embedder is not None
        out = []
        for vector in self._embedder.embed(texts):
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            out.append(array("f", (x / norm for x in vector)).tobytes())
        return out

    def _key(self, text: str) -> str | None:
        """Which (model, text) a vector was made from; None without an embedder."""
        if self._embedder is None:
            return None
        digest = hashlib.sha256(f"{self._embedder.name}\0{text}".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


def _floats(blob: bytes) -> array[float]:
    vector = array("f")
    vector.frombytes(blob)
    return vector
