"""A local fake of OpenAI's embeddings endpoint: a real HTTP server (on 127.0.0.1 by default).

It answers POST .../embeddings like the real API (OpenAI's and Azure's URL
forms), records every request, and makes a deterministic unit vector of
`dims` floats from each input text, so equal texts get equal vectors and a
test can recompute the vector Foyle would store.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def vector_for(text: str, dims: int) -> list[float]:
    """The fake's embedding of `text`: seeded by the text's SHA-256, unit length."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    raw = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class FakeOpenAI:
    """The server's state: what it was asked, and how it answers."""

    def __init__(self, dims: int = 2) -> None:
        self.dims = dims
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append({"path": path, "headers": headers, "body": body})
        if self.status != 200:
            return self.status, {"error": {"message": "Incorrect API key provided"}}
        data = [
            {"index": i, "embedding": vector_for(text, self.dims)}
            for i, text in enumerate(body["input"])
        ]
        # Out of order on purpose: the client must sort by index.
        return 200, {"data": list(reversed(data)), "model": body["model"]}

    def texts(self) -> list[str]:
        return [t for r in self.requests for t in r["body"]["input"]]


@contextmanager
def serve(dims: int = 2, host: str = "127.0.0.1") -> Iterator[FakeOpenAI]:
    """A started fake; `fake.url` is its OpenAI base URL (`.../v1`). `host`: the address it
    listens on (a node's address, for pods of a cluster: tests/real_cluster.py)."""
    fake = FakeOpenAI(dims)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            headers = {k.lower(): v for k, v in self.headers.items()}  # case-insensitive
            status, payload = fake.answer(self.path, headers, body)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://{host}:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
