"""One parsed log line (Foyle's or RunMe's key names) -> the writer-neutral Entry.

Foyle and RunMe name the same facts differently (`time`/`ts`, `traceId`/`_id`,
`request`/`req`...). Folding both into one Entry here means nothing downstream
knows which writer produced a line; Foyle itself never read `ts`, which left
every RunMe trace at time zero. Foyle's session keys (`contextId`, the
StreamGenerate `context`, LogLLMUsage's `usage`) are kept for Sessions
(issue 11). Values of the wrong type become the field's empty value rather
than an error: a log line is untrusted input. So do numbers no resource can
hold (a `time` past year 9999, an exit code beyond 32 bits), which would
otherwise fail every reconcile of their trace (issue 13).
"""

from __future__ import annotations

from typing import Any

import orjson

from controller.api.entry import EXIT_CODE_RANGE, Entry
from controller.api.functions import is_log_event

EVENT_KEYS = ("eventId", "eventType", "selectedCellId", "contextId", "event")
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last second RFC 3339 can write
# orjson reads 1024 levels of nesting but writes at most 254; the journal, trace
# snapshots and resources nest an entry's payloads a few levels deeper still.
MAX_DEPTH = 128
ORJSON_WRITE_DEPTH = 254


def normalise(obj: dict[str, Any], offset: int, digest: int) -> Entry:
    """The Entry for the line starting at byte `offset` whose bytes have CRC `digest`."""
    function = _str(obj.get("function"))
    exit_code = obj.get("exitCode")
    block_ids = obj.get("blockIds")
    return Entry(
        time=_time(_first(obj, "time", "ts")),
        offset=offset,
        digest=digest,
        trace_id=_str(_first(obj, "traceId", "_id")),
        function=function,
        message=_str(_first(obj, "message", "msg")),
        eval_mode=obj.get("evalMode") is True,
        request=decode_payload(_first(obj, "request", "req")),
        response=decode_payload(_first(obj, "response", "resp")),
        exit_code=exit_code if type(exit_code) is int and exit_code in EXIT_CODE_RANGE else None,
        known_id=_str(_first(obj, "knownID", "knownId")),
        block_ids=_str_tuple(block_ids),
        event=_event(obj) if is_log_event(function) else None,
        context_id=_str(obj.get("contextId")),
        context=_dict(decode_payload(obj.get("context"))),
        usage=_dict(decode_payload(obj.get("usage"))),
    )


def fits_depth(content: bytes, entry: Entry) -> bool:
    """True when `entry` nests at most MAX_DEPTH levels, so every copy of it can be written.

    Counting brackets bounds the depth from above at C speed; only lines with
    many brackets pay for a trial write, wrapped in the levels the limit keeps
    spare (orjson fails past its write depth, which is exactly the test).
    """
    if content.count(b"{") + content.count(b"[") < MAX_DEPTH:
        return True
    wrapped: Any = entry.to_dict()
    for _ in range(ORJSON_WRITE_DEPTH - MAX_DEPTH - 1):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached"
        return False
    return True


def decode_payload(value: Any) -> Any:
    """A JSON object logged as a string (zap's `String` field) becomes the object."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if isinstance(decoded, dict):
            return decoded
    return value


def _first(obj: dict[str, Any], *keys: str) -> Any:
    """The value of the first key present with a non-null value (Foyle's name first)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            return value
    return None


def _time(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIME:
        return float(value)
    return 0.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return ()


def _event(obj: dict[str, Any]) -> dict[str, Any]:
    event = {key: obj[key] for key in EVENT_KEYS if key in obj}
    if "event" in event:
        event["event"] = decode_payload(event["event"])
    return event
