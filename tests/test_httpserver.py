"""The health/metrics server against real sockets on loopback (issue 13, items 8-10)."""

from __future__ import annotations

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
        "127.0.0.1:0", MetricsRegistry(), lambda: True, read_timeout=0.5, max_connections=4
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

    for s in extra:  # over the cap: closed at once, no thread started
        assert s.recv(1) == b""
    assert threading.active_count() <= threads_before + 4
    for s in idle:  # the read timeout frees the slots
        assert s.recv(1) == b""
    wait_for(lambda: server.open_connections == 0, 10, "timed-out connections released")
    assert healthy(server.port)
    for s in idle + extra:
        s.close()
