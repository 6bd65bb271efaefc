"""A real single-node cluster running deploy/ (hack/cluster.sh) for the `cluster` test tier.

Everything it needs (Debian packages, the node's binaries, the images) is built
once per session from a collection hook (`build_if_selected`), outside any
test's timeout, with the real HOME's caches; `start` brings the cluster up in a
temporary directory and `down`s it after. A failure is a test failure, never a
skip: without root or Go, deselect the tier with `-m "not cluster"`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.control_plane import REPO, ControlPlane

SCRIPT = REPO / "hack" / "cluster.sh"
# Read at import, before tests move HOME (tests/conftest.py): go's caches and every hack/
# script's cache stay the developer's, so a test session never rebuilds.
REAL_HOME = os.environ.get("HOME", "/root")
_build: dict[str, subprocess.CompletedProcess[str]] = {}


def _script(*args: str | Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "HOME": REAL_HOME, **env},
    )


def build_if_selected(session: pytest.Session) -> None:
    """Build (or find in the caches) what the cluster needs when any selected test uses it."""
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"cluster tier: {SCRIPT.relative_to(REPO)} build (cached after)")
    _build["result"] = _script("build", timeout=3600)


@dataclass(frozen=True)
class Node(ControlPlane):
    """A running cluster (DIR of hack/cluster.sh): the control plane's kubeconfig and kubectl,
    and the node's directories."""

    @property
    def logs(self) -> Path:
        """The node's log directory (the ingester's /logs): foyle/ and runme/ in it."""
        return self.dir / "logs"

    @property
    def training(self) -> Path:
        """The operator's training volume, as the node holds it."""
        return self.dir / "training"

    @property
    def address(self) -> str:
        """The node's address, where pods reach the API server and what a test serves."""
        return (self.dir / "node" / "address").read_text().strip()


def start(workdir: Path) -> Iterator[Node]:
    """`up` in `workdir`; `down` when the caller is done (and by itself if this process dies)."""
    result = _build.get("result")
    if result is None or result.returncode != 0:
        detail = result.stderr[-3000:] if result is not None else "the build did not run"
        pytest.fail(f"hack/cluster.sh build failed:\n{detail}", pytrace=False)
    up = _script("up", workdir, timeout=900, CLUSTER_OWNER_PID=str(os.getpid()))
    try:
        if up.returncode != 0:
            pytest.fail(f"hack/cluster.sh up failed:\n{up.stderr[-4000:]}", pytrace=False)
        yield Node(workdir)
    finally:
        down = _script("down", workdir, timeout=300)
        assert down.returncode == 0, down.stderr[-3000:]
