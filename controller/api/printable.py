"""Text from logs and users made safe for a terminal: control characters shown, not obeyed.

Log data (file names, commands, outputs) reaches tables, error lines and the
controller's own log. A colour code or terminal-title sequence must be shown,
never obeyed (issue 13); so must a newline that would forge a log line, and the
bidirectional-text controls (U+202E and the like) that reorder what is shown
(issue 24).
"""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL, the C1 controls (0x9b is CSI), and the
# invisible formatting controls that reorder or hide text: the Arabic letter mark,
# the zero-width and directional marks, embeddings, overrides and isolates.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_LINE_BREAKS = re.compile("[\n\t]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control characters shown as escapes instead of reaching the terminal."""
    return _CONTROL.sub(_escape, text)


def one_line(text: str) -> str:
    """`printable`, newlines and tabs escaped too: data that must stay on its line."""
    return printable(_LINE_BREAKS.sub(lambda m: "\\n" if m.group() == "\n" else "\\t", text))
