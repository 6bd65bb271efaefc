"""Foyle's training-file protobuf messages, built at import time by the protobuf runtime.

Foyle's agent loads every `*.example.binpb` in its training directories as one
binary `Example` (proto3, no package; field numbers from foyle/v1alpha1). We
describe those messages with a FileDescriptorProto in a private pool and let
the runtime make the classes: no protoc step, no generated code to keep in
sync, and no hand-written wire encoding.

`example_to_proto` converts our JSON Example resource. Blocks come from log
lines, so both snake_case and camelCase field names and enum names or numbers
are accepted, and anything malformed falls back to the field's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from controller.api.kinds import Resource

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_: int,
    label: int = _OPTIONAL,
    type_name: str = "",
) -> None:
    field = message.field.add(name=name, number=number, type=type_, label=label)
    if type_name:
        field.type_name = type_name


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="foyle_controller/foyle_training.proto", syntax="proto3"
    )
    kind = fdp.enum_type.add(name="BlockKind")
    for name, number in (("UNKNOWN_BLOCK_KIND", 0), ("MARKUP", 1), ("CODE", 2)):
        kind.value.add(name=name, number=number)

    item = fdp.message_type.add(name="BlockOutputItem")
    _field(item, "mime", 1, _F.TYPE_STRING)
    _field(item, "text_data", 2, _F.TYPE_STRING)

    output = fdp.message_type.add(name="BlockOutput")
    _field(output, "items", 1, _F.TYPE_MESSAGE, _REPEATED, ".BlockOutputItem")

    block = fdp.message_type.add(name="Block")
    entry = block.nested_type.add(name="MetadataEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    _field(block, "kind", 1, _F.TYPE_ENUM, type_name=".BlockKind")
    _field(block, "language", 2, _F.TYPE_STRING)
    _field(block, "contents", 3, _F.TYPE_STRING)
    _field(block, "outputs", 4, _F.TYPE_MESSAGE, _REPEATED, ".BlockOutput")
    _field(block, "trace_ids", 6, _F.TYPE_STRING, _REPEATED)
    _field(block, "id", 7, _F.TYPE_STRING)
    _field(block, "metadata", 8, _F.TYPE_MESSAGE, _REPEATED, ".Block.MetadataEntry")

    doc = fdp.message_type.add(name="Doc")
    _field(doc, "blocks", 1, _F.TYPE_MESSAGE, _REPEATED, ".Block")

    example = fdp.message_type.add(name="Example")
    _field(example, "id", 1, _F.TYPE_STRING)
    _field(example, "embedding", 2, _F.TYPE_FLOAT, _REPEATED)
    _field(example, "query", 3, _F.TYPE_MESSAGE, type_name=".Doc")
    _field(example, "answer", 4, _F.TYPE_MESSAGE, _REPEATED, ".Block")
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
BlockKind = _POOL.FindEnumTypeByName("BlockKind")
# Classes made from a descriptor at run time: their fields are not known statically, so they are
# typed Any (the stubs type them as the bare Message, whose constructor takes no field names).
BlockOutputItem: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("BlockOutputItem")
)
BlockOutput: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("BlockOutput"))
Block: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("Block"))
Doc: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("Doc"))
Example: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("Example"))


def example_to_proto(example: Resource, embedding: Sequence[float] | None = None) -> bytes:
    """The serialised Foyle `Example` of an Example resource (its spec) and query embedding."""
    spec = example.get("spec") or {}
    message = Example(id=_text(spec.get("id")), embedding=list(embedding or ()))
    message.query.SetInParent()  # an empty doc is still a doc
    for block in _dicts((spec.get("query") or {}).get("blocks")):
        _fill_block(message.query.blocks.add(), block)
    for block in _dicts(spec.get("answer")):
        _fill_block(message.answer.add(), block)
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def _fill_block(message: Any, block: dict[str, Any]) -> None:
    message.kind = _kind(block.get("kind"))
    message.language = _text(block.get("language"))
    message.contents = _text(block.get("contents"))
    message.id = _text(block.get("id"))
    message.trace_ids.extend(_text(t) for t in _either(block, "trace_ids", "traceIds") or [])
    metadata = block.get("metadata")
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            message.metadata[_text(key)] = _text(value)
    for output in _dicts(block.get("outputs")):
        out = message.outputs.add()
        for item in _dicts(output.get("items")):
            out.items.add(
                mime=_text(item.get("mime")),
                text_data=_text(_either(item, "text_data", "textData")),
            )


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict members of a JSON list (anything else in untrusted input is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _kind(value: Any) -> int:
    """An enum given by name ("CODE") or number (2); unknown values map to 0."""
    if isinstance(value, str) and value in BlockKind.values_by_name:
        number: int = BlockKind.values_by_name[value].number
        return number
    if type(value) is int and value in BlockKind.values_by_number:
        return value
    return 0


def _either(obj: dict[str, Any], snake: str, camel: str) -> Any:
    return obj.get(snake) if obj.get(snake) is not None else obj.get(camel)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
