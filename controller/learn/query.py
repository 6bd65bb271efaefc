"""The retrieval query of a notebook and its embedded text, byte for byte as Foyle builds them.

Read from Foyle's source (jlewi/foyle at v0.0.45, commit 4c7f07f):

* `docs.PreprocessDoc` keeps the blocks up to the selected one and drops ghost
  cells (Foyle's own, not yet accepted suggestions: metadata `_ghostCell`
  parsed by Go's `strconv.ParseBool`; a value that does not parse is not a
  ghost).
* `docs.CreateQuery` then keeps the selected (last) block plus the run of
  MARKUP blocks just before it: the prose that states the user's intent,
  without older code that would drown it. Both learners store these blocks as
  `Example.query`, and `Vectorizer.Embed` embeds `BlocksToMarkdown` of them.
* `docs.BlocksToMarkdown` writes a CODE block as "```bash\\n" + contents +
  "\\n```\\n" (always `bash`, whatever the language), any other block as
  contents + "\\n", then each output item, except RunMe's two metadata mime
  types, as "```output\\n" + text + "\\n```\\n"; no separator between blocks.

Our docs end at the selected cell (the Generate request's doc, or a session's
notebook cut before the selected cell), so "selected" is the last block.
"""

from __future__ import annotations

from typing import Any

GHOST_KEY = "_ghostCell"  # converters.GhostKeyField
_PARSE_BOOL = {  # Go's strconv.ParseBool: exactly these spellings parse
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
SKIPPED_MIMES = ("stateful.runme/output-items", "stateful.runme/terminal")
CODE_LANG, OUTPUT_LANG = "bash", "output"  # docs.BASHLANG, docs.OUTPUTLANG

Block = dict[str, Any]


def create_query(blocks: list[Block]) -> list[Block]:
    """Foyle's CreateQuery for a doc whose selected block is the last one."""
    kept = [b for b in blocks if isinstance(b, dict) and not is_ghost(b)]
    if not kept:
        return []
    start = len(kept) - 1
    while start > 0 and kept[start - 1].get("kind") == "MARKUP":
        start -= 1
    return kept[start:]


def is_ghost(block: Block) -> bool:
    """True for a cell whose `_ghostCell` metadata Go's ParseBool reads as true."""
    metadata = block.get("metadata")
    if not isinstance(metadata, dict):
        return False
    value = metadata.get(GHOST_KEY)
    return isinstance(value, str) and _PARSE_BOOL.get(value, False) is True


def blocks_to_markdown(blocks: list[Block]) -> str:
    """Foyle's BlocksToMarkdown (no length limit): the text its vectorizer embeds."""
    return "".join(_markdown(b) for b in blocks if isinstance(b, dict))


def query_text(doc: dict[str, Any]) -> str:
    """The text Foyle would embed to find examples for `doc` (its CreateQuery, rendered)."""
    return blocks_to_markdown(create_query((doc or {}).get("blocks") or []))


def _markdown(block: Block) -> str:
    contents = _text(block.get("contents"))
    if block.get("kind") == "CODE":
        parts = [f"```{CODE_LANG}\n{contents}\n```\n"]
    else:
        parts = [contents + "\n"]
    for output in _dicts(block.get("outputs")):
        for item in _dicts(output.get("items")):
            if item.get("mime") in SKIPPED_MIMES:
                continue
            text = _text(item.get("textData", item.get("text_data")))
            parts.append(f"```{OUTPUT_LANG}\n{text}\n```\n")
    return "".join(parts)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
