"""Printing resources the way kubectl does: table, wide, json, yaml, name, jsonpath,
custom-columns, and describe.

Log data reaches these strings, so table cells and describe lines escape
control characters (issue 13): a colour code or a terminal-title sequence in a
log line is shown, never obeyed. JSON, YAML and jsonpath output are data for
programs and stay exact.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from controller.api.kinds import GROUP, KindInfo, Resource
from controller.api.printable import one_line, printable
from controller.api.resource import get_path, parse_rfc3339

OUTPUTS = ("table", "wide", "json", "yaml", "name")
TEMPLATE_OUTPUTS = ("jsonpath=", "custom-columns=")


def output_format(value: str) -> str:
    """argparse type of -o: one of OUTPUTS, or jsonpath=TEMPLATE / custom-columns=SPEC."""
    if value in OUTPUTS or (value.startswith(TEMPLATE_OUTPUTS) and value.partition("=")[2]):
        return value
    raise ValueError(value)


output_format.__name__ = "output format"  # argparse names the type in its error


def _cell_text(text: str) -> str:
    return one_line(text)


def age(timestamp: str | None, now: float | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if not timestamp:
        return "<unknown>"
    seconds = max(0, int((now or time.time()) - parse_rfc3339(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def qualified(info: KindInfo, name: str) -> str:
    """`blocklog.foyle.io/NAME`, as kubectl's -o name prints it (and `get` reads it back)."""
    return f"{info.singular}.{GROUP}/{name}"


def _cell(value: Any, is_age: bool) -> str:
    """A cell as kubectl prints a CRD's printer column: missing is empty, nothing truncated
    (checked against the real kubectl), control characters escaped."""
    if is_age:
        return age(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _cell_text(str(value))


def _labels(obj: Resource) -> str:
    labels = obj.get("metadata", {}).get("labels") or {}
    return _cell_text(",".join(f"{k}={v}" for k, v in labels.items())) or "<none>"


@dataclass
class Table:
    """Rows of one kind with kubectl's columns; widths persist, so `-w` rows stay aligned."""

    info: KindInfo
    wide: bool = False
    show_labels: bool = False
    with_kind: bool = False  # NAME as blocklog.foyle.io/NAME when several kinds are shown
    custom: list[tuple[str, str]] | None = None  # custom-columns: (header, JSONPath)
    # -w: columns start as wide as their schema allows, so later rows cannot push them
    reserve: bool = False
    widths: list[int] = field(default_factory=list)

    def header(self) -> list[str]:
        if self.custom is not None:
            return [name for name, _ in self.custom]
        names = ["NAME"] + [c.name.upper() for c in self._columns()]
        return names + ["LABELS"] if self.show_labels else names

    def cells(self, obj: Resource) -> list[str]:
        if self.custom is not None:
            from controller.cli.jsonpath import find, text

            return [
                _cell_text(",".join(text(v) for v in find(obj, path))) or "<none>"
                for _, path in self.custom
            ]
        name = obj["metadata"]["name"]
        row = [qualified(self.info, name) if self.with_kind else name]
        for column in self._columns():
            is_age = column.type == "date"  # kubectl shows a date column as an age
            row.append(_cell(get_path(obj, column.json_path), is_age))
        return row + [_labels(obj)] if self.show_labels else row

    def lines(self, items: Iterable[Resource], *, headers: bool = True) -> list[str]:
        rows = ([self.header()] if headers else []) + [self.cells(o) for o in items]
        return self.render(rows)

    def render(self, rows: list[list[str]]) -> list[str]:
        """Rows padded to the widest cell seen so far in each column."""
        for row in rows:
            self.widths = [max(w, len(c)) for w, c in zip(self._widths(len(row)), row, strict=True)]
        return [
            "   ".join(c.ljust(w) for c, w in zip(row, self.widths, strict=True)).rstrip()
            for row in rows
        ]

    def _widths(self, n: int) -> list[int]:
        if self.widths:
            return self.widths
        floors = [0] * n  # custom columns, NAME and LABELS: no bound known in advance
        if self.reserve and self.custom is None:
            for i, column in enumerate(self._columns(), start=1):
                floors[i] = _widest_value(self.info, column)
        return floors

    def _columns(self) -> list[Any]:
        return [c for c in self.info.columns if self.wide or c.priority == 0]


def _widest_value(info: KindInfo, column: Any) -> int:
    """The widest cell a column holds when its schema bounds it (an enum, a boolean, an age)
    or its usual width (a trace id), so `-w` rows stay under their header when a later row
    fills a cell an earlier one left empty."""
    if column.type == "date":
        return len("999d")
    if column.type == "boolean":
        return len("false")
    schema: Any = {"properties": {"spec": info.spec_schema, "status": info.status_schema}}
    for step in column.json_path.strip(".").split("."):
        schema = (schema.get("properties") or {}).get(step) or {}
    return max([column.typical_width, *(len(v) for v in schema.get("enum", ()))])


def parse_custom_columns(spec: str) -> list[tuple[str, str]]:
    """`NAME:.metadata.name,EXIT:.status.exitCode` -> [(header, path)]; ValueError if malformed."""
    from controller.cli.jsonpath import parse_path

    columns = []
    for part in spec.split(","):
        header, sep, path = part.partition(":")
        if not sep or not header.strip() or not path.strip():
            raise ValueError(f"custom-columns wants HEADER:JSONPATH[,...], not {part!r}")
        parse_path(path)
        columns.append((header.strip(), path.strip()))
    return columns


def as_list(items: list[Resource]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}


def document(doc: Any, output: str) -> str:
    """One document as json, yaml or a jsonpath template's text."""
    if output == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    if output.startswith("jsonpath="):
        from controller.cli.jsonpath import render_template

        return render_template(output.partition("=")[2], doc)
    import yaml

    text = yaml.dump(doc, Dumper=_block_dumper(), sort_keys=False, allow_unicode=True)
    return text.removesuffix("\n")  # print adds it back; a `|` block needs the rest exact


@functools.cache
def _block_dumper() -> type:
    """A SafeDumper that writes multi-line strings as `|` block scalars, as kubectl does.

    PyYAML falls back to a quoted form by itself where a block cannot say the
    string exactly (trailing spaces on a line, control characters).
    """
    import yaml

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    class BlockDumper(yaml.SafeDumper):
        pass

    BlockDumper.add_representer(str, represent_str)
    return BlockDumper


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
    return "\n".join(printable(line) for line in lines)


def _describe_value(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_cell_text(str(key))}:")
                out.extend(_describe_value(item, indent + 2))
            else:
                out.append(f"{pad}{_cell_text(str(key))}: {_scalar(item)}")
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
