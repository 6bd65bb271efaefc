"""The CRDs in crds/ are what kinds.py says, and valid, structural Kubernetes objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.api import crdgen
from controller.api.kinds import GROUP, KINDS, KindInfo

CRDS = Path(__file__).resolve().parent.parent / "crds"
PRESERVE = "x-kubernetes-preserve-unknown-fields"


def _committed(info: KindInfo) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"{info.plural}.{GROUP}.yaml").read_text(encoding="utf-8"))


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.spec.blockIds[]`)."""
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{key}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_committed_crd_equals_what_crdgen_generates(info: KindInfo) -> None:
    path = CRDS / f"{info.plural}.{GROUP}.yaml"
    assert path.read_text(encoding="utf-8") == crdgen.render(info), (
        f"{path.name} drifted from kinds.py: run `python -m controller.api.crdgen --out crds/`"
    )


def test_crds_directory_holds_one_file_per_kind_and_the_kustomization_of_them() -> None:
    crds = sorted(f"{k.plural}.{GROUP}.yaml" for k in KINDS)
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted([*crds, crdgen.KUSTOMIZATION])
    kustomization = yaml.safe_load((CRDS / crdgen.KUSTOMIZATION).read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == crds


def test_crdgen_cli_writes_the_committed_files(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    for name in [*(f"{info.plural}.{GROUP}.yaml" for info in KINDS), crdgen.KUSTOMIZATION]:
        assert (tmp_path / name).read_bytes() == (CRDS / name).read_bytes()


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_crd_is_a_valid_apiextensions_v1_object(info: KindInfo) -> None:
    crd = _committed(info)
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_schema_node_has_a_type(info: KindInfo) -> None:
    untyped = [
        path or "<root>" for path, node in _nodes(_schema(_committed(info))) if "type" not in node
    ]
    assert untyped == []


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_schema_describes_spec_and_status_from_kinds_and_not_metadata(info: KindInfo) -> None:
    properties = _schema(_committed(info))["properties"]
    assert properties["metadata"] == {"type": "object"}
    # atomic: no owner per nested key in managedFields (every write is a whole PUT)
    assert properties["spec"] == {**info.spec_schema, "x-kubernetes-map-type": "atomic"}
    assert properties["status"] == {**info.status_schema, "x-kubernetes-map-type": "atomic"}


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_unknown_fields_are_preserved_only_where_kinds_says(info: KindInfo) -> None:
    in_crd = {p for p, node in _nodes(_schema(_committed(info))) if node.get(PRESERVE)}
    in_kinds = {
        f".{part}{p}"
        for part, schema in (("spec", info.spec_schema), ("status", info.status_schema))
        for p, node in _nodes(schema)
        if node.get(PRESERVE)
    }
    assert in_crd == in_kinds
    # Everything else must be pruned, so every other object lists its properties or is a
    # typed map (a Block's metadata: map<string,string>).
    for path, node in _nodes(_schema(_committed(info))):
        if node["type"] == "object" and path not in in_crd and path != ".metadata":
            typed = "properties" in node or "additionalProperties" in node
            assert typed, f"{path} is an object without properties"


def test_free_form_fields_are_exactly_the_trace_request_and_response() -> None:
    preserved = {
        (info.kind, path)
        for info in KINDS
        for path, node in _nodes(_schema(_committed(info)))
        if node.get(PRESERVE)
    }
    assert preserved == {("Trace", ".spec.request"), ("Trace", ".spec.response")}


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_printer_columns_equal_kinds_columns(info: KindInfo) -> None:
    columns = _committed(info)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c["type"], c["priority"]) for c in columns] == [
        (c.name, c.json_path, c.type, c.priority) for c in info.columns
    ]
    age = [c for c in columns if c["jsonPath"] == ".metadata.creationTimestamp"]
    assert age == [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 0}
    ]
