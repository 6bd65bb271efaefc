"""The learning rule and Foyle's query text, case by case (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.names import is_valid_name, name_for_id
from controller.learn.query import blocks_to_markdown, create_query, is_ghost, query_text
from controller.learn.rule import example_for, learnability


def code(contents: str, id_: str = "b1") -> dict[str, Any]:
    return {"kind": "CODE", "language": "bash", "contents": contents, "id": id_, "outputs": []}


def markup(contents: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "MARKUP", "language": "markdown", "contents": contents, **extra}


def blocklog(
    generated: dict[str, Any] | None = None,
    executed: dict[str, Any] | None = None,
    eval_mode: bool = False,
    raw_id: str = "b1",
    uid: str | None = "uid-1",
) -> dict[str, Any]:
    status: dict[str, Any] = {"doc": {"blocks": [markup("list the pods")]}, "evalMode": eval_mode}
    if generated is not None:
        status["generatedBlock"] = generated
    if executed is not None:
        status["executedBlock"] = executed
    metadata: dict[str, Any] = {"name": name_for_id(raw_id), "resourceVersion": "7"}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "foyle.io/v1alpha1",
        "kind": "BlockLog",
        "metadata": metadata,
        "spec": {"id": raw_id, "genTraceId": "t1", "execTraceIds": ["e1"]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (blocklog(code("kubectl get pod"), code("kubectl get pods -A")), "learnable"),
        (blocklog(code("kubectl get pods"), code("  kubectl get pods\n")), "unchanged"),
        (blocklog(code("kubectl get pod"), code("kubectl get pods"), eval_mode=True), "eval-mode"),
        (blocklog(None, code("kubectl get pods")), "no-generated-block"),
        (blocklog(code("kubectl get pods"), None), "no-executed-block"),
        (blocklog({}, code("ls")), "no-generated-block"),
    ],
    ids=["edited", "identical-after-trim", "eval-mode", "no-generated", "no-executed", "empty"],
)
def test_learnability_gives_the_reason(log: dict[str, Any], reason: str) -> None:
    assert learnability(log) == (reason == "learnable", reason)
    assert (example_for(log) is not None) == (reason == "learnable")


def test_example_answers_the_doc_with_the_executed_block() -> None:
    log = blocklog(code("kubectl get pod"), code("kubectl get pods -A"))
    example = example_for(log)
    assert example is not None
    assert example["kind"] == "Example"
    assert example["metadata"]["name"] == "b1"
    assert example["metadata"]["labels"] == {"foyle.io/blocklog": "b1"}
    assert example["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "foyle.io/v1alpha1",
            "kind": "BlockLog",
            "name": "b1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert example["spec"] == {
        "id": "b1",
        "blockLog": "b1",
        "query": log["status"]["doc"],
        "answer": [log["status"]["executedBlock"]],
    }
    example["spec"]["answer"][0]["contents"] = "changed"
    assert log["status"]["executedBlock"]["contents"] == "kubectl get pods -A"  # a copy


def test_example_without_owner_uid_has_no_owner_reference() -> None:
    example = example_for(blocklog(code("a"), code("b"), uid=None))
    assert example is not None
    assert "ownerReferences" not in example["metadata"]


def test_example_of_an_unsafe_id_is_named_safely_and_keeps_the_raw_id() -> None:
    raw = "../../etc/Passwd X"
    example = example_for(blocklog(code("a"), code("b"), raw_id=raw))
    assert example is not None
    assert is_valid_name(example["metadata"]["name"])
    assert example["spec"]["id"] == raw


def test_query_is_the_last_block_and_the_markup_run_before_it() -> None:
    doc = {
        "blocks": [
            markup("old prose"),
            code("echo old"),
            markup("## Pods"),
            markup("list the pods in namespace dev"),
            code("kubectl get pods -n dev", "b2"),
        ]
    }
    assert query_text(doc) == (
        "## Pods\nlist the pods in namespace dev\n```bash\nkubectl get pods -n dev\n```\n"
    )


def test_query_of_a_trailing_markup_cell_takes_the_markup_run() -> None:
    doc = {"blocks": [code("ls"), markup("intro"), markup("show the logs")]}
    assert query_text(doc) == "intro\nshow the logs\n"


def test_query_drops_ghost_cells_first() -> None:
    ghost = code("kubectl delete ns dev", "g")
    ghost["metadata"] = {"_ghostCell": "true"}
    doc = {
        "blocks": [
            markup("list the pods", metadata={"_ghostCell": "false"}),
            ghost,
            markup("in namespace dev"),
            markup("suggested prose", metadata={"_ghostCell": "TRUE"}),
        ]
    }
    assert query_text(doc) == "list the pods\nin namespace dev\n"


def test_query_of_an_empty_doc_is_empty() -> None:
    assert query_text({}) == ""
    assert query_text({"blocks": [markup("x", metadata={"_ghostCell": "1"})]}) == ""


@pytest.mark.parametrize(
    ("metadata", "ghost"),
    [(None, False), ({}, False), ({"_ghostCell": "false"}, False), ({"_ghostCell": "yes"}, False)]
    + [({"_ghostCell": "tRuE"}, False), ({"_ghostCell": " true"}, False)]
    + [({"_ghostCell": v}, True) for v in ("true", "True", "TRUE", "1", "t", "T")],
)
def test_ghost_cells_are_marked_by_metadata_only(
    metadata: dict[str, str] | None, ghost: bool
) -> None:
    block = markup("x") if metadata is None else markup("x", metadata=metadata)
    assert is_ghost(block) is ghost


# Foyle's own cases, from app/pkg/docs/blocks_test.go (Test_CreateQuery) and
# converters_test.go (Test_BlockToMarkdown) at v0.0.45: our docs end at the
# selected block, so SelectedIndex N is the doc cut after block N.
FOYLE_DOC = [
    markup("cell 0"),
    markup("cell 1"),
    {"kind": "CODE", "contents": "cell 2"},
    markup("cell 3"),
    markup("cell 4"),
]


@pytest.mark.parametrize(
    ("selected", "expected"),
    [(1, FOYLE_DOC[0:2]), (2, FOYLE_DOC[0:3]), (4, FOYLE_DOC[3:5])],
    ids=["stop-at-start", "start-on-codeblock", "stop-on-code"],
)
def test_create_query_matches_foyles_test_cases(
    selected: int, expected: list[dict[str, Any]]
) -> None:
    assert create_query(FOYLE_DOC[: selected + 1]) == expected


def test_create_query_skips_a_ghost_inside_the_markup_run_as_foyle_does() -> None:
    ghost = markup("cell 1", metadata={"_ghostCell": "true"})
    doc = [FOYLE_DOC[0], ghost, FOYLE_DOC[2]]
    assert create_query(doc) == [FOYLE_DOC[0], FOYLE_DOC[2]]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"kind": "MARKUP", "contents": "This is a test"}, "This is a test\n"),
        (
            {
                "kind": "CODE",
                "language": "python",
                "contents": 'echo "something something"',
                "outputs": [{"items": [{"textData": "something something"}]}],
            },
            '```bash\necho "something something"\n```\n```output\nsomething something\n```\n',
        ),
        (
            {
                "kind": "CODE",
                "contents": 'echo "something something"',
                "outputs": [
                    {
                        "items": [
                            {"mime": "stateful.runme/output-items", "textData": "excluded"},
                            {"mime": "stateful.runme/terminal", "textData": "excluded"},
                            {"mime": "application/vnd.code.notebook.stdout", "textData": "kept"},
                        ]
                    }
                ],
            },
            '```bash\necho "something something"\n```\n```output\nkept\n```\n',
        ),
    ],
    ids=["markup", "code", "filter-by-mime-type"],
)
def test_blocks_to_markdown_matches_foyles_test_cases(block: dict[str, Any], expected: str) -> None:
    assert blocks_to_markdown([block]) == expected
    assert blocks_to_markdown([block, block]) == expected * 2  # no separator between blocks


def test_example_query_is_create_query_of_the_doc_not_the_whole_doc() -> None:
    log = blocklog(code("a"), code("b"))
    log["status"]["doc"] = {"blocks": [markup("old"), code("ls", "b0"), markup("why"), code("a")]}
    example = example_for(log)
    assert example is not None
    assert example["spec"]["query"] == {"blocks": [markup("why"), code("a")]}
