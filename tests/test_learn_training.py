"""Training files: Foyle's protobuf format, decoded with the protobuf runtime, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from controller.index.training import TrainingWriter
from controller.learn import foyle_pb

QUERY_BLOCKS = [
    {
        "kind": "MARKUP",
        "language": "markdown",
        "contents": "list the pods in namespace dev",
        "outputs": [],
        "trace_ids": ["t-gen"],
        "id": "q1",
        "metadata": {"_ghostCell": "false", "runme.dev/id": "q1"},
    },
]
ANSWER = {
    "kind": "CODE",
    "language": "bash",
    "contents": "kubectl get pods -n dev",
    "outputs": [
        {"items": [{"mime": "text/plain", "textData": "exitCode: 0"}]},
        {"items": [{"mime": "application/json", "text_data": "{}"}, {"mime": "text/x"}]},
    ],
    "traceIds": ["t-exec-1", "t-exec-2"],
    "id": "Block/../1",
}


def example(name: str = "block-1-habcdefghijklmnop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "foyle.io/v1alpha1",
        "kind": "Example",
        "metadata": {"name": name},
        "spec": {
            "id": "Block/../1",
            "blockLog": name,
            "query": {"blocks": QUERY_BLOCKS},
            "answer": [ANSWER],
            **spec,
        },
    }


def test_training_file_decodes_to_every_field(tmp_path: Path) -> None:
    writer = TrainingWriter([tmp_path / "a", tmp_path / "b"])
    paths = writer.write(example(), [0.25, -1.5, 3.0])

    assert paths == [
        str(tmp_path / d / "block-1-habcdefghijklmnop.example.binpb") for d in ("a", "b")
    ]
    for path in paths:
        decoded = foyle_pb.Example.FromString(Path(path).read_bytes())
        assert decoded.id == "Block/../1"
        assert list(decoded.embedding) == [0.25, -1.5, 3.0]

        [query] = decoded.query.blocks
        assert query.kind == foyle_pb.BlockKind.values_by_name["MARKUP"].number == 1
        assert (query.language, query.contents, query.id) == (
            "markdown",
            "list the pods in namespace dev",
            "q1",
        )
        assert list(query.trace_ids) == ["t-gen"]
        assert dict(query.metadata) == {"_ghostCell": "false", "runme.dev/id": "q1"}
        assert len(query.outputs) == 0

        [answer] = decoded.answer
        assert answer.kind == foyle_pb.BlockKind.values_by_name["CODE"].number == 2
        assert (answer.language, answer.contents, answer.id) == (
            "bash",
            "kubectl get pods -n dev",
            "Block/../1",
        )
        assert list(answer.trace_ids) == ["t-exec-1", "t-exec-2"]
        assert dict(answer.metadata) == {}
        items = [[(i.mime, i.text_data) for i in out.items] for out in answer.outputs]
        assert items == [
            [("text/plain", "exitCode: 0")],
            [("application/json", "{}"), ("text/x", "")],
        ]


def test_field_numbers_match_foyles_proto() -> None:
    def numbers(message: Any) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(foyle_pb.Example) == {"id": 1, "embedding": 2, "query": 3, "answer": 4}
    assert numbers(foyle_pb.Doc) == {"blocks": 1}
    assert numbers(foyle_pb.Block) == {
        "kind": 1,
        "language": 2,
        "contents": 3,
        "outputs": 4,
        "trace_ids": 6,
        "id": 7,
        "metadata": 8,
    }
    assert numbers(foyle_pb.BlockOutput) == {"items": 1}
    assert numbers(foyle_pb.BlockOutputItem) == {"mime": 1, "text_data": 2}
    assert {v.name: v.number for v in foyle_pb.BlockKind.values} == {
        "UNKNOWN_BLOCK_KIND": 0,
        "MARKUP": 1,
        "CODE": 2,
    }


def test_malformed_blocks_fall_back_to_defaults() -> None:
    data = foyle_pb.example_to_proto(
        example(
            query={"blocks": ["not a block", {"kind": "NOTEBOOK", "contents": None}]},
            answer=[{"kind": 2, "outputs": "junk", "metadata": {"n": 5}}],
        )
    )
    decoded = foyle_pb.Example.FromString(data)
    [query] = decoded.query.blocks
    assert (query.kind, query.contents) == (0, "")
    [answer] = decoded.answer
    assert (answer.kind, len(answer.outputs), dict(answer.metadata)) == (2, 0, {"n": "5"})
    assert not decoded.embedding


def test_rewrite_with_same_bytes_leaves_the_file_alone(tmp_path: Path) -> None:
    writer = TrainingWriter([tmp_path])
    [path] = writer.write(example())
    inode = os.stat(path).st_ino
    writer.write(example())
    assert os.stat(path).st_ino == inode  # an os.replace would have made a new inode
    writer.write(example(answer=[dict(ANSWER, contents="kubectl get pods -A")]))
    assert os.stat(path).st_ino != inode
    assert foyle_pb.Example.FromString(Path(path).read_bytes()).answer[0].contents == (
        "kubectl get pods -A"
    )
    assert sorted(os.listdir(tmp_path)) == ["block-1-habcdefghijklmnop.example.binpb"]


def test_delete_removes_the_file_from_every_directory(tmp_path: Path) -> None:
    writer = TrainingWriter([tmp_path / "a", tmp_path / "b"])
    writer.write(example())
    writer.write(example(name="other"))
    writer.delete("block-1-habcdefghijklmnop")
    writer.delete("never-written")
    assert os.listdir(tmp_path / "a") == ["other.example.binpb"]
    assert os.listdir(tmp_path / "b") == ["other.example.binpb"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "Upper", ""])
def test_unsafe_names_never_become_paths(tmp_path: Path, name: str) -> None:
    writer = TrainingWriter([tmp_path / "t"])
    with pytest.raises(ValueError, match="not a safe Example name"):
        writer.write(example(name=name))
    with pytest.raises(ValueError):
        writer.delete(name)
    assert not (tmp_path / "t").exists() or not os.listdir(tmp_path / "t")
    assert sorted(os.listdir(tmp_path)) in ([], ["t"])
