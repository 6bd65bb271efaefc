"""deploy/ on a real kube-apiserver: Pod Security admission and least-privilege RBAC, enforced.

The server runs its default admission plugins (PodSecurity among them) and
`--authorization-mode=RBAC`; the workloads run here as processes with the
tokens of deploy/'s ServiceAccounts, so what their Roles allow is what they get.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api.names import name_for_id
from controller.api.resource import new_resource
from controller.store.base import NotFound
from controller.store.kube import KubeStore
from tests.cli_helpers import RunningController, wait_for
from tests.control_plane import REPO, ControlPlane
from tests.test_operator import running_operator

pytestmark = pytest.mark.apiserver

NAMESPACE = "foyle"
INGESTER = ("foyle-ingester", "foyle-ingester")  # ServiceAccount name, its namespace
OPERATOR = ("foyle-operator", "foyle")
LEARNED_BLOCK = "23706965-8e3b-440d-ba1a-1e1cc035fbd4"  # the samples' one learnable block
SETTLED_TRACE = "01HYRKRJETPVQA84VQR9AR6J30"  # a RunMe trace of the samples
DEADLINE = 60.0


@pytest.fixture(scope="module")
def deployed(apiserver: ControlPlane) -> Iterator[list[dict[str, Any]]]:
    """`kubectl apply -k deploy/` on the server; the rendered objects.

    The server is the session's: deploy/ labels the CRDs it shares with crds/, so
    they are applied from crds/ again after, as the other modules expect them.
    """
    apiserver.kubectl("apply", "-k", REPO / "deploy")
    rendered = apiserver.kubectl("kustomize", REPO / "deploy").stdout
    yield [doc for doc in yaml.safe_load_all(rendered) if doc]
    apiserver.kubectl("apply", "-k", REPO / "crds")


def _pod_from(workload: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    template = workload["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{workload['metadata']['name']}-dry-run",
            "namespace": namespace or workload["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def _workloads(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in ("DaemonSet", "Deployment")}


def test_a_pod_from_each_workload_template_is_admitted_in_its_namespace(
    apiserver: ControlPlane, deployed: list[dict[str, Any]]
) -> None:
    workloads = _workloads(deployed)
    assert set(workloads) == {"foyle-ingester", "foyle-operator"}
    for workload in workloads.values():
        pod = _pod_from(workload)
        proc = apiserver.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod)
        )
        admitted = json.loads(proc.stdout)
        assert admitted["metadata"]["namespace"] == pod["metadata"]["namespace"]
        assert admitted["spec"]["serviceAccountName"] == workload["metadata"]["name"]
        assert "would violate PodSecurity" not in proc.stderr, proc.stderr


def test_the_ingester_pod_is_refused_where_restricted_is_enforced(
    apiserver: ControlPlane, deployed: list[dict[str, Any]]
) -> None:
    pod = _pod_from(_workloads(deployed)["foyle-ingester"], namespace=NAMESPACE)
    # An account that exists in foyle, so that only Pod Security can refuse the pod.
    pod["spec"] = {**pod["spec"], "serviceAccountName": "foyle-operator"}
    proc = apiserver.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert proc.returncode != 0
    # hostPath is the one thing restricted refuses: the pod meets it in every other respect.
    reasons = proc.stderr.split('violates PodSecurity "restricted:latest": ', 1)[-1].strip()
    assert reasons == (
        'restricted volume types (volumes "logs", "journal" use restricted volume type "hostPath")'
    ), proc.stderr


def _kubeconfig_for(apiserver: ControlPlane, account: tuple[str, str], path: Path) -> Path:
    """The admin kubeconfig with the token of a ServiceAccount instead (TokenRequest)."""
    name, namespace = account
    token = apiserver.kubectl("create", "token", name, "-n", namespace).stdout.strip()
    config = yaml.safe_load(apiserver.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def identities(
    apiserver: ControlPlane,
    deployed: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Path]]:
    workdir = tmp_path_factory.mktemp("identities")
    yield {
        account[0]: _kubeconfig_for(apiserver, account, workdir / f"{account[0]}.kubeconfig")
        for account in (INGESTER, OPERATOR)
    }


def test_ingester_and_operator_work_with_their_own_service_account_tokens(
    apiserver: ControlPlane, identities: dict[str, Path], testdata: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(testdata, logs)
    admin = KubeStore(NAMESPACE, kubeconfig=str(apiserver.kubeconfig))
    # A sample's Trace written before (by a run keeping Traces): the samples finished in
    # 2024, so the ingester settles it at once and deletes it, within its Role.
    spec = {"id": SETTLED_TRACE, "kind": "RunMe", "startTime": "2024-05-25T19:31:09Z"}
    written = admin.create(new_resource("Trace", SETTLED_TRACE, spec))
    ingester = RunningController(
        logs,
        tmp_path / "ingester",
        "--store=kube",
        f"--namespace={NAMESPACE}",
        f"--kubeconfig={identities['foyle-ingester']}",
        "--node=node-a",
        "--rescan-interval=1",
    )
    name = name_for_id(LEARNED_BLOCK)

    def example() -> dict[str, Any] | None:
        try:
            return admin.get("Example", name)
        except NotFound:
            return None

    try:
        with running_operator(identities["foyle-operator"], NAMESPACE, tmp_path):
            wait_for(
                lambda: len(admin.list("BlockLog")) == 11 and admin.list("LogFile"),
                DEADLINE,
                f"the ingester's BlockLogs and LogFiles\n{ingester.output()}",
            )
            wait_for(example, DEADLINE, "the operator's Example")
            settled = written["metadata"]["name"]
            wait_for(
                lambda: settled not in {t["metadata"]["name"] for t in admin.list("Trace")},
                DEADLINE,
                f"the settled Trace {settled} deleted",
            )
            admin.delete("BlockLog", name)
            wait_for(lambda: example() is None, DEADLINE, "the Example's deletion")
        assert "Forbidden" not in ingester.output()
        assert ingester.terminate() == 0, ingester.output()
    finally:
        admin.close()
        if ingester.proc.poll() is None:
            ingester.kill()


@pytest.mark.parametrize(
    "identity, verb, resource",
    [
        ("foyle-ingester", "list", "examples"),  # learning is the operator's
        ("foyle-ingester", "patch", "blocklogs"),  # PUT with resourceVersion only
        ("foyle-ingester", "list", "pods"),
        ("foyle-operator", "create", "traces"),
        ("foyle-operator", "delete", "traces"),  # the ingester settles and deletes them
        ("foyle-operator", "update", "blocklogs"),  # the operator never writes its inputs
        ("foyle-operator", "patch", "blocklogs"),
        ("foyle-operator", "patch", "sessions"),
        ("foyle-operator", "update", "blocklogs/status"),  # status is the ingester's
        ("foyle-operator", "list", "secrets"),
    ],
)
def test_a_verb_the_role_does_not_grant_is_refused(
    apiserver: ControlPlane, identities: dict[str, Path], identity: str, verb: str, resource: str
) -> None:
    kubeconfig = identities[identity]
    can = apiserver.kubectl(
        "auth", "can-i", verb, resource, "-n", NAMESPACE, kubeconfig=kubeconfig, check=False
    )
    assert can.stdout.strip() == "no", (identity, verb, resource, can.stdout, can.stderr)
    if verb == "list":  # and the request itself is refused by the server, not only predicted
        proc = apiserver.kubectl(
            "get", resource, "-n", NAMESPACE, kubeconfig=kubeconfig, check=False
        )
        assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "identity, verb, resource",
    [
        ("foyle-ingester", "update", "traces"),
        ("foyle-ingester", "delete", "traces"),  # settled Traces (retention.py)
        ("foyle-ingester", "update", "blocklogs"),  # spec and status in one PUT
        ("foyle-ingester", "update", "traces/status"),
        ("foyle-ingester", "delete", "logfiles"),
        ("foyle-operator", "watch", "blocklogs"),
        ("foyle-operator", "watch", "sessions"),
        ("foyle-operator", "delete", "examples"),
        ("foyle-operator", "create", "events"),
    ],
)
def test_a_verb_the_role_grants_is_allowed(
    apiserver: ControlPlane, identities: dict[str, Path], identity: str, verb: str, resource: str
) -> None:
    can = apiserver.kubectl(
        "auth", "can-i", verb, resource, "-n", NAMESPACE, kubeconfig=identities[identity]
    )
    assert can.stdout.strip() == "yes"
