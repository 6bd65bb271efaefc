"""Training files: Foyle's protobuf format, decoded with the protobuf runtime, written atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.api.names import name_for_id
from controller.index.ledger import Owner
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


def visible(directory: Path) -> list[str]:
    """The entries a glob without dot files sees (the ledger lives in .foylectl/)."""
    return sorted(f for f in os.listdir(directory) if not f.startswith("."))


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
    assert visible(tmp_path) == ["block-1-habcdefghijklmnop.example.binpb"]


def test_delete_removes_the_file_from_every_directory(tmp_path: Path) -> None:
    writer = TrainingWriter([tmp_path / "a", tmp_path / "b"])
    writer.write(example())
    writer.write(example(name="other"))
    writer.delete("block-1-habcdefghijklmnop")
    writer.delete("never-written")
    assert visible(tmp_path / "a") == ["other.example.binpb"]
    assert visible(tmp_path / "b") == ["other.example.binpb"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "Upper", ""])
def test_unsafe_names_never_become_paths(tmp_path: Path, name: str) -> None:
    writer = TrainingWriter([tmp_path / "t"])
    with pytest.raises(ValueError, match="not a safe Example name"):
        writer.write(example(name=name))
    with pytest.raises(ValueError):
        writer.delete(name)
    assert not (tmp_path / "t").exists() or not os.listdir(tmp_path / "t")
    assert sorted(os.listdir(tmp_path)) in ([], ["t"])


def owned_writer(directory: Path, state_dir: Path) -> TrainingWriter:
    return TrainingWriter([directory], owner=Owner.of(state_dir))


def test_prune_removes_only_our_files_whose_example_is_gone(tmp_path: Path) -> None:
    """Issue 20: never a file Foyle's learner wrote, nor one it rewrote since we wrote it."""
    training = tmp_path / "training"
    writer = owned_writer(training, tmp_path / "state")
    for name in ("kept", "gone", "rewritten"):
        writer.write(example(name=name))
    foyles = training / "01JD88ZCBD72YPBKVH8CAMC3MT.example.binpb"  # Foyle's learner's file
    foyles.write_bytes(b"foyle")
    (training / "rewritten.example.binpb").write_bytes(b"foyle wrote this one since")

    assert writer.prune({"kept"}) == 1
    assert visible(training) == [foyles.name, "kept.example.binpb", "rewritten.example.binpb"]
    assert writer.prune({"kept"}) == 0  # forgotten: never ours again


def test_files_of_a_deleted_state_dir_go_when_a_writer_starts_and_others_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A throw-away state dir is tied to what it wrote into a shared training dir."""
    training = tmp_path / "training"
    throwaway = owned_writer(training, tmp_path / "experiment")
    for name in ("only-experiment", "both", "rewritten"):
        throwaway.write(example(name=name))
    real = owned_writer(training, tmp_path / "real")
    real.write(example(name="both"))
    real.write(example(name="real-only"))
    (training / "rewritten.example.binpb").write_bytes(b"foyle's now")
    (training / "foyle.example.binpb").write_bytes(b"foyle")

    with caplog.at_level("WARNING"):
        again = owned_writer(training, tmp_path / "real")  # the experiment still exists
    assert "also holds 3 files of the state dir" in caplog.text
    assert again.remove_abandoned() == 0

    shutil.rmtree(tmp_path / "experiment")
    assert owned_writer(training, tmp_path / "real").remove_abandoned() == 0  # done at start
    assert visible(training) == [
        "both.example.binpb",
        "foyle.example.binpb",
        "real-only.example.binpb",
        "rewritten.example.binpb",
    ]


def test_a_recreated_state_dir_is_another_owner(tmp_path: Path) -> None:
    """rm -rf the state dir, analyze again into it: the old run's files are abandoned."""
    training, state = tmp_path / "training", tmp_path / "state"
    owned_writer(training, state).write(example(name="old-run"))
    shutil.rmtree(state)
    writer = owned_writer(training, state)
    assert visible(training) == []
    writer.write(example(name="new-run"))
    assert visible(training) == ["new-run.example.binpb"]


def test_the_file_is_named_as_foyles_learners_name_it_and_replaces_the_old_hashed_name(
    tmp_path: Path,
) -> None:
    """Issue 20: `<id>.example.binpb` (a ULID is no DNS-1123 name); the pre-issue-20 file goes."""
    context_id = "01JD88ZCBD72YPBKVH8CAMC3MT"
    name = name_for_id(context_id)
    legacy = tmp_path / f"{name}.example.binpb"
    legacy.write_bytes(b"written by foylectl before issue 20")
    [path] = TrainingWriter([tmp_path]).write(example(name=name, id=context_id))
    assert Path(path).name == f"{context_id}.example.binpb"
    assert visible(tmp_path) == [f"{context_id}.example.binpb"]
    assert foyle_pb.Example.FromString(Path(path).read_bytes()).id == context_id
