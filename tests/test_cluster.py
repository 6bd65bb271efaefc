"""deploy/ on a real single-node cluster (hack/cluster.sh): pods under a kubelet, for real.

One cluster for the whole tier (it takes a minute to start). The image is the
working tree's, built by the Dockerfile's recipe; the pods use the
ServiceAccount tokens, hostPath mounts, probes, in-cluster config and cluster
DNS that deploy/ sets up. Log files are written onto the node's log directory
(what the ingester DaemonSet reads) and what the cluster makes of them is
compared with `foylectl analyze` of the same files. The operator embeds with a
fake OpenAI-compatible server on the node's address, configured the way
docs/kubernetes.md says (a Secret with the key, Foyle's config in the ConfigMap).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.store.kube import KubeStore
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import comparable, foylectl, kube_view, wait_for
from tests.control_plane import REPO
from tests.fake_openai import FakeOpenAI, serve
from tests.foyle_wire import DIMENSIONS, load_rules
from tests.real_cluster import Node, start

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

pytestmark = pytest.mark.cluster

NAMESPACE = "foyle"
INGESTER = ("foyle-ingester", "daemonset/foyle-ingester")  # namespace, workload
OPERATOR = ("foyle", "deployment/foyle-operator")
DEADLINE = 180.0
KEY = "sk-cluster-test"
HOUR = 3600.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def provider(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeOpenAI]:
    """Embeddings for the operator, set up as docs/kubernetes.md says: the key in the
    foyle-openai Secret, `openai:` in Foyle's config (a kustomize overlay replaces the
    ConfigMap; its new name rolls the operator)."""
    with serve(dims=DIMENSIONS, host=node.address) as fake:
        node.kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", "foyle-openai",
            f"--from-literal=apiKey={KEY}",
        )  # fmt: skip
        overlay = tmp_path_factory.mktemp("openai-overlay")
        config = yaml.safe_load((REPO / "deploy" / "foyle-config.yaml").read_text())
        config["openai"] = {
            "apiKeyFile": "/var/run/secrets/foyle-openai/apiKey",
            "baseURL": fake.url,
        }
        (overlay / "config.yaml").write_text(yaml.safe_dump(config))
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [os.path.relpath(node.dir / "deploy", overlay)],
                    "configMapGenerator": [
                        {
                            "name": "foyle-config",
                            "namespace": NAMESPACE,
                            "behavior": "replace",
                            "files": ["config.yaml"],
                        }
                    ],
                }
            )
        )
        node.kubectl("apply", "-k", overlay)
        _rolled_out(node, *OPERATOR)
        yield fake


def _rolled_out(node: Node, namespace: str, workload: str) -> None:
    node.kubectl("-n", namespace, "rollout", "status", workload, "--timeout=180s", timeout=200)


def _store(node: Node) -> KubeStore:
    return KubeStore(NAMESPACE, kubeconfig=str(node.kubeconfig))


def _analyze(node: Node, workdir: Path, *learn: str) -> SQLiteStore:
    """`foylectl analyze` of the node's log files, as the DaemonSet reads them."""
    logs = [a for d in ("foyle", "runme") for a in ("--logs", str(node.logs / d))]
    foylectl("analyze", *logs, "--state-dir", workdir, "--no-progress", *learn, timeout=600)
    return SQLiteStore(workdir / "store.db")


def _converges(node: Node, want: dict[str, dict[str, Any]], kinds: tuple[str, ...]) -> None:
    store = _store(node)
    try:
        for kind in kinds:
            assert want[kind], kind
            wait_for(
                lambda kind=kind: kube_view(store.list(kind)) == want[kind],
                DEADLINE,
                f"the {kind}s analyze derives\n{_pod_logs(node, *INGESTER)}",
                interval=1.0,
            )
    finally:
        store.close()


def _pod_logs(node: Node, namespace: str, workload: str) -> str:
    return node.kubectl("-n", namespace, "logs", workload, "--tail=30", check=False).stdout


def _pods(node: Node, namespace: str, workload: str) -> list[dict[str, Any]]:
    """The workload's pods (deploy/ labels them with its name)."""
    label = f"app.kubernetes.io/name={workload.split('/')[1]}"
    out = node.kubectl("-n", namespace, "get", "pods", "-l", label, "-o", "json").stdout
    return json.loads(out)["items"]


def _generate(node: Node, seed: int, size: int, hours: float, streaming: bool = False) -> None:
    """A corpus onto the node, its file names (times) `hours` after the last one's; streaming:
    Foyle >= v0.0.37's logs, whose Sessions are learned."""
    t0 = 1_713_300_000.0 + hours * HOUR
    gen_logs.generate(node.logs, size_bytes=size, seed=seed, t0=t0, streaming=streaming)


