"""The resource kinds: names, schemas and printer columns, in one place.

This module is the single source of truth for field names. The CRDs in
`crds/` are generated from it (`python -m controller.api.crdgen`), the CLI's
table columns come from it, and a test fails when the two drift apart.
Resources themselves are plain Kubernetes-shaped dicts (`Resource`), so the
same JSON goes to SQLite, to the API server and to `-o json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUP = "foyle.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "foyle"

Resource = dict[str, Any]

_STRING: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer", "format": "int64"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_FREE_FORM: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


OUTPUT_ITEM_SCHEMA = _obj({"mime": _STRING, "textData": _STRING})
BLOCK_SCHEMA = _obj(
    {
        "kind": _enum("UNKNOWN_BLOCK_KIND", "MARKUP", "CODE"),
        "language": _STRING,
        "contents": _STRING,
        "outputs": _list(_obj({"items": _list(OUTPUT_ITEM_SCHEMA)})),
        "id": _STRING,
        "traceIds": _list(_STRING),
        "metadata": {"type": "object", "additionalProperties": _STRING},
    }
)
DOC_SCHEMA = _obj({"blocks": _list(BLOCK_SCHEMA)})
# Settled members (their Traces deleted from the cluster): by trace id, what the joined
# resource's status reads of each (analyze.blocklogs/sessions *_contribution).
SETTLED_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": _FREE_FORM}

LOGFILE_PHASES = ("Active", "Idle", "Rotated", "Deleted", "Unreadable")
TRACE_KINDS = ("Generate", "Execute", "RunMe", "LogEvent", "Context")
TRACE_PHASES = ("InProgress", "Complete", "Abandoned")
SUGGESTION_STATUSES = ("Unknown", "Accepted", "Rejected")


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `foylectl get` and `kubectl get` (additionalPrinterColumns)."""

    name: str
    json_path: str  # e.g. ".spec.genTraceId"; ".metadata.creationTimestamp" for AGE
    type: str = "string"  # string | integer | boolean | date
    priority: int = 0  # 1 = only with -o wide
    description: str = ""
    # The usual width of its values, reserved by `get -w` so a row that fills a cell left
    # empty before does not push the columns after it (not part of the CRD).
    typical_width: int = 0


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_schema: dict[str, Any]
    status_schema: dict[str, Any]
    columns: tuple[PrinterColumn, ...]
    aliases: tuple[str, ...] = field(default=())
    # With the status subresource, spec and status are two requests (the server drops
    # status on create). A joined kind whose status is derived in the same write as its
    # spec goes without, one request per change (issue 19); there the server bumps
    # metadata.generation on a change of status too.
    status_subresource: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Every word the CLI accepts for this kind, lower case."""
        return (self.plural, self.singular, self.kind.lower(), *self.short_names, *self.aliases)


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
TRACE_ID_WIDTH = 32  # Foyle's (OpenTelemetry's) trace ids: 16 bytes in hex
TIME_WIDTH = len("2024-04-16T21:44:30.400788Z")

LOGFILE = KindInfo(
    kind="LogFile",
    plural="logfiles",
    singular="logfile",
    short_names=("lf",),
    spec_schema=_obj({"path": _STRING, "node": _STRING}, ["path"]),
    status_schema=_obj(
        {
            "offset": _INT,
            "size": _INT,
            "lines": _INT,
            "badLines": _INT,
            "lastBadOffset": _INT,
            "truncations": _INT,
            "unreadBytes": _INT,
            "phase": _enum(*LOGFILE_PHASES),
            "lastError": _STRING,
            "device": _INT,
            "inode": _INT,
            "fingerprint": _STRING,
            "lastSyncTime": _TIME,
        }
    ),
    columns=(
        PrinterColumn("Path", ".spec.path"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Offset", ".status.offset", "integer"),
        PrinterColumn("Size", ".status.size", "integer"),
        PrinterColumn("Lines", ".status.lines", "integer"),
        PrinterColumn("Bad", ".status.badLines", "integer"),
        PrinterColumn("Node", ".spec.node", priority=1),
        PrinterColumn("Error", ".status.lastError", priority=1),
        AGE,
    ),
)

TRACE = KindInfo(
    kind="Trace",
    plural="traces",
    singular="trace",
    short_names=("tr",),
    spec_schema=_obj(
        {
            "id": _STRING,
            "kind": _enum(*TRACE_KINDS),
            "startTime": _TIME,
            "endTime": _TIME,
            "evalMode": _BOOL,
            "blockIds": _list(_STRING),
            "exitCode": _INT,
            "request": _FREE_FORM,
            "response": _FREE_FORM,
            "contextId": _STRING,  # the Session (RunMe context) the trace belongs to
            "usage": _obj({"inputTokens": _INT, "outputTokens": _INT}),
        },
        ["id", "kind"],
    ),
    status_schema=_obj(
        {
            "phase": _enum(*TRACE_PHASES),
            "entries": _INT,
            # lines of this id look like two traces (a reused or injected id)
            "inconsistent": _obj(
                {
                    "reason": _enum("SeveralKinds", "FarApart"),
                    "kinds": _list(_STRING),
                    "spanSeconds": _INT,
                }
            ),
        }
    ),
    columns=(
        PrinterColumn("Id", ".spec.id", priority=1),
        PrinterColumn("Kind", ".spec.kind"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Exit", ".spec.exitCode", "integer"),
        PrinterColumn("Eval", ".spec.evalMode", "boolean"),
        PrinterColumn("Entries", ".status.entries", "integer", priority=1),
        PrinterColumn("Start", ".spec.startTime", priority=1, typical_width=TIME_WIDTH),
        PrinterColumn("Inconsistent", ".status.inconsistent.reason", priority=1),
        AGE,
    ),
)

BLOCKLOG = KindInfo(
    kind="BlockLog",
    plural="blocklogs",
    singular="blocklog",
    short_names=("bl",),
    spec_schema=_obj(
        {
            "id": _STRING,
            "genTraceId": _STRING,
            "execTraceIds": _list(_STRING),
            "eventIds": _list(_STRING),
            "startTimes": {"type": "object", "additionalProperties": _STRING},
            "olderExecutions": _INT,
            "settled": SETTLED_SCHEMA,
        },
        ["id"],
    ),
    status_schema=_obj(
        {
            "doc": DOC_SCHEMA,
            "generatedBlock": BLOCK_SCHEMA,
            "executedBlock": BLOCK_SCHEMA,
            "executions": _INT,
            "exitCode": _INT,
            "evalMode": _BOOL,
            "suggestionStatus": _enum(*SUGGESTION_STATUSES),
            "observedGeneration": _INT,
        }
    ),
    columns=(
        PrinterColumn("Id", ".spec.id", priority=1),
        PrinterColumn("Gen-Trace", ".spec.genTraceId", typical_width=TRACE_ID_WIDTH),
        PrinterColumn("Executions", ".status.executions", "integer"),
        PrinterColumn("Exit", ".status.exitCode", "integer"),
        PrinterColumn("Eval", ".status.evalMode", "boolean"),
        PrinterColumn("Status", ".status.suggestionStatus"),
        AGE,
    ),
    status_subresource=False,
)

EXAMPLE = KindInfo(
    kind="Example",
    plural="examples",
    singular="example",
    short_names=("ex",),
    spec_schema=_obj(
        {
            "id": _STRING,
            "blockLog": _STRING,
            "session": _STRING,  # learned from a Session instead (issue 11)
            "query": DOC_SCHEMA,
            "answer": _list(BLOCK_SCHEMA),
        },
        ["id"],
    ),
    status_schema=_obj(
        {
            "indexedTime": _TIME,
            "trainingFiles": _list(_STRING),
            "observedGeneration": _INT,
            # Would Foyle's agent load the training file? If not, why (NoEmbedding,
            # EmbeddingLength): its loader skips such files silently (issue 11).
            "foyleLoadable": _BOOL,
            "reason": _STRING,
        }
    ),
    columns=(
        PrinterColumn("Id", ".spec.id", priority=1),
        PrinterColumn("BlockLog", ".spec.blockLog"),
        PrinterColumn("Session", ".spec.session", priority=1),
        PrinterColumn("Foyle", ".status.foyleLoadable", "boolean"),
        PrinterColumn("Reason", ".status.reason"),
        PrinterColumn("Indexed", ".status.indexedTime", "date"),  # an age, as kubectl shows dates
        AGE,
    ),
)

LOG_EVENT_SCHEMA = _obj(
    {
        "type": _STRING,  # EXECUTE, ACCEPTED, REJECTED, SESSION_START, SESSION_END, ...
        "selectedId": _STRING,
        "selectedIndex": _INT,
        "contextId": _STRING,
        "eventId": _STRING,
        "executeStatus": _STRING,  # UNKNOWN, SUCCEEDED, FAILED
        "time": _TIME,
        "cells": _list(BLOCK_SCHEMA),  # every cell of the event, as blocks (Foyle keeps them all)
    }
)
SESSION = KindInfo(
    kind="Session",
    plural="sessions",
    singular="session",
    short_names=("se",),
    # Membership, written by the Trace reconciler: the LogEvent, Generate and Context
    # traces of one RunMe context id.
    spec_schema=_obj(
        {"contextId": _STRING, "traceIds": _list(_STRING), "settled": SETTLED_SCHEMA},
        ["contextId"],
    ),
    # Foyle's Session message (protos/foyle/logs/sessions.proto), camelCase.
    status_schema=_obj(
        {
            "startTime": _TIME,
            "endTime": _TIME,
            "logEvents": _list(LOG_EVENT_SCHEMA),
            "fullContext": _obj({"notebook": DOC_SCHEMA, "selected": _INT, "notebookUri": _STRING}),
            "totalInputTokens": _INT,
            "totalOutputTokens": _INT,
            "generateTraceIds": _list(_STRING),
            "learnable": _BOOL,
            "reason": _STRING,  # why Foyle's session learner would not learn from it
            "observedGeneration": _INT,
        }
    ),
    columns=(
        PrinterColumn("Context", ".spec.contextId", priority=1),
        PrinterColumn("Start", ".status.startTime", typical_width=TIME_WIDTH),
        PrinterColumn("End", ".status.endTime", typical_width=TIME_WIDTH),
        PrinterColumn("Tokens-In", ".status.totalInputTokens", "integer"),
        PrinterColumn("Tokens-Out", ".status.totalOutputTokens", "integer"),
        PrinterColumn("Learnable", ".status.learnable", "boolean"),
        PrinterColumn("Reason", ".status.reason"),
        AGE,
    ),
    status_subresource=False,
)

KINDS: tuple[KindInfo, ...] = (LOGFILE, TRACE, BLOCKLOG, SESSION, EXAMPLE)
BY_KIND: dict[str, KindInfo] = {k.kind: k for k in KINDS}


class UnknownKind(ValueError):
    """The user named a kind that does not exist."""


def lookup(word: str) -> KindInfo:
    """Find a kind by any of its names (plural, singular, short, Kind), case-insensitively."""
    w = word.strip().lower()
    for info in KINDS:
        if w in info.names:
            return info
    known = ", ".join(f"{k.plural} ({'/'.join(k.short_names)})" for k in KINDS)
    raise UnknownKind(f"unknown resource kind {word!r}; known kinds: {known}")
