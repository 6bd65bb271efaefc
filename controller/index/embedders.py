"""Embedders turn query texts into vectors for the retrieval index.

The index works without one (SQLite FTS5 / BM25); an embedder is used when
configured, e.g. OpenAI's `text-embedding-3-small`, the model Foyle used. The
OpenAI client is a few lines of urllib: one POST, no SDK to install or import
at start-up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Protocol

from controller.api.result import TerminalError

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "text-embedding-3-small"
FOYLE_DIMENSIONS = 1536  # Foyle's oai.SmallEmbeddingsDims: its loader skips any other length
AZURE_API_VERSION = "2024-02-01"  # Foyle's oai.AzureOpenAIVersion
UNAVAILABLE_REASON = "EmbeddingUnavailable"  # an Example's status.reason while it waits
log = logging.getLogger(__name__)
# The API refuses the input itself (too long, malformed): asking again cannot succeed.
REJECTED_INPUT = frozenset({400, 413, 422})


class Embedder(Protocol):
    """`name` identifies the vector space: vectors from different names never mix."""

    name: str

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class EmbeddingError(RuntimeError):
    """The embedding service failed; the message says why (never the API key)."""


class EmbeddingRejected(EmbeddingError, TerminalError):
    """The service refused this input (HTTP 400, 413, 422): not retried."""


class EmbeddingUnavailable(EmbeddingError):
    """The service cannot be used now (unreachable, failing, refusing the key): try later."""


FIRST_RETRY_SECONDS = 2.0  # an outage's first wait: a blip costs seconds, not a minute
RETRY_EMBEDDING_SECONDS = 60.0  # the longest wait between two tries during an outage


class EmbeddingOutage:
    """The embedding service failing: one warning per outage, not one per Example (issue 20).

    After a failure one caller at a time may try the service again (a probe), first
    after FIRST_RETRY_SECONDS, then after twice as long each time the probe fails, up
    to RETRY_EMBEDDING_SECONDS. Every other Example needing a vector meanwhile waits at
    once (`check` raises) instead of each paying a timeout and a warning, and is looked
    at again in `retry_in()` seconds. `waiting` holds the names waiting now, for
    summaries; a success ends the outage with one info line.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        first_retry: float = FIRST_RETRY_SECONDS,
        longest_retry: float = RETRY_EMBEDDING_SECONDS,
    ) -> None:
        self._clock = clock
        self._first_retry = first_retry
        self._longest_retry = longest_retry
        self._interval = first_retry
        self._lock = threading.Lock()
        self._last_try: float | None = None  # None: no outage
        self._error = ""
        self.waiting: set[str] = set()

    def check(self, name: str) -> None:
        """Return when `name` may call the service (no outage, or its turn to probe);
        raise EmbeddingUnavailable while the outage's wait runs."""
        with self._lock:
            now = self._clock()
            if self._last_try is None:
                return
            if now - self._last_try >= self._interval:
                self._last_try = now  # this caller probes; the others keep waiting
                return
            self.waiting.add(name)
            error, wait = self._error, self._last_try + self._interval - now
        raise EmbeddingUnavailable(f"{error} (tried again in {wait:.0f} s)")

    def retry_in(self) -> float:
        """Seconds until the service may be tried again (at least one)."""
        with self._lock:
            if self._last_try is None:
                return 1.0
            return max(1.0, self._last_try + self._interval - self._clock())

    def failed(self, name: str, err: Exception) -> None:
        with self._lock:
            first = self._last_try is None
            if not first:
                self._interval = min(self._longest_retry, self._interval * 2)
            self._last_try, self._error = self._clock(), str(err)
            self.waiting.add(name)
        if first:
            log.warning(
                "embedding service unavailable: %s; Examples wait for it without a training"
                " file (reason EmbeddingUnavailable), tried again after %.0f s, then with"
                " back-off up to %.0f s",
                err,
                self._first_retry,
                self._longest_retry,
            )

    def succeeded(self, name: str) -> None:
        with self._lock:
            self.waiting.discard(name)
            ended = self._last_try is not None
            if ended:
                self._last_try, self._interval = None, self._first_retry
        if ended:
            log.info("embedding service available again; the waiting Examples get their vectors")


