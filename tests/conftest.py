"""Shared fixtures: where the real Foyle/RunMe log samples live, and the real API server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import control_plane, real_cluster
from tests.kube_emulator import kube_emulator  # noqa: F401  (fixture for `cluster`)

REPO = Path(__file__).resolve().parent.parent
EXIT_STATUS = pytest.StashKey[int]()
TESTDATA = REPO / "tests" / "data" / "foyle"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The real Foyle/RunMe sample logs, kept in the repository (tests/data/README.md)."""
    assert TESTDATA.is_dir(), f"missing sample logs at {TESTDATA}"
    return TESTDATA


@pytest.fixture(autouse=True, scope="session")
def temporary_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME in a temporary dir for every test and every subprocess it starts.

    Commands default to ~/.foyle/training, ~/.foyle/controller and the log dirs
    under ~; a test that forgets a flag must not write into the real ones.
    """
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.delenv("FOYLECTL_STATE_DIR", raising=False)
        yield home


# ---- the `apiserver` tier: a real etcd + kube-apiserver (tests/control_plane.py) ----


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane (and the cluster tier's node) before any test runs, so no
    test's timeout pays for it."""
    control_plane.build_if_selected(session)
    real_cluster.build_if_selected(session)


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[control_plane.ControlPlane]:
    """A real API server with crds/ applied, shared by the session (tests use own namespaces)."""
    yield from control_plane.start(tmp_path_factory.mktemp("control-plane"))


@pytest.fixture(params=["emulator", pytest.param("apiserver", marks=pytest.mark.apiserver)])
def cluster(request: pytest.FixtureRequest) -> control_plane.Cluster:
    """A kube-mode test runs twice: on the kmock emulator (fast) and on the real API server."""
    if request.param == "emulator":
        emulator = request.getfixturevalue("kube_emulator")
        return control_plane.Cluster(emulator.kubeconfig, "foyle")
    plane: control_plane.ControlPlane = request.getfixturevalue("apiserver")
    return control_plane.Cluster(plane.kubeconfig, plane.new_namespace("kube"))


# ---- the end of the session ----


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalization once pytest has reported everything.

    In-process servers and stores (the API emulator, watch-fed caches, kopf) leave daemon
    threads inside C calls; finalization under them aborted the process (exit 134) after
    every test had passed, once in four CI runs. `foylectl run` exits the same way for the
    same reason (cli/app._exit_now). The status is pytest's own.
    """
    status = config.stash.get(EXIT_STATUS, None)
    if status is None:
        return  # no session ran (a usage error): let pytest finish as usual
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
