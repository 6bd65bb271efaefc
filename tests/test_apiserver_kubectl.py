"""kubectl on a real API server shows what `foylectl get` shows (printer columns, names, schema).

The namespace holds what `foylectl analyze --store kube` writes from the
shared samples (Examples included); kubectl's tables come from the CRDs'
additionalPrinterColumns, foylectl's from controller/api/kinds.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.api.kinds import BLOCKLOG, KINDS, KindInfo
from tests.cli_helpers import foylectl
from tests.control_plane import ControlPlane

pytestmark = pytest.mark.apiserver

_TYPES = {"object": "Object", "integer": "integer", "boolean": "boolean", "string": "string"}


@pytest.fixture(scope="module")
def loaded(
    apiserver: ControlPlane, testdata: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A namespace with everything analyze derives from the samples; its name."""
    namespace = apiserver.new_namespace("get")
    workdir = tmp_path_factory.mktemp("get")
    foylectl(
        "analyze",
        "--logs",
        testdata,
        "--store",
        "kube",
        "--namespace",
        namespace,
        "--kubeconfig",
        apiserver.kubeconfig,
        "--state-dir",
        workdir / "state",
        "--training-dir",
        workdir / "training",
    )
    return namespace


def _foylectl_get(apiserver: ControlPlane, namespace: str, *args: str) -> str:
    where = ("--store", "kube", "--namespace", namespace, "--kubeconfig", apiserver.kubeconfig)
    return foylectl("get", *args, *where).stdout


def _without_age(table: str) -> list[str]:
    """The table with every age (AGE, and date columns such as an Example's INDEXED: seconds
    tick between the two commands) read as one placeholder, and runs of blanks as one."""
    lines = table.rstrip("\n").splitlines()
    assert lines and lines[0].endswith("AGE"), table
    ages = [re.sub(r"(?<=\s)\d+[smhdy](\d+[smh])?(?=\s|$)", "<age>", line) for line in lines]
    return [re.sub(r"\s+", " ", line) for line in ages]


@pytest.mark.parametrize(
    "args",
    [("blocklogs",), ("traces", "-o", "wide"), ("logfiles",), ("examples", "-o", "wide")],
    ids=" ".join,
)
def test_kubectl_get_prints_the_table_foylectl_get_prints(
    apiserver: ControlPlane, loaded: str, args: tuple[str, ...]
) -> None:
    kubectl = apiserver.kubectl("get", *args, "-n", loaded).stdout
    ours = _foylectl_get(apiserver, loaded, *args)
    assert len(kubectl.splitlines()) > 1
    assert _without_age(kubectl) == _without_age(ours)


def test_kubectl_get_of_the_foyle_category_lists_every_kind(
    apiserver: ControlPlane, loaded: str
) -> None:
    kubectl = apiserver.kubectl("get", "foyle", "-n", loaded, "-o", "name").stdout.split()
    ours = [
        n
        for info in KINDS
        for n in _foylectl_get(apiserver, loaded, info.plural, "-o", "name").split()
    ]
    assert {n.split(".")[0] for n in ours} == {info.singular for info in KINDS}
    assert sorted(kubectl) == sorted(ours)


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_kubectl_knows_each_kind_by_its_singular_and_short_names(
    apiserver: ControlPlane, loaded: str, info: KindInfo
) -> None:
    listed = apiserver.kubectl("get", info.plural, "-n", loaded, "-o", "name").stdout
    assert listed.strip()
    for alias in (info.singular, *info.short_names):
        assert apiserver.kubectl("get", alias, "-n", loaded, "-o", "name").stdout == listed


def test_kubectl_explain_blocklog_status_shows_the_schema_of_kinds_py(
    apiserver: ControlPlane,
) -> None:
    text = apiserver.kubectl("explain", "blocklog.status").stdout
    fields = dict(re.findall(r"^  (\w+)\t<(\w+)>$", text, flags=re.MULTILINE))
    schema = BLOCKLOG.status_schema["properties"]
    assert fields == {name: _TYPES[prop["type"]] for name, prop in schema.items()}
    assert "enum: Unknown, Accepted, Rejected" in text
