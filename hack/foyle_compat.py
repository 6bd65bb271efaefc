"""Count what Foyle's agent would make of the training files `foylectl` wrote (issue 11).

    python hack/foyle_compat.py --state-dir STATE --training-dir DIR [--logs LOGS ...]

Reads the BlockLogs and Sessions from the state dir and the files from the
training dir (Foyle's strict wire rules and loader rules: tests/foyle_wire.py)
and prints one JSON object: learnable BlockLogs and Sessions, files written,
files Foyle would load, and queries equal to Foyle's CreateQuery (of the
suggestion's doc, or of the session's notebook cut before the selected cell).

With `--logs` (issue 20) it also runs Foyle's own session rules over the raw
lines (hack/foyle_reference.py: session_builder.go and learner.go, transliterated)
and compares: the sessions Foyle makes, those its learner enqueues and the
Examples it writes, against the Sessions here and the files Foyle would load
(`sessionExamplesLikeFoyle`: same id, query and answer; `missing`: Foyle
learns it and no loadable file here equals it; `sessionsFoyleWouldNotMake`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from foyle_reference import run_foyle  # noqa: E402
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


def compare_sessions(logs: list[Path], state_dir: Path, training_dir: Path) -> dict[str, int]:
    """Foyle's session rules over the raw lines against what foylectl made of them."""
    foyle = run_foyle(logs)
    ours = {s["spec"]["contextId"] for s in SQLiteStore(state_dir / "store.db").list("Session")}
    loaded = load_rules([training_dir]).loaded
    alike = sum(_same_example(want, loaded.get(i)) for i, want in foyle.examples.items())
    return {
        "foyleSessions": len(foyle.sessions),
        "foyleLearnable": len(set(foyle.enqueued)),
        "foyleLearned": len(foyle.examples),
        "sessions": len(ours),
        "sessionExamplesLikeFoyle": alike,
        "missing": len(foyle.examples) - alike,
        "sessionsFoyleWouldNotMake": len(ours - set(foyle.sessions)),
    }


def _same_example(want: dict[str, Any], got: dict[str, Any] | None) -> bool:
    if got is None:
        return False
    blocks = [_shape(b) for b in got.get("query", {}).get("blocks", [])]
    answer = [(*_shape(b), b.get("language") or "") for b in got.get("answer", [])]
    return blocks == [_shape(b) for b in want["query"]["blocks"]] and answer == [
        (*_shape(b), b.get("language") or "") for b in want["answer"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--training-dir", type=Path, required=True)
    parser.add_argument("--logs", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    counts = measure(args.state_dir, args.training_dir)
    if args.logs:
        counts |= compare_sessions(args.logs, args.state_dir, args.training_dir)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
