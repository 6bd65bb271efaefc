"""crds/ on a real kube-apiserver: applied, and every kind's server-side validation and pruning.

The objects are the ones the controllers write (`foylectl analyze` on the
shared samples, Examples included), so "accepted and nothing pruned" is checked
on real data, not on hand-made fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.store.base import StoreError
from controller.store.kube import KubeStore
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import comparable, foylectl
from tests.control_plane import CRD_NAMES, REPO, ControlPlane

pytestmark = pytest.mark.apiserver

KINDS = ("LogFile", "Trace", "BlockLog", "Example")


def test_the_served_crds_are_the_generated_ones(apiserver: ControlPlane) -> None:
    """`kubectl diff` (a server-side dry-run apply) finds nothing: no defaulting drift."""
    proc = apiserver.kubectl("diff", "-k", REPO / "crds", check=False)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr
    served = apiserver.kubectl("get", "crd", "-o", "name").stdout.split()
    assert sorted(served) == sorted(
        f"customresourcedefinition.apiextensions.k8s.io/{name}.foyle.io" for name in CRD_NAMES
    )


def test_every_object_the_controllers_write_is_accepted_and_nothing_is_pruned(
    apiserver: ControlPlane, testdata: Path, tmp_path: Path
) -> None:
    state = tmp_path / "oneshot"
    foylectl("analyze", "--logs", testdata, "--state-dir", state, "--training-dir", tmp_path / "tr")
    local = SQLiteStore(state / "store.db")
    namespace = apiserver.new_namespace("crd")
    with KubeStore(namespace, kubeconfig=str(apiserver.kubeconfig)) as kube:
        for kind in KINDS:
            written = local.list(kind)
            assert written, kind
            for obj in written:
                meta = {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
                created = kube.create({**obj, "metadata": meta})
                if obj.get("status"):
                    kube.update_status({**created, "status": obj["status"]})
            want = comparable(written)
            for view in want.values():
                view["metadata"].pop("ownerReferences", None)  # uids of another store
            stored = kube.list(kind)
            got = comparable(stored)
            for view in got.values():
                assert view["metadata"].pop("namespace") == namespace
            assert got == want, kind
            # spec and status are atomic: no owner per nested key in etcd (issue 19); an
            # update clears the record (KubeStore.update), so a kind written twice has none
            for obj in stored:
                for entry in obj["metadata"].get("managedFields", []):
                    fields = entry["fieldsV1"]
                    assert (fields.get("f:spec", {}), fields.get("f:status", {})) == ({}, {})


@pytest.mark.parametrize(
    "kind, spec, message",
    [
        ("Trace", {"id": "t", "kind": "Bogus"}, 'spec.kind: Unsupported value: "Bogus"'),
        ("Trace", {"id": "t", "kind": "RunMe", "exitCode": "one"}, "spec.exitCode: Invalid value"),
        ("BlockLog", {"execTraceIds": "t1"}, "spec.execTraceIds: Invalid value"),
        ("LogFile", {"path": 7}, "spec.path: Invalid value"),
    ],
)
def test_a_bad_object_is_rejected_with_the_servers_message(
    apiserver: ControlPlane, kind: str, spec: dict[str, object], message: str
) -> None:
    namespace = apiserver.new_namespace("bad")
    body = {
        "apiVersion": "foyle.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": spec,
    }
    proc = apiserver.kubectl("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    with (
        KubeStore(namespace, kubeconfig=str(apiserver.kubeconfig)) as kube,
        pytest.raises(StoreError, match=message.split(":")[0]),
    ):
        kube.create(body)


def test_a_spec_update_clears_the_servers_field_ownership_record(apiserver: ControlPlane) -> None:
    """managedFields (about 360 bytes of each BlockLog in etcd, issue 19) go with the first
    spec update and do not come back with later writes, spec or status."""
    namespace = apiserver.new_namespace("managed")
    with KubeStore(namespace, kubeconfig=str(apiserver.kubeconfig)) as kube:
        created = kube.create(
            {"apiVersion": "foyle.io/v1alpha1", "kind": "BlockLog", "metadata": {"name": "b"}}
            | {"spec": {"id": "b"}, "status": {"executions": 1}}
        )
        assert created["metadata"]["managedFields"]  # what the server records of a create
        kube.update({**created, "spec": {"id": "b", "genTraceId": "g"}})
        current = kube.get("BlockLog", "b")
        kube.update_status({**current, "status": {"executions": 2}})
        current = kube.get("BlockLog", "b")
        kube.update({**current, "spec": {"id": "b", "genTraceId": "h"}})
    shown = apiserver.kubectl(
        "get", "blocklog", "b", "-n", namespace, "-o", "json", "--show-managed-fields"
    )
    stored = json.loads(shown.stdout)
    assert "managedFields" not in stored["metadata"]
    assert (stored["spec"]["genTraceId"], stored["status"]["executions"]) == ("h", 2)
