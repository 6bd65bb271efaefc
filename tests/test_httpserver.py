"""The health/metrics server against real sockets on loopback (issue 13, items 8-10)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from controller.runtime.addr import parse_addr
from controller.runtime.httpserver import HealthServer
from controller.runtime.metrics import MetricsRegistry
from tests.cli_helpers import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("addr", "bound"),
    [
        (":9090", ("127.0.0.1", 9090)),
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        ("[::1]:80", ("::1", 80)),
        ("pod.local:0", ("pod.local", 0)),
    ],
)
def test_a_bare_port_binds_loopback_and_a_host_is_kept(addr: str, bound: tuple) -> None:
    assert parse_addr(addr) == bound


@pytest.mark.parametrize("addr", ["9090", "host:", ":99999", "host:port", ""])
def test_malformed_addresses_are_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr(addr)


@pytest.fixture
def server() -> Iterator[HealthServer]:
    srv = HealthServer(
        "127.0.0.1:0", MetricsRegistry(), lambda: True, request_deadline=1.0, max_connections=4
    )
    srv.start()
    yield srv
    srv.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return resp.status == 200


def test_clients_resetting_their_connections_leave_no_traceback(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for _ in range(50):
        s = connect(server.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(b"GET /metr")
        s.close()  # linger 0: an RST while the server reads the request line
    wait_for(lambda: server.open_connections == 0, 10, "the resets to be handled")

    assert healthy(server.port)
    assert "Traceback" not in capfd.readouterr().err


def test_idle_connections_are_capped_and_time_out(server: HealthServer) -> None:
    threads_before = threading.active_count()
    idle = [connect(server.port) for _ in range(4)]
    wait_for(lambda: server.open_connections == 4, 10, "four served connections")
    extra = [connect(server.port) for _ in range(20)]

    assert threading.active_count() <= threads_before + 4  # never more than the cap
    for s in idle + extra:  # each is closed: to make room, or at its deadline
        assert s.recv(1) == b""
    wait_for(lambda: server.open_connections == 0, 10, "timed-out connections released")
    assert healthy(server.port)
    for s in idle + extra:
        s.close()


class SlowClients:
    """Connections that each send a request's header line now and then, never its end."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.sockets = [connect(port) for _ in range(count)]
        self.stop = threading.Event()
        self.every = every
        self.thread = threading.Thread(target=self._trickle)

    def _trickle(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
        while not self.stop.wait(self.every):  # the attacker's pace, not a synchronisation
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")

    def __enter__(self) -> SlowClients:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


def test_slow_clients_holding_every_slot_cannot_starve_the_health_probe(
    server: HealthServer,
) -> None:
    """Issue 24, item 7: 2x the cap, each sending a header line every 0.3 s (under any
    per-read timeout), and every probe is still answered."""
    with SlowClients(server.port, 8, every=0.3):
        wait_for(lambda: server.open_connections == 4, 10, "the slow clients to take every slot")
        assert all(healthy(server.port) for _ in range(8))


def test_a_request_trickled_a_line_at_a_time_is_dropped_at_its_deadline(
    server: HealthServer,
) -> None:
    with SlowClients(server.port, 1, every=0.2) as slow:
        (s,) = slow.sockets
        s.settimeout(8)
        assert s.recv(1) == b""  # closed at the 1 s deadline, not kept alive by each line


def test_an_http_0_9_request_is_refused_at_once(server: HealthServer) -> None:
    """Issue 24: a request line without a version was held unanswered until the timeout."""
    with connect(server.port) as s:
        s.sendall(b"GET /healthz\r\n")
        s.settimeout(0.5)  # well under the 1 s request deadline
        assert s.recv(64).startswith(b"HTTP/1.0 400")
