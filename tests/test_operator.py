"""The kopf operator (controller.operator), by kopf's KopfRunner and as `foylectl operator`.

Every test that talks to a cluster runs twice (the `cluster` fixture): on the
kmock emulator and on a real kube-apiserver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from controller.operator import settings_from_env
from controller.store.base import NotFound, read_modify_write
from controller.store.kube import KubeStore
from tests.cli_helpers import free_port, wait_for
from tests.control_plane import Cluster
from tests.fake_openai import serve
from tests.foyle_wire import DIMENSIONS, load_rules

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
def running_operator(
    kubeconfig: Path, namespace: str, workdir: Path, *extra: str
) -> Iterator[Path]:
    """`foylectl operator --standalone` as a process, live; yields its training dir.

    On leaving, SIGTERM must end it with exit code 0 within 5 s (a pod's grace period).
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
                *extra,
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
        stopping = time.monotonic()
        code = proc.wait(timeout=30)
        stopped_in = time.monotonic() - stopping
    assert code == 0, out.read_text()
    assert stopped_in < 5.0, f"SIGTERM took {stopped_in:.1f}s\n{out.read_text()}"


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


def _session(name: str) -> dict[str, Any]:
    """A learnable Session (as the ingester writes it): one successful execution of cell c2,
    then the session's end (Foyle learns a session once it ends)."""
    cell = {"kind": "CODE", "language": "bash", "contents": FIXED, "outputs": [], "id": "c2"}
    notebook = {"blocks": [{"kind": "MARKUP", "contents": "list the pods"}, cell]}
    return {
        "apiVersion": "foyle.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {"contextId": name, "traceIds": ["t1"]},
        "status": {
            "logEvents": [
                {
                    "type": "EXECUTE",
                    "selectedId": "c2",
                    "executeStatus": "SUCCEEDED",
                    "cells": [cell],
                },
                {"type": "SESSION_END"},
            ],
            "fullContext": {"notebook": notebook, "selected": 1},
        },
    }


def _create_with_status(store: KubeStore, obj: dict[str, Any]) -> None:
    created = store.create({k: v for k, v in obj.items() if k != "status"})
    store.update_status({**created, "status": obj["status"]})


def _foyle_config(workdir: Path, base_url: str) -> Path:
    """Foyle's config.yaml naming an OpenAI-compatible server and a key file, as in deploy/."""
    key = workdir / "openai-key"
    key.write_text("sk-test\n")
    config = workdir / "config.yaml"
    config.write_text(f"openai:\n  apiKeyFile: {key}\n  baseURL: {base_url}\n")
    return config


def test_operator_learns_blocklogs_and_sessions_with_embeddings_foyle_loads(
    operator_env: tuple[KubeStore, Path], cluster: Cluster, tmp_path: Path
) -> None:
    store, _ = operator_env
    with serve(dims=DIMENSIONS) as fake:
        config = _foyle_config(tmp_path, fake.url)
        with running_operator(
            cluster.kubeconfig, cluster.namespace, tmp_path, "--foyle-config", str(config)
        ) as training:
            _create_with_status(store, _blocklog("b7", FIXED))
            _create_with_status(store, _session("ctx7"))
            for name in ("b7", "ctx7"):
                example = wait_for(
                    lambda n=name: (
                        (_example(store, n) or {}).get("status", {}).get("foyleLoadable")
                    ),
                    DEADLINE,
                    f"a loadable Example of {name}",
                )
                assert example is True
            report = load_rules([training])
    assert report.skipped == {}
    assert set(report.loaded) == {"b7", "ctx7"}
    assert all(len(e["embedding"]) == DIMENSIONS for e in report.loaded.values())
    assert fake.requests[0]["headers"]["authorization"] == "Bearer sk-test"


def test_an_unavailable_provider_is_one_warning_and_a_status_then_examples_recover(
    operator_env: tuple[KubeStore, Path], cluster: Cluster, tmp_path: Path
) -> None:
    store, _ = operator_env
    names = [f"u{i}" for i in range(5)]
    with serve(dims=DIMENSIONS) as fake:
        fake.status = 503
        config = _foyle_config(tmp_path, fake.url)
        with running_operator(
            cluster.kubeconfig, cluster.namespace, tmp_path, "--foyle-config", str(config)
        ) as training:
            for name in names:
                _create_with_status(store, _blocklog(name, FIXED))
            for name in names:
                wait_for(
                    lambda n=name: (
                        (_example(store, n) or {}).get("status", {}).get("reason")
                        == "EmbeddingUnavailable"
                    ),
                    DEADLINE,
                    f"status reason EmbeddingUnavailable on {name}",
                )
            fake.status = 200
            for name in names:
                wait_for(
                    lambda n=name: (
                        (_example(store, n) or {}).get("status", {}).get("foyleLoadable")
                    ),
                    DEADLINE,
                    f"{name} learned once the provider answers",
                )
            assert set(load_rules([training]).loaded) == set(names)
    log = (tmp_path / "operator.log").read_text()
    assert log.count("embedding service unavailable") == 1, log
    assert "reconcile failed" not in log, log
    assert "embedding service available again" in log, log


def test_operator_logs_a_summary_not_a_line_per_object(
    operator_env: tuple[KubeStore, Path], cluster: Cluster, tmp_path: Path
) -> None:
    store, _ = operator_env
    with running_operator(cluster.kubeconfig, cluster.namespace, tmp_path) as training:
        for i in range(20):
            _create_with_status(store, _blocklog(f"q{i}", FIXED))
        wait_for(lambda: len(list(training.glob("*.binpb"))) == 20, DEADLINE, "20 training files")
    lines = (tmp_path / "operator.log").read_text().splitlines()
    assert not [line for line in lines if "kopf.objects" in line], lines  # kopf's per-object lines
    assert len(lines) < 10, lines


def test_settings_from_the_environment_read_foyles_config(tmp_path: Path) -> None:
    config = _foyle_config(tmp_path, "http://fake.invalid/v1")
    settings = settings_from_env(
        {"FOYLE_CONFIG": str(config), "FOYLE_LEARN_FROM": "sessions", "FOYLECTL_STATE_DIR": "/s"}
    )
    assert settings.embedding_provider is not None
    assert settings.embedding_provider.base_url == "http://fake.invalid/v1"
    assert settings.embedding_provider.api_key_file == tmp_path / "openai-key"
    assert (settings.learn_from, settings.state_dir) == ("sessions", Path("/s"))
