"""The session learning rule: which Sessions Foyle's learner learns from, and the Example it writes.

As Foyle's `app/pkg/learn/learner.go` (v0.0.45) does it, since "Learn from all
executed cells" (v0.0.37):

* only an ended session: Foyle's session builder hands a session to the
  learner when it reads its SESSION_END event, and at no other time;
* learnable (`isLearnable`): the session has a successful EXECUTE event (the
  last one is used), a full context with a notebook, and the selected cell is
  not the first (there would be nothing to predict it from);
* the answer is the executed cell of that event (the last of its cells whose
  id, read by GetCellID, is the event's selected id), with its contents trimmed; a
  missing or empty cell is not learned;
* the query is CreateQuery of the notebook cut before the selected cell
  (`sessionToQuery`);
* the Example's id is the context id.

Unlike the BlockLog rule, an unchanged suggestion is learned too: every
successful execution teaches Foyle what was run in that context. Pure.
"""

from __future__ import annotations

import copy
from typing import Any

from controller.api.kinds import Resource
from controller.api.resource import new_resource
from controller.learn.query import create_query
from controller.learn.rule import set_owner

LEARNABLE = "learnable"
NOT_ENDED = "no-session-end"
NO_EXECUTION = "no-successful-execution"
NO_CONTEXT = "no-context"
NO_NOTEBOOK = "no-notebook"
FIRST_CELL = "first-cell"
SELECTED_OUT_OF_RANGE = "selected-out-of-range"
NO_EXECUTED_CELL = "no-executed-cell"
EMPTY_BLOCK = "empty-block"

SESSION_LABEL = "foyle.io/session"


def _last_successful_execution(status: dict[str, Any]) -> dict[str, Any] | None:
    executions = [
        e
        for e in status.get("logEvents") or []
        if e.get("type") == "EXECUTE" and e.get("executeStatus") == "SUCCEEDED"
    ]
    return executions[-1] if executions else None


def _executed_block(event: dict[str, Any]) -> dict[str, Any] | None:
    """Foyle's loop keeps the last matching cell and skips cells without an id."""
    selected = event.get("selectedId")
    matches = [c for c in event.get("cells") or [] if c.get("id") and c.get("id") == selected]
    return matches[-1] if matches else None


def _ended(status: dict[str, Any]) -> bool:
    return any(e.get("type") == "SESSION_END" for e in status.get("logEvents") or [])


def session_learnability(session: Resource) -> tuple[bool, str]:
    """(learnable?, reason); the reason is one of the constants above."""
    status = session.get("status") or {}
    if not _ended(status):
        return False, NOT_ENDED
    event = _last_successful_execution(status)
    if event is None:
        return False, NO_EXECUTION
    context = status.get("fullContext")
    if not context:
        return False, NO_CONTEXT
    if "notebook" not in context:
        return False, NO_NOTEBOOK
    selected = context.get("selected", 0)
    if selected == 0:
        return False, FIRST_CELL
    if not 0 < selected <= len(context["notebook"].get("blocks") or []):
        return False, SELECTED_OUT_OF_RANGE
    block = _executed_block(event)
    if block is None:
        return False, NO_EXECUTED_CELL
    if not (block.get("contents") or "").strip():
        return False, EMPTY_BLOCK
    return True, LEARNABLE


def example_for_session(session: Resource) -> Resource | None:
    """The Example a learnable Session yields (None when it is not learnable)."""
    if not session_learnability(session)[0]:
        return None
    meta, status = session["metadata"], session["status"]
    name, context_id = meta["name"], session["spec"]["contextId"]
    context = status["fullContext"]
    event = _last_successful_execution(status)
    assert event is not None  # learnable
    answer = copy.deepcopy(_executed_block(event))
    assert answer is not None  # learnable
    answer["contents"] = answer["contents"].strip()
    blocks = context["notebook"]["blocks"][: context["selected"]]
    example = new_resource(
        "Example",
        context_id,
        {
            "id": context_id,
            "session": name,
            "query": {"blocks": copy.deepcopy(create_query(blocks))},
            "answer": [answer],
        },
        labels={SESSION_LABEL: name},
        name=name,
    )
    set_owner(example, session, "Session")
    return example
