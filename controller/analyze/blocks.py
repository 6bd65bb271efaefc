"""One block shape for every spelling of a notebook cell found in the logs.

Foyle logs its Block proto in snake_case or camelCase with the kind as a
string enum; RunMe/vscode LogEvents carry cells (`value`, `languageId`,
`CELL_KIND_*`). Everything downstream (Trace specs, BlockLog status, learned
Examples) compares blocks, so they are brought to the single shape of
`controller.api.kinds.BLOCK_SCHEMA` here:
`{kind, language, contents, outputs: [{items: [{mime, textData}]}], id}`.
"""

from __future__ import annotations

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
    return _str(item.get("textData", item.get("text_data")))


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
    return {
        "kind": _kind(block.get("kind")),
        "language": _str(block.get("language")),
        "contents": _str(block.get("contents")),
        "outputs": _outputs(block.get("outputs")),
        "id": _str(block.get("id")),
    }


def cell_to_block(cell: dict[str, Any]) -> dict[str, Any]:
    """A vscode/RunMe notebook cell (from a LogEvent) as a block."""
    metadata = cell.get("metadata")
    return {
        "kind": _kind(cell.get("kind")),
        "language": _str(cell.get("languageId")),
        "contents": _str(cell.get("value")),
        "outputs": _outputs(cell.get("outputs")),
        "id": _str(metadata.get("id")) if isinstance(metadata, dict) else "",
    }


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
