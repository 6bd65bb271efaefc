"""/metrics, /healthz and /readyz on one small threaded HTTP server.

The server faces whatever can reach its port (issue 13): a bare `:PORT`
binds loopback only; a connection gets `read_timeout` seconds per request
and at most `max_connections` are served at once (more are closed at once),
so idle sockets cannot pin a thread each; a client resetting its connection
is one debug line, not a traceback on stderr.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.runtime.addr import parse_addr
from controller.runtime.metrics import MetricsRegistry

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 32


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connects waits, not a SYN retry

    def __init__(
        self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open = 0
        self._open_lock = threading.Lock()
        super().__init__(addr, handler)

    @property
    def open_connections(self) -> int:
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("closing a connection from %s: too many open", client_address[0])
            self.shutdown_request(request)
            return
        self._count(+1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP connection from %s ended: %s", client_address[0], sys.exc_info()[1])

    def _release(self) -> None:
        self._count(-1)
        self._slots.release()

    def _count(self, delta: int) -> None:
        with self._open_lock:
            self._open += delta


class HealthServer:
    def __init__(
        self,
        addr: str,
        registry: MetricsRegistry,
        ready: Callable[[], bool],
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        registry_ref, ready_ref = registry, ready

        class Handler(BaseHTTPRequestHandler):
            timeout = read_timeout  # socket timeout for each read (StreamRequestHandler)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    self._send(200, registry_ref.render(), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    self._send(200, b"ok\n")
                elif self.path == "/readyz":
                    ok = ready_ref()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"catching up\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return None

        self._server = _BoundedServer(parse_addr(addr), Handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """host:port as bound (the port chosen by the system for :0)."""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
