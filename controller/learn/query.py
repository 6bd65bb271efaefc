"""The retrieval query of a notebook, built the way Foyle built it (docs.CreateQuery).

Foyle embedded the selected cell plus the run of MARKUP cells just before it:
the prose that states the user's intent, without older code that would drown
it. Our docs end at the selected cell, so "selected" is the last block. Ghost
cells (Foyle's own, not yet accepted suggestions, marked by metadata
`_ghostCell`) are dropped first: they are Foyle's words, not the user's.
Blocks render as Foyle's BlocksToMarkdown did: markup verbatim, code fenced.
"""

from __future__ import annotations

from typing import Any

GHOST_KEYS = ("_ghostCell", "ghostCell")
_TRUE = {"1", "t", "true"}  # Go's strconv.ParseBool spellings of true, case-folded


def query_text(doc: dict[str, Any]) -> str:
    """The text Foyle would embed to find examples for `doc`."""
    blocks = [b for b in (doc or {}).get("blocks") or [] if not is_ghost(b)]
    if not blocks:
        return ""
    start = len(blocks) - 1
    while start > 0 and blocks[start - 1].get("kind") == "MARKUP":
        start -= 1
    return "\n".join(_markdown(b) for b in blocks[start:])


def is_ghost(block: dict[str, Any]) -> bool:
    """True for a cell marked as a ghost cell; absent metadata means a real cell."""
    metadata = block.get("metadata") or {}
    return any(str(metadata.get(key, "")).strip().lower() in _TRUE for key in GHOST_KEYS)


def _markdown(block: dict[str, Any]) -> str:
    contents = block.get("contents") or ""
    if block.get("kind") == "CODE":
        return f"```{block.get('language') or ''}\n{contents}\n```"
    return contents
