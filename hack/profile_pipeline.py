"""Profile the reconcilers in one thread (cProfile) on a log directory.

The worker threads of `foylectl run` hide where time goes from cProfile (it
sees only the main thread); this builds the very pipeline `run` builds (its
table of stages, learning on) without starting its threads, and drives each
stage's controller by hand in the stages' order: a batch of up to 256 keys per
call of the worker loop's `process` (one unit of work), until every queue is
empty. Then it prints the top functions.

    python hack/gen_logs.py --size 10MB /tmp/corpus
    python hack/profile_pipeline.py /tmp/corpus [--sort cumtime] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.index.retrieval import ExampleIndex  # noqa: E402
from controller.index.training import TrainingWriter  # noqa: E402
from controller.pipeline import Pipeline  # noqa: E402
from controller.reconcilers.learner import BLOCKLOG_SOURCE, SESSION_SOURCE, LearnerReconciler  # noqa: E402
from controller.runtime.controller import Controller  # noqa: E402
from controller.settings import Settings  # noqa: E402
from controller.store.journal import Journal  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402

BATCH = 256


def build(state: Path, logs: Path) -> Pipeline:
    store = SQLiteStore(state / "store.db")
    index, training = ExampleIndex(state / "index.db"), TrainingWriter([state / "training"])
    learners = {
        source.kind: LearnerReconciler(store, index, training, source=source)
        for source in (BLOCKLOG_SOURCE, SESSION_SOURCE)
    }
    settings = Settings(log_dirs=[logs], state_dir=state, training_dirs=[state / "training"])
    return Pipeline(
        settings,
        store,
        Journal(state / "journal.db"),
        learner=learners["BlockLog"].reconcile,
        session_learner=learners["Session"].reconcile,
        oneshot=True,
    )


def drive(pipeline: Pipeline) -> None:
    """Every stage in order, a batch at a time, until no queue holds a key."""
    pipeline.initial_scan()
    while any(len(c.queue) for c in pipeline.controllers):
        for controller in pipeline.controllers:
            while len(controller.queue):
                _process_a_batch(controller)


def _process_a_batch(controller: Controller) -> None:
    keys = []
    while len(keys) < BATCH:
        key, _ = controller.queue.get(timeout=0)
        if key is None:
            break
        keys.append(key)
    try:
        controller.process(keys)
    finally:
        for key in keys:
            controller.queue.done(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumtime"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = build(Path(tmp), args.logs)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.runcall(drive, pipeline)
        elapsed = time.perf_counter() - started
        lines = sum(row.lines for row in pipeline.journal.files())
        print(f"{lines} lines in {elapsed:.2f} s under cProfile ({lines / elapsed:,.0f} lines/s)")
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
