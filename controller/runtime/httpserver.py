"""/metrics, /healthz and /readyz on one small threaded HTTP server.

The server faces whatever can reach its port (issue 13): a bare `:PORT`
binds loopback only; a client resetting its connection is one debug line,
not a traceback on stderr. At most `max_connections` are served at once, so
idle sockets cannot pin a thread each, and slow clients cannot starve the
probes (issue 24): each connection (one request: HTTP/1.0) has
`request_deadline` seconds in all to send its request and take the answer,
however slowly it trickles bytes (a timeout per read would let one header
line every few seconds hold a slot for ever); and when every slot is taken,
the connection that has been sending its request longest is closed to make
room, so a liveness probe, which sends its request at once, is served.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.runtime.addr import parse_addr
from controller.runtime.metrics import MetricsRegistry

log = logging.getLogger(__name__)

REQUEST_DEADLINE = 5.0
MAX_CONNECTIONS = 32
SLOT_WAIT = 1.0  # how long a new connection waits for the slot an eviction frees


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only what is left of one deadline for the request."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(remaining(self.deadline))
        return self._sock.recv_into(buffer)


def remaining(deadline: float) -> float:
    """Seconds left until `deadline`; past it, TimeoutError (the connection is dropped)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("request deadline passed")
    return left


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them.

    Connections still sending their request are tracked, oldest first: when all
    slots are taken, the oldest of them is shut down to make room.
    """

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
        self._sending: dict[Any, float] = {}  # connection -> when accepted (request unread)
        super().__init__(addr, handler)

    @property
    def open_connections(self) -> int:
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._close_slowest_sender()
            if not self._slots.acquire(timeout=SLOT_WAIT):
                log.debug("closing a connection from %s: too many open", client_address[0])
                self.shutdown_request(request)
                return
        self._count(+1)
        with self._open_lock:
            self._sending[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def request_read(self, request: Any) -> None:
        """The connection has sent its whole request: no longer a candidate for eviction."""
        with self._open_lock:
            self._sending.pop(request, None)

    def _close_slowest_sender(self) -> None:
        with self._open_lock:
            if not self._sending:
                return
            victim = min(self._sending, key=self._sending.__getitem__)
            del self._sending[victim]
        log.debug("closing the slowest of %d connections to make room", self._open)
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)  # its blocked read returns: the slot frees

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP connection from %s ended: %s", client_address[0], sys.exc_info()[1])

    def _release(self, request: Any) -> None:
        self.request_read(request)
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
        request_deadline: float = REQUEST_DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        registry_ref, ready_ref = registry, ready

        class Handler(BaseHTTPRequestHandler):
            server: _BoundedServer

            def setup(self) -> None:
                super().setup()
                reader = _DeadlineReader(self.connection, time.monotonic() + request_deadline)
                self._deadline = reader.deadline
                self.rfile = io.BufferedReader(reader)

            def parse_request(self) -> bool:
                if len(self.raw_requestline.split()) == 2:
                    # HTTP/0.9 (no version): http.server would wait for headers that never
                    # come and answer nothing; refuse it at once, in HTTP/1.0.
                    self.requestline = str(self.raw_requestline, "latin-1").rstrip("\r\n")
                    self.request_version, self.close_connection = "HTTP/1.0", True
                    self.send_error(400, "HTTP/0.9 requests are not served")
                    return False
                parsed = super().parse_request()  # the request line and every header read
                self.server.request_read(self.request)
                return parsed

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
                self.connection.settimeout(remaining(self._deadline))  # a client not reading
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