def test_logs_on_the_node_become_blocklogs_sessions_and_examples_foyle_loads(
    node: Node, provider: FakeOpenAI, testdata: Path, tmp_path: Path
) -> None:
    for sample in testdata.iterdir():
        shutil.copy(sample, node.logs / "foyle" / sample.name)
    _generate(node, seed=31, size=150_000, hours=0, streaming=True)
    key = tmp_path / "key"
    key.write_text(KEY)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"openai": {"apiKeyFile": str(key), "baseURL": provider.url}}))
    local = tmp_path / "training"
    expected = _analyze(
        node, tmp_path / "oneshot", "--foyle-config", str(config), "--training-dir", str(local)
    )
    want = {kind: comparable(expected.list(kind)) for kind in ("BlockLog", "Session", "Example")}
    _converges(node, want, ("BlockLog", "Session"))

    store = _store(node)
    try:
        wait_for(
            lambda: (
                {n: e["spec"] for n, e in kube_view(store.list("Example")).items()}
                == {n: e["spec"] for n, e in want["Example"].items()}
            ),
            DEADLINE,
            f"the Examples analyze learns\n{_pod_logs(node, *OPERATOR)}",
            interval=1.0,
        )
        wait_for(
            lambda: all(e["status"].get("foyleLoadable") for e in store.list("Example")),
            DEADLINE,
            "every Example loadable by Foyle",
            interval=1.0,
        )
    finally:
        store.close()
    report = load_rules([node.training])  # the PersistentVolume, as the node holds it
    assert report.skipped == {}
    assert all("/.foylectl/" in path for path in report.ignored)  # the learner's ledger
    assert (
        set(report.loaded)
        == set(load_rules([local]).loaded)
        == {e["spec"]["id"] for e in want["Example"].values()}
    )
    assert all(len(e["embedding"]) == DIMENSIONS for e in report.loaded.values())
    specs = [e["spec"] for e in want["Example"].values()]
    assert any("blockLog" in s for s in specs) and any("session" in s for s in specs)
    assert {r["headers"]["authorization"] for r in provider.requests} == {f"Bearer {KEY}"}


def test_the_pods_log_no_warning_as_deployed(node: Node, provider: FakeOpenAI) -> None:
    """After the first test's logs: nothing an admin would have to act on (a warning about
    the pod's own volumes would be noise every start)."""
    for workload in (INGESTER, OPERATOR):
        logged = node.kubectl("-n", workload[0], "logs", workload[1]).stdout.splitlines()
        assert logged, workload
        warnings = [line for line in logged if "warning" in line.lower()]
        assert warnings == [], workload


def test_the_ingester_pod_deleted_mid_catch_up_comes_back_with_nothing_lost_or_duplicated(
    node: Node, provider: FakeOpenAI, tmp_path: Path
) -> None:
    store = _store(node)
    try:
        before = len(store.list("BlockLog"))
        _generate(node, seed=32, size=3_000_000, hours=24)
        want = {
            kind: comparable(_analyze(node, tmp_path / "oneshot", "--no-learn").list(kind))
            for kind in ("BlockLog", "Session")
        }
        [old] = _pods(node, *INGESTER)
        wait_for(
            lambda: len(store.list("BlockLog")) > before, DEADLINE, "the catch-up to start", 0.2
        )
        node.kubectl("-n", INGESTER[0], "delete", "pod", old["metadata"]["name"], "--wait=false")
        caught_up = kube_view(store.list("BlockLog")) == want["BlockLog"]
    finally:
        store.close()
    assert not caught_up, "the corpus was read before the pod was deleted: make it larger"
    wait_for(
        lambda: [
            p for p in _pods(node, *INGESTER) if p["metadata"]["uid"] != old["metadata"]["uid"]
        ],
        DEADLINE,
        "the DaemonSet's new pod",
    )
    _rolled_out(node, *INGESTER)
    _converges(node, want, ("BlockLog", "Session"))


def test_a_rolling_update_of_the_daemonset_replaces_the_pod_and_the_new_one_reads_on(
    node: Node, provider: FakeOpenAI, tmp_path: Path
) -> None:
    [old] = _pods(node, *INGESTER)
    node.kubectl("-n", INGESTER[0], "rollout", "restart", INGESTER[1])
    _rolled_out(node, *INGESTER)
    [new] = _pods(node, *INGESTER)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    _generate(node, seed=33, size=100_000, hours=48)  # written after the update
    want = {
        kind: comparable(_analyze(node, tmp_path / "oneshot", "--no-learn").list(kind))
        for kind in ("BlockLog", "Session")
    }
    _converges(node, want, ("BlockLog", "Session"))