class OpenAIEmbedder:
    """OpenAI's embeddings endpoint (POST {base_url}/embeddings, Bearer key).

    With `azure_deployment`, Azure OpenAI's form of it, as Foyle's go-openai
    client calls it: POST {base_url}/openai/deployments/{deployment}/embeddings
    ?api-version=..., key in an `api-key` header. A custom base URL may need no
    key (Foyle allows that too).
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = OPENAI_BASE_URL,
        model: str = OPENAI_MODEL,
        timeout: float = 30.0,
        azure_deployment: str = "",
    ) -> None:
        if not api_key and base_url.rstrip("/") == OPENAI_BASE_URL:
            raise ValueError("an OpenAI API key is required for the OpenAI embedder")
        self.name = model
        base = base_url.rstrip("/")
        if azure_deployment:
            self._url = (
                f"{base}/openai/deployments/{azure_deployment}/embeddings"
                f"?api-version={AZURE_API_VERSION}"
            )
            self._headers = {"api-key": api_key}
        else:
            self._url = base + "/embeddings"
            self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        request = urllib.request.Request(
            self._url,
            data=json.dumps(
                {"model": self.name, "input": texts, "encoding_format": "float"}
            ).encode(),
            headers={**self._headers, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            error = EmbeddingRejected if err.code in REJECTED_INPUT else EmbeddingUnavailable
            raise error(f"{self._url}: HTTP {err.code}: {_error_message(err.read())}") from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise EmbeddingUnavailable(
                f"{self._url}: cannot reach the embeddings API: {reason}"
            ) from err
        except ValueError as err:
            raise EmbeddingUnavailable(f"{self._url}: the response is not JSON: {err}") from err
        return _vectors(body, len(texts), self._url)


class ReportingEmbedder:
    """An embedder whose outages are logged once each: a warning when it stops
    answering, and when it answers again a line with how many requests failed."""

    def __init__(self, inner: Embedder) -> None:
        self.name = inner.name
        self._inner = inner
        self._lock = threading.Lock()
        self._failed = 0
        self._down_since = 0.0

    def embed(self, texts: list[str]) -> list[list[float]]:
        try:
            vectors = self._inner.embed(texts)
        except EmbeddingUnavailable as err:
            with self._lock:
                self._failed += 1
                first = self._failed == 1
                if first:
                    self._down_since = time.monotonic()
            if first:
                log.warning(
                    "the embedding provider is unavailable: %s; the Examples waiting for it"
                    " have status reason %s and are retried with back-off",
                    err,
                    UNAVAILABLE_REASON,
                )
            raise
        with self._lock:
            failed, self._failed = self._failed, 0
        if failed:
            log.info(
                "the embedding provider answers again, after %d failed requests in %.0fs",
                failed,
                time.monotonic() - self._down_since,
            )
        return vectors


def _vectors(body: object, expected: int, url: str) -> list[list[float]]:
    """The embeddings in input order (the API tags each with its input's index)."""
    try:
        data = sorted(body["data"], key=lambda d: d["index"])  # type: ignore[index]
        vectors = [[float(x) for x in d["embedding"]] for d in data]
    except (KeyError, TypeError, ValueError) as err:
        raise EmbeddingUnavailable(f"{url}: unexpected response shape: {err!r}") from err
    if len(vectors) != expected:
        raise EmbeddingUnavailable(f"{url}: asked for {expected} embeddings, got {len(vectors)}")
    return vectors


def _error_message(raw: bytes) -> str:
    """OpenAI's `error.message` when the body has one, else the start of the body."""
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", "replace") or "(empty body)"
