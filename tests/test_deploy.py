"""deploy/ (the kustomize base), the Dockerfile and hack/ scripts, checked offline.

What runs here: `kubectl kustomize` rendering (the kubectl hack/control-plane.sh builds), validation of every rendered
object against the Kubernetes 1.32 OpenAPI schemas (kubernetes-validate, strict:
unknown fields fail), the security settings of every container, least-privilege
RBAC, the generated CRDs of crds/ (referenced, not copied), and shellcheck. Admission and RBAC
enforcement are checked on a real API server in tests/test_apiserver_deploy.py;
only a real cluster shows that the pods actually run (hack/kind-e2e.sh).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.api.kinds import GROUP, KINDS
from tests.control_plane import built

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import pack_image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.32.0"
WORKLOADS = ("DaemonSet", "Deployment")
_SUBRESOURCE_BY_PLURAL = {k.plural: k.status_subresource for k in KINDS}
# `kubectl kustomize` is the kubectl hack/control-plane.sh builds: those tests are in its tier.
renders = pytest.mark.apiserver
# Where each namespaced object lives: only the ingester (hostPath) is outside `foyle`.
INGESTER_NAMESPACED = {
    ("DaemonSet", "foyle-ingester"),
    ("ServiceAccount", "foyle-ingester"),
    ("NetworkPolicy", "foyle-ingester"),
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [built("kubectl"), "kustomize", str(REPO / "deploy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@renders
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    checked = 0
    for obj in rendered:
        assert not obj["apiVersion"].startswith(f"{GROUP}/"), "the base ships no custom resources"
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked == len(rendered) > 0


@renders
def test_base_holds_the_namespace_crds_rbac_and_both_workloads(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert {("Namespace", "foyle"), ("Namespace", "foyle-ingester")} <= kinds
    assert {n for k, n in kinds if k == "CustomResourceDefinition"} == {
        f"{plural}.{GROUP}"
        for plural in ("logfiles", "traces", "blocklogs", "sessions", "examples")
    }
    assert {("DaemonSet", "foyle-ingester"), ("Deployment", "foyle-operator")} <= kinds
    for obj in rendered:
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition"):
            key = (obj["kind"], obj["metadata"]["name"])
            want = "foyle-ingester" if key in INGESTER_NAMESPACED else "foyle"
            assert obj["metadata"]["namespace"] == want, key


@renders
def test_only_the_ingester_namespace_relaxes_pod_security(
    rendered: list[dict[str, Any]],
) -> None:
    labels = {
        name: ns["metadata"]["labels"] for name, ns in _by_kind(rendered, "Namespace").items()
    }
    enforce = "pod-security.kubernetes.io/enforce"
    assert labels["foyle"][enforce] == "restricted"
    assert labels["foyle-ingester"][enforce] == "privileged"  # hostPath: see namespace.yaml
    ingester = _by_kind(rendered, "DaemonSet")["foyle-ingester"]["spec"]["template"]["spec"]
    assert "--namespace=foyle" in ingester["containers"][0]["args"]
    for workload in (o for o in rendered if o["kind"] in WORKLOADS):
        host_paths = [v for v in workload["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
        assert bool(host_paths) == (workload["metadata"]["namespace"] == "foyle-ingester")
        assert all(v["hostPath"]["type"] == "Directory" for v in host_paths)  # nothing created


@renders
def test_every_container_runs_locked_down(rendered: list[dict[str, Any]]) -> None:
    workloads = [o for o in rendered if o["kind"] in WORKLOADS]
    assert len(workloads) == 2
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in _containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not sc.get("privileged"), where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where


@renders
def test_ingester_daemonset_reads_node_logs_read_only_and_keeps_its_journal_on_the_node(
    rendered: list[dict[str, Any]],
) -> None:
    ds = _by_kind(rendered, "DaemonSet")["foyle-ingester"]
    pod = ds["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[0] == "run"
    assert {"--store=kube", "--node=$(NODE_NAME)", "--no-learn"} <= set(args)
    assert "--metrics-addr=0.0.0.0:9090" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert "hostPath" in volumes["logs"] and mounts["logs"]["readOnly"] is True
    # Both writers' logs: Foyle's (the suggestions) and RunMe's (the executions).
    logs = mounts["logs"]["mountPath"]
    assert [a for a in args if a.startswith("--logs=")] == [
        f"--logs={logs}/foyle",
        f"--logs={logs}/runme",
    ]
    assert volumes["journal"]["hostPath"]["path"].startswith("/var/lib/foyle-controller")
    assert f"--state-dir={mounts['journal']['mountPath']}" in args
    assert not mounts["journal"].get("readOnly")


@renders
def test_no_pod_can_reach_the_ingesters_metrics_port(rendered: list[dict[str, Any]]) -> None:
    """Issue 24: slow clients on 9090 could keep the ingester restarting; only the node's
    kubelet (which NetworkPolicy always admits) needs its probes."""
    ds = _by_kind(rendered, "DaemonSet")["foyle-ingester"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    policies = [
        p
        for p in rendered
        if p["kind"] == "NetworkPolicy"
        and p["metadata"]["namespace"] == ds["metadata"]["namespace"]
        and p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert policies, "no NetworkPolicy selects the ingester's pods"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        assert not policy["spec"].get("ingress"), "a policy admits traffic to the ingester"


@renders
def test_operator_is_one_recreated_standalone_replica_with_kopf_liveness(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = _by_kind(rendered, "Deployment")["foyle-operator"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "operator" and "--standalone" in args
    liveness = next(a for a in args if a.startswith("--liveness="))
    port = int(liveness.rsplit(":", 1)[1].split("/")[0])
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == port and liveness.endswith(probe["path"])


@renders
def test_operator_reads_foyles_config_and_key_file_and_writes_training_files_to_a_claim(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = _by_kind(rendered, "Deployment")["foyle-operator"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_dir, config_file = args["--foyle-config"].rsplit("/", 1)
    config_volume = volumes[mounts[config_dir]["name"]]
    [config_map] = [
        c
        for c in _by_kind(rendered, "ConfigMap").values()
        if c["metadata"]["name"] == config_volume["configMap"]["name"]
    ]
    config = yaml.safe_load(config_map["data"][config_file])
    [training] = config["learner"]["exampleDirs"]
    claim = volumes[mounts[training]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in _by_kind(rendered, "PersistentVolumeClaim")
    assert args["--learn-from"] == "both"
    # The key, once configured, is a file from the Secret (openai.apiKeyFile), never an env var.
    key = volumes["openai-key"]["secret"]
    assert key["optional"] is True and mounts["/var/run/secrets/foyle-openai"]["readOnly"]
    commented = config_map["data"][config_file].split("# openai:", 1)[1]
    assert "apiKeyFile: /var/run/secrets/foyle-openai/" in commented
    assert not [e for e in container.get("env", []) if "KEY" in e["name"].upper()]


@renders
def test_every_pod_stops_well_inside_its_grace_period(rendered: list[dict[str, Any]]) -> None:
    """SIGTERM ends either process within 5 s (tests/test_run_kube.py, test_operator.py)."""
    for workload in (o for o in rendered if o["kind"] in WORKLOADS):
        assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10


@renders
def test_rbac_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    assert not [o for o in rendered if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = _by_kind(rendered, "Role")
    assert set(roles) == {"foyle-ingester", "foyle-operator"}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert set(rule["apiGroups"]) <= {GROUP, ""}, rule
            if rule["apiGroups"] == [""]:
                assert (rule["resources"], rule["verbs"]) == (["events"], ["create"]), rule
            # no verb on a subresource the CRD does not have (BlockLog, Session: issue 19)
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                if sub == "status":
                    assert _SUBRESOURCE_BY_PLURAL[plural], rule
    for binding in _by_kind(rendered, "RoleBinding").values():
        assert binding["roleRef"]["kind"] == "Role"
        [subject] = binding["subjects"]
        assert (subject["kind"], subject["name"]) == ("ServiceAccount", binding["roleRef"]["name"])
        assert binding["metadata"]["namespace"] == "foyle"  # where the resources are
    accounts = _by_kind(rendered, "ServiceAccount")
    for workload in (o for o in rendered if o["kind"] in WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == workload["metadata"]["name"]
        account = accounts[pod["serviceAccountName"]]
        assert account["metadata"]["namespace"] == workload["metadata"]["namespace"]
        [subject] = _by_kind(rendered, "RoleBinding")[account["metadata"]["name"]]["subjects"]
        assert subject["namespace"] == account["metadata"]["namespace"]


def test_one_image_recipe_for_the_dockerfile_and_the_registry_less_build() -> None:
    """CI's image (hack/image.sh) and the users' `docker build` run one install step on one
    package list, and take their runtime configuration from the Dockerfile."""
    dockerfile = (REPO / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    runs = [line for line in lines if line.startswith("RUN ")]
    assert runs == ["RUN bash /tmp/src/image/install.sh /tmp/src && rm -rf /tmp/src"]
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM debian:bookworm-slim"]
    builder = (REPO / "hack" / "image.sh").read_text()
    assert "bash /tmp/src/image/install.sh /tmp/src" in builder
    assert 'debootstrap --variant=minbase "${SUITE}"' in builder and "SUITE=bookworm" in builder
    assert '--dockerfile "${REPO}/Dockerfile"' in builder
    install = (REPO / "deploy" / "image" / "install.sh").read_text()
    assert '"${SRC}/image/packages.txt"' in install and '"${SRC}/constraints.txt"' in install
    # `docker build` sees only what .dockerignore lets through: every COPY source must pass
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = [w for line in lines if line.startswith("COPY ") for w in line.split()[1:-1]]
    assert copied and set(copied) <= allowed, set(copied) - allowed
    for text in (dockerfile, builder):  # no second list of packages anywhere
        assert "apt-get install" not in text.replace("apt-get install -y -qq debootstrap", "")
        assert "pip install" not in text
    config = pack_image.dockerfile_config(dockerfile)
    assert config["User"].split(":")[0] == "65532"
    assert (config["Entrypoint"], config["Cmd"]) == (["foylectl"], ["--help"])
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_hack_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is not installed (pip install -e '.[test]')"
    scripts = sorted((REPO / "hack").glob("*.sh"))
    assert {p.name for p in scripts} >= {
        "kind-up.sh",
        "kind-e2e.sh",
        "control-plane.sh",
        "image.sh",
    }
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "set -euo pipefail" in text, script.name
    proc = subprocess.run(
        [
            shellcheck,
            "--severity=style",
            *map(str, scripts),
            str(REPO / "deploy" / "image" / "install.sh"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