def _watch_pod(node: Node, namespace: str, name: str) -> subprocess.Popen[str]:
    argv = [str(node.dir / "bin" / "kubectl"), "--kubeconfig", str(node.kubeconfig)]
    argv += ["-n", namespace, "get", "pod", name, "--watch", "-o", "json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _objects(stream: str) -> list[dict[str, Any]]:
    """The JSON objects `kubectl get --watch -o json` printed one after another (the last one
    may be cut short where the watch was stopped)."""
    decoder, objects, pos = json.JSONDecoder(), [], 0
    while (pos := stream.find("{", pos)) != -1:
        try:
            obj, pos = decoder.raw_decode(stream, pos)
        except json.JSONDecodeError:
            break
        objects.append(obj)
    return objects


@pytest.mark.parametrize("workload", [INGESTER, OPERATOR], ids=["ingester", "operator"])
def test_sigterm_ends_each_pod_within_5_seconds_with_exit_status_0(
    node: Node, provider: FakeOpenAI, workload: tuple[str, str]
) -> None:
    namespace, kind_name = workload
    [pod] = _pods(node, namespace, kind_name)
    name = pod["metadata"]["name"]
    watch = _watch_pod(node, namespace, name)
    try:
        wait_for(lambda: watch.stdout is not None, 10, "the watch")
        deleted = time.time()
        node.kubectl("-n", namespace, "delete", "pod", name, "--wait=true", timeout=60)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    states = [
        s["state"]["terminated"]
        for obj in _objects(out)
        for s in obj.get("status", {}).get("containerStatuses", [])
        if "terminated" in s.get("state", {})
    ]
    assert states, f"no terminated state seen for {name}: {out[-2000:]}"
    finished = datetime.fromisoformat(states[-1]["finishedAt"].replace("Z", "+00:00"))
    assert states[-1]["exitCode"] == 0, states[-1]  # not SIGKILLed at the grace period's end
    assert finished.timestamp() - deleted <= 5.0, (states[-1], deleted)
    _rolled_out(node, namespace, kind_name)


def _exec(node: Node, namespace: str, workload: str, script: str) -> str:
    return node.kubectl(
        "-n", namespace, "exec", workload, "--", "python3", "-c", script, check=False
    ).stdout.strip()


WHO_AM_I = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
[root] = [line.split()[3] for line in open("/proc/self/mounts") if line.split()[1] == "/"]
print("uid", os.getuid(), "gid", os.getgid(), "root", root.split(",")[0],
      *(f"{k} {status[k].strip()}" for k in ("CapEff", "NoNewPrivs", "Seccomp")))
"""

TOKEN_REQUEST = """
import ssl, sys, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
for path in sys.argv[1:]:
    req = urllib.request.Request("https://kubernetes.default.svc" + path,
                                 headers={"Authorization": "Bearer " + token})
    try:
        print(path, urllib.request.urlopen(req, context=ctx, timeout=10).status)
    except urllib.error.HTTPError as err:
        print(path, err.code)
"""


@pytest.mark.parametrize(
    "workload, allowed, refused",
    [
        (
            INGESTER,
            "/apis/foyle.io/v1alpha1/namespaces/foyle/traces",
            "/apis/foyle.io/v1alpha1/namespaces/foyle/examples",
        ),
        (
            OPERATOR,
            "/apis/foyle.io/v1alpha1/namespaces/foyle/blocklogs",
            "/api/v1/namespaces/foyle/secrets",
        ),
    ],
    ids=["ingester", "operator"],
)
def test_each_pod_runs_as_deployed_with_its_own_token_and_rbac(
    node: Node, provider: FakeOpenAI, workload: tuple[str, str], allowed: str, refused: str
) -> None:
    namespace, name = workload
    assert _exec(node, namespace, name, WHO_AM_I) == (
        "uid 65532 gid 65532 root ro CapEff 0000000000000000 NoNewPrivs 1 Seccomp 2"
    )  # a read-only root, no capabilities, no privilege escalation, a seccomp filter
    [pod] = _pods(node, namespace, name)
    assert [s["restartCount"] for s in pod["status"]["containerStatuses"]] == [0]  # probes pass
    got = node.kubectl(
        "-n", namespace, "exec", name, "--", "python3", "-c", TOKEN_REQUEST, allowed, refused
    ).stdout.splitlines()
    assert got == [f"{allowed} 200", f"{refused} 403"]
    labels = json.loads(node.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    enforce = labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    assert enforce == ("privileged" if namespace == "foyle-ingester" else "restricted")
