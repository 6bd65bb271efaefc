"""Printing resources the way kubectl does: table, wide, json, yaml, name, describe."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from controller.api.kinds import GROUP, KindInfo, Resource
from controller.api.resource import get_path, parse_rfc3339

OUTPUTS = ("table", "wide", "json", "yaml", "name")


def age(timestamp: str | None, now: float | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if not timestamp:
        return "<unknown>"
    seconds = max(0, int((now or time.time()) - parse_rfc3339(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any, is_age: bool) -> str:
    """A cell as kubectl prints a CRD's printer column: missing is empty, nothing truncated."""
    if is_age:
        return age(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def table(info: KindInfo, items: Iterable[Resource], *, wide: bool = False) -> str:
    columns = [c for c in info.columns if wide or c.priority == 0]
    header = ["NAME"] + [c.name.upper() for c in columns]
    rows = [header]
    for obj in items:
        row = [obj["metadata"]["name"]]
        for column in columns:
            is_age = column.json_path == ".metadata.creationTimestamp"
            row.append(_cell(get_path(obj, column.json_path), is_age))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def as_list(items: list[Resource]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}


def qualified_name(info: KindInfo, obj: Resource) -> str:
    """`-o name` as kubectl prints it: blocklog.foyle.io/NAME."""
    return f"{info.singular}.{GROUP}/{obj['metadata']['name']}"


def render(info: KindInfo, items: list[Resource], output: str, *, single: bool = False) -> str:
    if output in ("table", "wide"):
        return table(info, items, wide=output == "wide")
    if output == "name":
        return "\n".join(qualified_name(info, o) for o in items)
    doc: Any = items[0] if single else as_list(items)
    if output == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).rstrip()


def describe(obj: Resource, related: dict[str, list[Resource]] | None = None) -> str:
    """A readable, indented view of one resource, with related resources summarised."""
    lines = [
        f"Name:         {obj['metadata']['name']}",
        f"Kind:         {obj['kind']}",
        f"Created:      {obj['metadata'].get('creationTimestamp', '')}"
        f" ({age(obj['metadata'].get('creationTimestamp'))} ago)",
        f"Version:      {obj['metadata'].get('resourceVersion', '')}"
        f" (generation {obj['metadata'].get('generation', '')})",
    ]
    for section in ("spec", "status"):
        lines.append(f"{section.capitalize()}:")
        lines.extend(_describe_value(obj.get(section) or {}, indent=2))
    for title, objects in (related or {}).items():
        lines.append(f"{title}:")
        if not objects:
            lines.append("  <none>")
        for other in objects:
            spec, status = other.get("spec", {}), other.get("status", {})
            bits = [spec.get("kind", ""), status.get("phase", ""), spec.get("startTime", "")]
            if "exitCode" in spec:
                bits.append(f"exit {spec['exitCode']}")
            lines.append(
                f"  {spec.get('id', other['metadata']['name'])}  " + "  ".join(b for b in bits if b)
            )
    return "\n".join(lines)


def _describe_value(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:")
                out.extend(_describe_value(item, indent + 2))
            else:
                out.append(f"{pad}{key}: {_scalar(item)}")
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                inner = _describe_value(item, indent + 2)
                if inner:
                    inner[0] = f"{pad}- " + inner[0].lstrip()
                out.extend(inner)
            else:
                out.append(f"{pad}- {_scalar(item)}")
        return out
    return [f"{pad}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if "\n" in value:
            return json.dumps(value, ensure_ascii=False)
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == [] or value == {}:
        return "<none>"
    return str(value)
