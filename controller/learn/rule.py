"""The learning rule: which BlockLogs teach Foyle something, and the Example each one yields.

A suggestion teaches something only when the user had to fix it: Foyle generated
a block, the user executed a block with the same id, and the executed contents
differ from the generated ones (surrounding whitespace ignored). Eval-mode runs
are replays of known answers, so they never teach. Pure: no I/O, no clock.

The Example is the one Foyle's BlockLog learner (before v0.0.37) wrote: id =
block id, query = CreateQuery of the suggestion's doc (not the whole doc),
answer = the executed block as it was run.
"""

from __future__ import annotations

import copy
from typing import Any

from controller.api.kinds import API_VERSION, Resource
from controller.api.resource import new_resource
from controller.learn.query import create_query

LEARNABLE = "learnable"
NO_GENERATED_BLOCK = "no-generated-block"
NO_EXECUTED_BLOCK = "no-executed-block"
EVAL_MODE = "eval-mode"
UNCHANGED = "unchanged"

BLOCKLOG_LABEL = "foyle.io/blocklog"


def learnability(blocklog: Resource) -> tuple[bool, str]:
    """(learnable?, reason); the reason is one of the constants above (a metric label)."""
    status = blocklog.get("status") or {}
    generated = status.get("generatedBlock")
    executed = status.get("executedBlock")
    if not generated:
        return False, NO_GENERATED_BLOCK
    if not executed:
        return False, NO_EXECUTED_BLOCK
    if status.get("evalMode"):
        return False, EVAL_MODE
    if _contents(executed) == _contents(generated):
        return False, UNCHANGED
    return True, LEARNABLE


def example_for(blocklog: Resource) -> Resource | None:
    """The Example a learnable BlockLog yields (None when it is not learnable).

    The Example shares its BlockLog's name and is owned by it, so a cluster's
    garbage collector removes it with the BlockLog.
    """
    if not learnability(blocklog)[0]:
        return None
    meta = blocklog["metadata"]
    status = blocklog["status"]
    spec = blocklog.get("spec") or {}
    name = meta["name"]
    example = new_resource(
        "Example",
        spec.get("id", name),
        {
            "id": spec.get("id", name),
            "blockLog": name,
            "query": {"blocks": copy.deepcopy(create_query(_doc_blocks(status)))},
            "answer": [copy.deepcopy(status["executedBlock"])],
        },
        labels={BLOCKLOG_LABEL: name},
        name=name,
    )
    set_owner(example, blocklog, "BlockLog")
    return example


def set_owner(example: Resource, owner: Resource, kind: str) -> None:
    """Make `owner` the Example's controller, so a cluster's GC removes it with its owner."""
    meta = owner["metadata"]
    if meta.get("uid"):
        example["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner.get("apiVersion", API_VERSION),
                "kind": kind,
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def _doc_blocks(status: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = (status.get("doc") or {}).get("blocks")
    return blocks if isinstance(blocks, list) else []


def _contents(block: dict[str, Any]) -> str:
    return (block.get("contents") or "").strip()
