"""HOST:PORT for the servers we start, read the same way by the CLI and the server."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"  # a bare :PORT stays on this machine (issue 13)


def parse_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT, meaning loopback) as a (host, port) to bind; ValueError if not."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or int(port) > 65535 or (not host and ":" not in addr):
        raise ValueError(f"--metrics-addr wants HOST:PORT or :PORT, not {addr!r}")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:9090
    return (host or DEFAULT_HOST), int(port)
