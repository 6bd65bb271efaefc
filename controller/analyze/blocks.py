"""One block shape for every spelling of a notebook cell found in the logs.

Foyle logs its Block proto in snake_case or camelCase with the kind as a
string enum; RunMe/vscode LogEvents carry cells (`value`, `languageId`,
`CELL_KIND_*`). Everything downstream (Trace specs, BlockLog status, learned
Examples) compares blocks, so they are brought to the single shape of
`controller.api.kinds.BLOCK_SCHEMA` here:
`{kind, language, contents, outputs: [{items: [{mime, textData}]}], id}`, plus
`metadata` (a string map) and `traceIds` when the log has them: Foyle's own
ghost-cell filter reads `metadata._ghostCell`, and its training files keep both
(Block fields 8 and 6), so dropping them loses what Foyle would have kept.

A cell's id is read as Foyle's GetCellID reads it (app/pkg/runme/converters):
`runme.dev/id` (RunMe's in-memory key) first, then `id` (the serialised key);
a key that is present wins even when its value is empty.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from controller.api.entry import EXIT_CODE_RANGE

UNKNOWN_KIND = "UNKNOWN_BLOCK_KIND"
_KINDS: dict[Any, str] = {
    0: UNKNOWN_KIND,
    1: "MARKUP",
    2: "CODE",
    UNKNOWN_KIND: UNKNOWN_KIND,
    "MARKUP": "MARKUP",
    "CODE": "CODE",
    # vscode's NotebookCellKind uses the same numbers: 1 markup, 2 code.
    "CELL_KIND_MARKUP": "MARKUP",
    "CELL_KIND_CODE": "CODE",
}
CELL_ID_KEYS = ("runme.dev/id", "id")  # Foyle's RunmeIdField, then IdField
# At most 10 digits: a longer number is no exit code, and no resource could hold it.
_EXIT_CODE = re.compile(r"^\s*exitCode:\s*(-?\d{1,10})\s*$")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _kind(raw: Any) -> str:
    if isinstance(raw, bool):  # bool is an int: True must not read as MARKUP
        return UNKNOWN_KIND
    try:
        return _KINDS.get(raw, UNKNOWN_KIND)
    except TypeError:  # unhashable (a list or dict where the enum should be)
        return UNKNOWN_KIND


def _text_data(item: dict[str, Any]) -> str:
    """The item's text: Foyle's `textData`, or a RunMe cell item's `data` (bytes, base64 in JSON)."""
    if "textData" in item or "text_data" in item:
        return _str(item.get("textData", item.get("text_data")))
    data = item.get("data")
    if not isinstance(data, str):
        return ""
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return data


def _metadata(raw: Any) -> dict[str, str]:
    """A map<string,string>: entries whose key or value is not a string are dropped."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def _with_extras(block: dict[str, Any], metadata: dict[str, str], trace_ids: Any) -> dict[str, Any]:
    """Add `metadata` and `traceIds` only when present, so plain blocks keep their shape."""
    if metadata:
        block["metadata"] = metadata
    ids = [t for t in _list(trace_ids) if isinstance(t, str)]
    if ids:
        block["traceIds"] = ids
    return block


def _outputs(raw: Any) -> list[dict[str, Any]]:
    return [
        {
            "items": [
                {"mime": _str(item.get("mime")), "textData": _text_data(item)}
                for item in _list(output.get("items"))
                if isinstance(item, dict)
            ]
        }
        for output in _list(raw)
        if isinstance(output, dict)
    ]


def normalise_block(raw: Any) -> dict[str, Any]:
    """A Foyle Block (any spelling) in the one shape; missing fields become "" / []."""
    block = raw if isinstance(raw, dict) else {}
    normalised = {
        "kind": _kind(block.get("kind")),
        "language": _str(block.get("language")),
        "contents": _str(block.get("contents")),
        "outputs": _outputs(block.get("outputs")),
        "id": _str(block.get("id")),
    }
    trace_ids = block.get("traceIds", block.get("trace_ids"))
    return _with_extras(normalised, _metadata(block.get("metadata")), trace_ids)


def cell_id(cell: dict[str, Any]) -> str:
    """The cell's id as Foyle's GetCellID reads it (see the module docstring)."""
    metadata = cell.get("metadata")
    if not isinstance(metadata, dict):
        return ""
    for key in CELL_ID_KEYS:
        if key in metadata:
            return _str(metadata[key])
    return ""


def cell_to_block(cell: dict[str, Any]) -> dict[str, Any]:
    """A vscode/RunMe notebook cell (from a LogEvent) as a block, as Foyle's CellToBlock makes it."""
    block = {
        "kind": _kind(cell.get("kind")),
        "language": _str(cell.get("languageId")),
        "contents": _str(cell.get("value")),
        "outputs": _outputs(cell.get("outputs")),
        "id": cell_id(cell),
    }
    return _with_extras(block, _metadata(cell.get("metadata")), None)


def exit_code_from_outputs(outputs: Any) -> int | None:
    """The N of the first output item reading "exitCode: N" (how Foyle's executor reports it)."""
    for output in _list(outputs):
        if not isinstance(output, dict):
            continue
        for item in _list(output.get("items")):
            if isinstance(item, dict) and (match := _EXIT_CODE.match(_text_data(item))):
                code = int(match.group(1))
                return code if code in EXIT_CODE_RANGE else None
    return None
