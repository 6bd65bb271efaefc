"""Profile the reconcilers in one thread (cProfile) on a log directory.

The worker threads of `foylectl run` hide where time goes from cProfile (it
sees only the main thread); this drives the same reconcilers by hand, in the
order the manager does (files, then traces, block logs, sessions and learners
in batches of 256, each in one unit of work), and prints the top functions.

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
from controller.reconcilers.blocklog import BlockLogReconciler  # noqa: E402
from controller.reconcilers.learner import LearnerReconciler  # noqa: E402
from controller.reconcilers.logfile import LogFileReconciler  # noqa: E402
from controller.reconcilers.session import SessionReconciler  # noqa: E402
from controller.reconcilers.trace import TraceReconciler  # noqa: E402
from controller.runtime.watcher import scan  # noqa: E402
from controller.store.journal import Journal  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402
from controller.store.unit import unit_of_work  # noqa: E402

BATCH = 256


class Pipeline:
    def __init__(self, state: Path) -> None:
        self.journal = Journal(state / "journal.db")
        self.store = SQLiteStore(state / "store.db")
        self.pending: dict[str, set[str]] = {"trace": set(), "blocklog": set()}
        self.pending.update(session=set(), example=set())
        learner = LearnerReconciler(
            self.store, ExampleIndex(state / "index.db"), TrainingWriter([state / "training"])
        )
        self.logfile = LogFileReconciler(self.journal, self.store, self.pending["trace"].update)
        self.stages = {
            "trace": TraceReconciler(
                self.journal,
                self.store,
                self.pending["blocklog"].update,
                on_sessions=self.pending["session"].update,
            ).reconcile_many,
            "blocklog": BlockLogReconciler(
                self.store, self.journal, on_change=self.pending["example"].update
            ).reconcile_many,
            "session": SessionReconciler(self.store, self.journal).reconcile_many,
            "example": learner.reconcile_many,
        }

    def run(self, logs: Path) -> None:
        for path in scan([logs]):
            while self.logfile.reconcile(str(path)).requeue:
                pass
            while any(self.pending.values()):
                for stage, reconcile_many in self.stages.items():
                    keys = sorted(self.pending[stage])
                    self.pending[stage].clear()
                    for i in range(0, len(keys), BATCH):
                        with unit_of_work(self.journal, self.store):
                            reconcile_many(keys[i : i + BATCH])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumtime"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(Path(tmp))
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.runcall(pipeline.run, args.logs)
        elapsed = time.perf_counter() - started
        lines = sum(row.lines for row in pipeline.journal.files())
        print(f"{lines} lines in {elapsed:.2f} s under cProfile ({lines / elapsed:,.0f} lines/s)")
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
