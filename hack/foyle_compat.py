"""Count what Foyle's agent would make of the training files `foylectl` wrote (issue 11).

    python hack/foyle_compat.py --state-dir STATE --training-dir DIR

Reads the BlockLogs and Sessions from the state dir and the files from the
training dir (Foyle's strict wire rules and loader rules: tests/foyle_wire.py)
and prints one JSON object: learnable BlockLogs and Sessions, files written,
files Foyle would load, and queries equal to Foyle's CreateQuery (of the
suggestion's doc, or of the session's notebook cut before the selected cell).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from foyle_wire import WireError, decode, load_rules  # noqa: E402

from controller.learn.query import create_query  # noqa: E402
from controller.learn.rule import learnability  # noqa: E402
from controller.learn.session_rule import session_learnability  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402


def _shape(block: dict[str, Any]) -> tuple[str, str, str]:
    """What decides a query: kind, contents, id (empty proto3 fields are absent)."""
    kind = block.get("kind") or "UNKNOWN_BLOCK_KIND"
    return (kind, block.get("contents") or "", block.get("id") or "")


def measure(state_dir: Path, training_dir: Path) -> dict[str, int]:
    store = SQLiteStore(state_dir / "store.db")
    learnable = {b["spec"]["id"]: b for b in store.list("BlockLog") if learnability(b)[0]}
    sessions = {
        s["spec"]["contextId"]: s for s in store.list("Session") if session_learnability(s)[0]
    }
    expected = {i: create_query(b["status"]["doc"]["blocks"]) for i, b in learnable.items()}
    for context_id, session in sessions.items():
        context = session["status"]["fullContext"]
        expected[context_id] = create_query(context["notebook"]["blocks"][: context["selected"]])
    report = load_rules([training_dir])
    equal = 0
    for path in training_dir.glob("*.example.binpb"):
        try:
            example = decode(path.read_bytes())
        except WireError:
            continue
        query = expected.get(example.get("id", ""))
        if query is None:
            continue
        got = [_shape(b) for b in example.get("query", {}).get("blocks", [])]
        equal += got == [_shape(b) for b in query]
    return {
        "learnableBlockLogs": len(learnable),
        "learnableSessions": len(sessions),
        "filesWritten": report.files,
        "filesFoyleLoads": len(report.loaded),
        "queriesEqualToCreateQuery": equal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--training-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.state_dir, args.training_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
