"""A normalised log entry: the unit that flows from log files into analysis.

Foyle and RunMe spell the same things differently (`time`/`ts`,
`message`/`msg`, `traceId`/`_id`, `request`/`req`, `response`/`resp`); an
Entry holds the one spelling. Entries round-trip through the journal as
plain dicts (`to_dict` / `from_dict`).

Order: entries sort by `sort_key` = (time, offset, digest). The offset keeps
a file's own order for equal times; the digest (CRC-32 of the raw line) makes
ties across files deterministic without depending on file names or on the
order in which files were read, so any feeding order gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

EVENT_KEY_PREFIX = "event/"
EXIT_CODE_RANGE = range(-(2**31), 2**31)  # what a process can return; the CRD field is int64


@dataclass(frozen=True, slots=True)
class Entry:
    time: float
    offset: int
    digest: int
    trace_id: str = ""  # traceId (Foyle) or _id (RunMe); "" when absent
    function: str = ""
    message: str = ""
    eval_mode: bool = False
    request: Any = None
    response: Any = None
    exit_code: int | None = None  # RunMe's top-level exitCode
    known_id: str = ""  # RunMe's knownID, the cell id
    block_ids: tuple[str, ...] = ()  # Foyle's top-level blockIds
    event: dict[str, Any] | None = None  # a LogEvent: eventId, eventType, selectedCellId, event
    context_id: str = ""  # Foyle's contextId: the RunMe session a line belongs to (issue 11)
    context: Any = None  # StreamGenerate's FullContext (the notebook and the selected cell)
    usage: Any = None  # LogLLMUsage's token counts

    @property
    def sort_key(self) -> tuple[float, int, int]:
        return (self.time, self.offset, self.digest)

    def to_dict(self) -> dict[str, Any]:
        """The non-default fields (payloads are shared, not copied: entries are read-only)."""
        data: dict[str, Any] = {"time": self.time, "offset": self.offset, "digest": self.digest}
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if not _is_default(value):
                data[name] = list(value) if name == "block_ids" else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        fields = dict(data)
        if "block_ids" in fields:
            fields["block_ids"] = tuple(fields["block_ids"])
        fields.setdefault("time", 0.0)
        fields.setdefault("offset", 0)
        fields.setdefault("digest", 0)
        return cls(**fields)


def _is_default(value: Any) -> bool:
    """Empty or absent values are left out of the journal's copy (0 is kept)."""
    return value is None or value is False or (isinstance(value, (str, list, tuple)) and not value)


_OPTIONAL_FIELDS = tuple(
    f.name for f in fields(Entry) if f.name not in ("time", "offset", "digest")
)
