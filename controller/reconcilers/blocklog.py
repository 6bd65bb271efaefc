"""BlockLog reconciler: member Trace resources -> BlockLog status (the pure
`blocklog_status`), set-wise like every joined kind (controller.reconcilers.join).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from controller.analyze.blocklogs import (
    Generation,
    blocklog_status,
    compact_settled,
    member_ids,
)
from controller.api.kinds import Resource
from controller.learn.rule import learnability
from controller.reconcilers.join import Join, JoinReconciler
from controller.store.journal import EXAMPLES


def _status(
    blocklog: Resource, traces: dict[str, dict[str, Any]], generations: dict[str, Generation]
) -> dict[str, Any]:
    return blocklog_status(blocklog["spec"], traces, generations, blocklog.get("status"))


def _teaches(blocklog: Resource) -> bool:
    return learnability(blocklog)[0]


BLOCKLOG_JOIN = Join(
    "BlockLog",
    member_ids,
    _status,
    learner_queue=EXAMPLES,
    compact=compact_settled,
    teaches=_teaches,
)


# BlockLogReconciler(store)
BlockLogReconciler = partial(JoinReconciler, BLOCKLOG_JOIN)
