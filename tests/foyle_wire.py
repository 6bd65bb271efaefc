"""A strict reader of Foyle's training files, written from Foyle's protos, not from ours.

Field numbers and wire types are those of jlewi/foyle v0.0.45 (commit 4c7f07f),
`protos/foyle/v1alpha1/trainer.proto` (Example) and `doc.proto` (Doc, Block,
BlockOutput, BlockOutputItem). Anything Foyle's messages do not define (an
unknown field number, a wrong wire type, a truncated value, a string that is
not UTF-8, which Go's proto3 decoder rejects) raises `WireError`, so a file
that passes decodes exactly as Foyle's `proto.Unmarshal` would read it.

`load_rules` then applies the rules of Foyle's `InMemoryExampleDB.loadExamples`
and `loadRow`: only `<dir>/*.example.binpb` is globbed (not subdirectories),
the embedding must hold exactly 1536 floats, and an example is keyed by its id
(a second file with the same id replaces the first).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARINT, I64, LEN, I32 = 0, 1, 2, 5
SUFFIX = ".example.binpb"
DIMENSIONS = 1536

# message -> field number -> (name, wire type, nested message or a scalar tag, repeated)
Schema = dict[int, tuple[str, int, str, bool]]
MESSAGES: dict[str, Schema] = {
    "Example": {
        1: ("id", LEN, "string", False),
        2: ("embedding", LEN, "float", True),  # packed; unpacked I32 also accepted
        3: ("query", LEN, "Doc", False),
        4: ("answer", LEN, "Block", True),
    },
    "Doc": {1: ("blocks", LEN, "Block", True)},
    "Block": {
        1: ("kind", VARINT, "enum", False),
        2: ("language", LEN, "string", False),
        3: ("contents", LEN, "string", False),
        4: ("outputs", LEN, "BlockOutput", True),
        6: ("traceIds", LEN, "string", True),
        7: ("id", LEN, "string", False),
        8: ("metadata", LEN, "MetadataEntry", True),
    },
    "MetadataEntry": {1: ("key", LEN, "string", False), 2: ("value", LEN, "string", False)},
    "BlockOutput": {1: ("items", LEN, "BlockOutputItem", True)},
    "BlockOutputItem": {1: ("mime", LEN, "string", False), 2: ("textData", LEN, "string", False)},
}
KINDS = {0: "UNKNOWN_BLOCK_KIND", 1: "MARKUP", 2: "CODE"}


class WireError(ValueError):
    """The bytes are not a valid Foyle message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint longer than 10 bytes")


def decode(data: bytes, message: str = "Example") -> dict[str, Any]:
    """`data` as `message`, in our JSON shape (kind by name, metadata as a dict)."""
    schema = MESSAGES[message]
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number not in schema:
            raise WireError(f"{message}: unknown field {number}")
        name, expected, kind, repeated = schema[number]
        if kind == "float" and wire == I32:  # an unpacked repeated float
            if pos + 4 > len(data):
                raise WireError(f"{message}.{name}: truncated float")
            out.setdefault(name, []).append(struct.unpack_from("<f", data, pos)[0])
            pos += 4
            continue
        if wire != expected:
            raise WireError(f"{message}.{name}: wire type {wire}, Foyle defines {expected}")
        if wire == VARINT:
            value, pos = _varint(data, pos)
            out[name] = KINDS.get(value, value)
            continue
        length, pos = _varint(data, pos)
        if pos + length > len(data):
            raise WireError(f"{message}.{name}: length {length} runs past the end")
        chunk, pos = data[pos : pos + length], pos + length
        value = _value(message, name, kind, chunk)
        if kind == "float":
            out.setdefault(name, []).extend(value)
        elif kind == "MetadataEntry":
            out.setdefault(name, {})[value.get("key", "")] = value.get("value", "")
        elif repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _value(message: str, name: str, kind: str, chunk: bytes) -> Any:
    if kind == "string":
        try:
            return chunk.decode("utf-8")
        except UnicodeDecodeError as err:
            raise WireError(f"{message}.{name}: not UTF-8 ({err.reason})") from err
    if kind == "float":
        if len(chunk) % 4:
            raise WireError(f"{message}.{name}: packed floats of {len(chunk)} bytes")
        return list(struct.unpack(f"<{len(chunk) // 4}f", chunk))
    return decode(chunk, kind)


@dataclass
class LoadReport:
    """What Foyle's agent would make of a set of training directories."""

    files: int = 0  # *.example.binpb directly in a directory
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # by Example id
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why
    ignored: list[str] = field(default_factory=list)  # files Foyle's glob never sees


def load_rules(dirs: list[Path]) -> LoadReport:
    """Apply Foyle's loader to `dirs` (see the module docstring)."""
    report = LoadReport()
    for directory in dirs:
        for path in sorted(directory.rglob("*")):
            if not path.is_file():
                continue
            if path.parent != directory or not path.name.endswith(SUFFIX):
                report.ignored.append(str(path))
                continue
            report.files += 1
            try:
                example = decode(path.read_bytes())
            except WireError as err:
                report.skipped[str(path)] = f"does not decode: {err}"
                continue
            if len(example.get("embedding", [])) != DIMENSIONS:
                report.skipped[str(path)] = (
                    f"embedding of {len(example.get('embedding', []))} floats, not {DIMENSIONS}"
                )
                continue
            report.loaded[example.get("id", "")] = example
    return report
