"""The kopf operator (controller.operator), by kopf's KopfRunner and as `foylectl operator`.

Every test that talks to a cluster runs twice (the `cluster` fixture): on the
kmock emulator and on a real kube-apiserver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from controller.operator import learn_digest, settings_from_env
from controller.store.base import NotFound, read_modify_write
from controller.store.kube import KubeStore
from tests.cli_helpers import free_port, wait_for
from tests.control_plane import Cluster

GENERATED = "kubectl get pods"
FIXED = "kubectl get pods -n foyle"
DEADLINE = 20.0


def _blocklog(name: str, executed: str, eval_mode: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "foyle.io/v1alpha1",
        "kind": "BlockLog",
        "metadata": {"name": name},
        "spec": {"id": name, "genTraceId": "g1", "execTraceIds": ["e1"]},
        "status": {
            "doc": {"blocks": [{"kind": "MARKUP", "contents": "list the pods"}]},
            "generatedBlock": {"kind": "CODE", "language": "bash", "contents": GENERATED},
            "executedBlock": {"kind": "CODE", "language": "bash", "contents": executed},
            "evalMode": eval_mode,
        },
    }


def _set_executed(store: KubeStore, name: str, executed: str) -> None:
    def mutate(current: dict[str, Any] | None) -> dict[str, Any] | None:
        assert current is not None
        current["status"]["executedBlock"]["contents"] = executed
        return current

    read_modify_write(store, "BlockLog", name, mutate)


def _example(store: KubeStore, name: str) -> dict[str, Any] | None:
    try:
        return store.get("Example", name)
    except NotFound:
        return None


@pytest.fixture
def operator_env(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[KubeStore, Path]]:
    """The environment kopf reads when it loads controller.operator (as in the Deployment)."""
    training = tmp_path / "training"
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("FOYLE_NAMESPACE", cluster.namespace)
    monkeypatch.setenv("FOYLECTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FOYLE_TRAINING_DIRS", str(training))
    store = KubeStore(cluster.namespace, kubeconfig=str(cluster.kubeconfig))
    try:
        yield store, training
    finally:
        store.close()


def _runner() -> KopfRunner:
    namespace = os.environ["FOYLE_NAMESPACE"]
    args = [
        "run",
        "--verbose",
        "--standalone",
        "--namespace",
        namespace,
        "-m",
        "controller.operator",
    ]
    return KopfRunner(args, timeout=30)


def test_learnable_blocklog_gets_its_example_and_loses_it_when_no_longer_learnable(
    operator_env: tuple[KubeStore, Path],
) -> None:
    store, training = operator_env
    with _runner() as runner:
        created = store.create(_blocklog("b1", FIXED))
        store.update_status({**created, "status": _blocklog("b1", FIXED)["status"]})
        example = wait_for(lambda: _example(store, "b1"), DEADLINE, "the Example of b1")
        assert example["spec"]["answer"][0]["contents"] == FIXED
        assert example["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        wait_for(lambda: (training / "b1.example.binpb").exists(), DEADLINE, "the training file")

        _set_executed(store, "b1", GENERATED)  # the user ran the suggestion as it was
        wait_for(lambda: _example(store, "b1") is None, DEADLINE, "the Example's deletion")
        assert not (training / "b1.example.binpb").exists()
    assert runner.exit_code == 0, runner.output


def test_blocklogs_present_at_start_are_learned_on_resume(
    operator_env: tuple[KubeStore, Path],
) -> None:
    store, _ = operator_env
    created = store.create(_blocklog("b2", FIXED))
    store.update_status({**created, "status": _blocklog("b2", FIXED)["status"]})
    with _runner() as runner:
        wait_for(lambda: _example(store, "b2"), DEADLINE, "the Example of b2")
    assert runner.exit_code == 0, runner.output


def test_deleting_a_blocklog_deletes_its_example_without_a_finalizer(
    operator_env: tuple[KubeStore, Path],
) -> None:
    store, training = operator_env
    with _runner() as runner:
        created = store.create(_blocklog("b3", FIXED))
        store.update_status({**created, "status": _blocklog("b3", FIXED)["status"]})
        wait_for(lambda: _example(store, "b3"), DEADLINE, "the Example of b3")
        assert not store.get("BlockLog", "b3")["metadata"].get("finalizers")
        store.delete("BlockLog", "b3")
        wait_for(lambda: _example(store, "b3") is None, DEADLINE, "the Example's deletion")
        assert not (training / "b3.example.binpb").exists()
    assert runner.exit_code == 0, runner.output


def test_eval_mode_blocklog_is_never_learned(operator_env: tuple[KubeStore, Path]) -> None:
    store, _ = operator_env
    with _runner() as runner:
        created = store.create(_blocklog("eval", FIXED, eval_mode=True))
        store.update_status({**created, "status": _blocklog("eval", FIXED, True)["status"]})
        created = store.create(_blocklog("b4", FIXED))
        store.update_status({**created, "status": _blocklog("b4", FIXED)["status"]})
        # b4 was created after `eval`, and kopf handles a namespace's objects as they come.
        wait_for(lambda: _example(store, "b4"), DEADLINE, "the Example of b4")
        assert _example(store, "eval") is None
    assert runner.exit_code == 0, runner.output


def test_learn_digest_follows_the_learner_input_not_bookkeeping() -> None:
    blocklog = _blocklog("b5", FIXED)
    blocklog["metadata"]["uid"] = "u1"
    digest = learn_digest(blocklog)
    assert learn_digest({**blocklog, "status": {**blocklog["status"], "executions": 3}}) == digest
    changed = _blocklog("b5", FIXED + " -o wide")
    changed["metadata"]["uid"] = "u1"
    assert learn_digest(changed) != digest


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FOYLE_NAMESPACE": "team-a",
        "FOYLE_TRAINING_DIRS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "FOYLE_KUBE_QPS": "5",
        "FOYLE_KUBE_BURST": "7",
    }
    settings = settings_from_env(env)
    assert (settings.store, settings.namespace) == ("kube", "team-a")
    assert settings.training_dirs == [tmp_path / "a", tmp_path / "b"]
    assert (settings.kube_qps, settings.kube_burst) == (5.0, 7)


@contextmanager
def running_operator(kubeconfig: Path, namespace: str, workdir: Path) -> Iterator[Path]:
    """`foylectl operator --standalone` as a process, live; yields its training dir.

    On leaving, SIGTERM must end it with exit code 0.
    """
    port = free_port()
    out = workdir / "operator.log"
    training = workdir / "cli-training"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "operator",
                "--standalone",
                "--namespace",
                namespace,
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                "--state-dir",
                str(workdir / "cli-state"),
                "--training-dir",
                str(training),
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    try:
        wait_for(lambda: _live(port), DEADLINE, f"liveness on :{port}\n{out.read_text()}")
        yield training
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, out.read_text()


def test_foylectl_operator_serves_liveness_learns_and_exits_cleanly_on_sigterm(
    operator_env: tuple[KubeStore, Path], cluster: Cluster, tmp_path: Path
) -> None:
    store, _ = operator_env
    with running_operator(cluster.kubeconfig, cluster.namespace, tmp_path) as training:
        created = store.create(_blocklog("b6", FIXED))
        store.update_status({**created, "status": _blocklog("b6", FIXED)["status"]})
        wait_for(lambda: _example(store, "b6"), DEADLINE, "the Example of b6")
        # The Example is written first, then the file: on a real server the test sees the gap.
        wait_for((training / "b6.example.binpb").exists, DEADLINE, "the training file of b6")


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False
