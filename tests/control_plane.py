"""A real control plane (etcd + kube-apiserver, no kubelet) for the `apiserver` test tier.

`hack/control-plane.sh` builds pinned binaries from Go modules into a cache and
starts them on loopback. The build runs once per session from a collection hook
(`build_if_selected`), outside any test's timeout; the session fixture
(`control_plane`) starts the server in a temporary directory, applies crds/,
and stops it at the end. A missing toolchain or a failed start is a test
failure, never a skip: a developer without Go deselects the tier with
`-m "not apiserver"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.api.kinds import BY_KIND
from controller.store.kube import KubeStore
from tests.cli_helpers import run_command

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "hack" / "control-plane.sh"
CRD_NAMES = ("logfiles", "traces", "blocklogs", "sessions", "examples")
_build: dict[str, subprocess.CompletedProcess[str]] = {}


def real_cache(variable: str, name: str) -> dict[str, str]:
    """`variable` set to a hack/ script's cache dir under the real HOME. Call at import, before
    tests move HOME to a temporary dir (tests/conftest.py): a test session must never rebuild."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foyle-controller"
    return {variable: os.environ.get(variable) or str(default / name)}


CACHE_ENV = real_cache("FOYLE_CONTROL_PLANE_CACHE", "control-plane")


def _script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """hack/control-plane.sh ARGS, with the cache of the real HOME."""
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **CACHE_ENV, **env},
    )


def build_if_selected(session: pytest.Session) -> None:
    """Build (or find in the cache) the binaries when any selected test needs them."""
    if not any(item.get_closest_marker("apiserver") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"apiserver tier: {SCRIPT.relative_to(REPO)} build (minutes the first time, then cached)"
        )
    _build["result"] = _script("build")


def _require_built() -> None:
    result = _build.get("result")
    if result is None or result.returncode != 0:
        detail = result.stderr[-3000:] if result is not None else "the build did not run"
        pytest.fail(
            "the control plane could not be built (it needs go and openssl; without Go, "
            f'deselect this tier with -m "not apiserver"):\n{detail}',
            pytrace=False,
        )


def built(command: str) -> Path:
    """A binary of the built control plane (kubectl, etcd, kube-apiserver): never one from PATH."""
    _require_built()
    found = _script("bin")
    assert found.returncode == 0, found.stderr
    bin_dir = found.stdout.strip()
    return Path(bin_dir) / command


@dataclass(frozen=True)
class ControlPlane:
    """A running etcd + kube-apiserver: its admin kubeconfig, its kubectl, its etcd."""

    dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def etcd_url(self) -> str:
        return (self.dir / "etcd-url").read_text().strip()

    def kubectl(
        self,
        *args: str | Path,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl (never one from PATH), as admin unless `kubeconfig` says otherwise."""
        config = str(kubeconfig or self.kubeconfig)
        argv = [str(self.dir / "bin" / "kubectl"), "--kubeconfig", config, *map(str, args)]
        return run_command(argv, check=check, timeout=timeout, stdin=stdin)

    def new_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace: every test gets empty collections without deleting anything."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.kubectl("create", "namespace", name)
        return name

    def etcd(self, method: str, body: dict[str, object]) -> dict[str, object]:
        """One call to etcd's JSON gateway (/v3/...): no etcdctl needed."""
        request = urllib.request.Request(
            f"{self.etcd_url}/v3/{method}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; returns that revision."""
        header = self.etcd("kv/range", {"key": "AA=="})["header"]
        revision = int(header["revision"])  # type: ignore[index]
        self.etcd("kv/compaction", {"revision": revision, "physical": True})
        return revision


@dataclass(frozen=True)
class Cluster:
    """Where a kube-mode test runs (the emulator or the real server): kubeconfig and namespace."""

    kubeconfig: Path
    namespace: str


# The contract runs on KubeStores reading from the API server and on ones reading from
# watch-fed caches (what `foylectl run` uses): both must keep it.
READS = ("server", "cache")


def store_factory(
    kubeconfig: Path, namespace: str, reads: str = "server"
) -> Iterator[Callable[..., KubeStore]]:
    """Make KubeStores on one namespace; closes them after.

    Unlimited pacing unless told: the contract's concurrency test makes thousands of
    requests (the admin is exempt from the server's priority and fairness too).
    `reads="cache"`: every kind is read from a watch-fed cache.
    """
    opened: list[KubeStore] = []
    cached = tuple(BY_KIND) if reads == "cache" else ()

    def make(**options: Any) -> KubeStore:
        options = {"qps": 1e6, "burst": 1_000_000, "cached_kinds": cached, **options}
        opened.append(KubeStore(namespace, kubeconfig=str(kubeconfig), **options))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def start(workdir: Path, *apiserver_flags: str) -> Iterator[ControlPlane]:
    """`up` in `workdir`, crds/ applied and established; `down` when the caller is done."""
    _require_built()
    up = _script(
        "up",
        str(workdir),
        KUBE_APISERVER_FLAGS=" ".join(apiserver_flags),
        CONTROL_PLANE_OWNER_PID=str(os.getpid()),  # no servers left behind if killed
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"hack/control-plane.sh up failed:\n{up.stderr[-3000:]}", pytrace=False)
        plane = ControlPlane(workdir)
        plane.kubectl("apply", "-k", REPO / "crds")
        plane.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}.foyle.io" for name in CRD_NAMES),
        )
        yield plane
    finally:
        _script("down", str(workdir))
