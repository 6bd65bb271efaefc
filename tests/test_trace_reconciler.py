"""Trace and BlockLog reconcilers on a real journal and SQLite store: abandonment, late lines."""

from __future__ import annotations

from pathlib import Path

import orjson

from controller.analyze.oneshot import analyze
from controller.analyze.traces import is_abandoned
from controller.logs.framing import read_all
from controller.reconcilers.blocklog import BlockLogReconciler
from controller.reconcilers.logfile import LogFileReconciler, LogFileSettings
from controller.reconcilers.trace import TraceReconciler, TraceSettings
from controller.store.base import Store
from controller.store.journal import BLOCKLOGS, TRACES, Journal
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import comparable
from tests.fakes import FakeClock

RUNME_TRACE = "01HYRKRJETPVQA84VQR9AR6J30"
RUNME_BLOCK = "01HF7B0KJM3HHFDVSX9YFTZ8PE"


class Pipeline:
    """The three reconcilers over one log file, driven by hand (no threads, no watcher)."""

    def __init__(
        self,
        tmp_path: Path,
        clock: FakeClock,
        settings: TraceSettings,
        store: Store | None = None,
    ) -> None:
        self.journal = Journal(tmp_path / "journal.db")
        self.store = store if store is not None else SQLiteStore(tmp_path / "store.db")
        self.logfile = LogFileReconciler(self.store, self.journal, LogFileSettings(), clock)
        self.trace = TraceReconciler(self.store, self.journal, settings, clock)
        self.blocklog = BlockLogReconciler(self.store)
        self.log = tmp_path / "logs" / "runme.json"
        self.log.parent.mkdir()

    def sync(self, path: Path) -> None:
        """Reconcile the file, then every touched trace and block log, one key at a time."""
        traces = self.logfile.reconcile([str(path)]).downstream.get(TRACES, set())
        blocklogs: set[str] = set()
        for key in sorted(traces):
            blocklogs |= self.trace.reconcile([key]).downstream.get(BLOCKLOGS, set())
        for name in sorted(blocklogs):
            self.blocklog.reconcile([name])


def runme_lines(testdata: Path) -> list[bytes]:
    return [
        line + b"\n" for line in (testdata / "runme_traces_lines.jsonl").read_bytes().splitlines()
    ]


def expected(path: Path) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        entries = [e for batch in read_all(f) for e in batch.entries]
    traces, blocklogs = analyze(entries)
    return comparable(traces), comparable(blocklogs)


def test_late_line_after_completion_gives_the_right_trace_from_one_journal_row(
    tmp_path: Path, testdata: Path
) -> None:
    clock = FakeClock(1_800_000_000.0)
    pipeline = Pipeline(tmp_path, clock, TraceSettings())
    log = pipeline.log
    lines = runme_lines(testdata)
    log.write_bytes(b"".join(lines))
    pipeline.sync(log)
    assert pipeline.journal.counts()["traces"] == 1, "one accumulator row, not a row per line"

    # A late line of the same trace, timed before its start: the start time must move.
    clock.now += 3601
    late = orjson.loads(lines[7])
    late.update(ts=late["ts"] - 5, msg="late line", evalMode=True)
    with open(log, "ab") as f:
        f.write(orjson.dumps(late) + b"\n")
    pipeline.sync(log)

    want_traces, want_blocklogs = expected(log)
    got_traces = comparable(pipeline.store.list("Trace"))
    got_blocklogs = comparable(pipeline.store.list("BlockLog"))
    assert got_traces == want_traces
    assert got_blocklogs == want_blocklogs
    (trace,) = got_traces.values()
    assert trace["spec"]["evalMode"] is True and trace["status"]["entries"] == 7
    assert pipeline.journal.counts()["traces"] == 1


def test_abandonment_is_decided_on_ingest_time_for_unfinished_traces_only() -> None:
    assert not is_abandoned("InProgress", last_entry_at=1000.0, now=1599.0, abandon_after=600)
    assert is_abandoned("InProgress", last_entry_at=1000.0, now=1600.0, abandon_after=600)
    assert not is_abandoned("Complete", last_entry_at=0.0, now=1e9, abandon_after=600)


def test_idle_unfinished_trace_is_swept_abandoned_and_reopened_by_its_end_line(
    tmp_path: Path, testdata: Path
) -> None:
    clock = FakeClock(1_800_000_000.0)
    pipeline = Pipeline(tmp_path, clock, TraceSettings(abandon_after=600))
    log = pipeline.log
    lines = runme_lines(testdata)
    end = next(i for i, line in enumerate(lines) if b"sending the final response" in line)
    log.write_bytes(b"".join(lines[:end]))

    pipeline.sync(log)
    trace = pipeline.store.get("Trace", "01hyrkrjetpvqa84vqr9ar6j30-hhlcrtvwg43ks3tjl")
    assert trace["status"]["phase"] == "InProgress"
    assert pipeline.journal.traces_to_abandon(clock.now - 600) == []

    clock.now += 300
    assert pipeline.journal.traces_to_abandon(clock.now - 600) == [], "idle for 300 s only"
    clock.now += 301
    assert pipeline.journal.traces_to_abandon(clock.now - 600) == [RUNME_TRACE]
    pipeline.trace.reconcile([RUNME_TRACE])
    trace = pipeline.store.get("Trace", trace["metadata"]["name"])
    assert trace["status"]["phase"] == "Abandoned"
    assert pipeline.journal.traces_to_abandon(clock.now - 600) == [], "marked once"

    with open(log, "ab") as f:
        f.write(b"".join(lines[end:]) + b"\n")
    pipeline.sync(log)
    trace = pipeline.store.get("Trace", trace["metadata"]["name"])
    assert trace["status"]["phase"] == "Complete" and trace["spec"]["exitCode"] == 0
    assert pipeline.journal.traces_to_abandon(clock.now + 3600) == [], "complete now"


def test_noop_reconcile_makes_no_writes(tmp_path: Path, testdata: Path) -> None:
    pipeline = Pipeline(tmp_path, FakeClock(1_800_000_000.0), TraceSettings())
    log = pipeline.log
    log.write_bytes(b"".join(runme_lines(testdata)))
    pipeline.sync(log)
    _, version = pipeline.store.list_with_version("Trace")
    pipeline.trace.reconcile([RUNME_TRACE])
    for blocklog in pipeline.store.list("BlockLog"):
        pipeline.blocklog.reconcile([blocklog["metadata"]["name"]])
    assert pipeline.store.list_with_version("Trace")[1] == version


def test_execution_arriving_before_its_generate_trace_joins_the_same_blocklog(
    tmp_path: Path, testdata: Path
) -> None:
    """The RunMe execution is read first; the Generate trace naming its block comes later."""
    pipeline = Pipeline(tmp_path, FakeClock(1_800_000_000.0), TraceSettings())
    log = pipeline.log
    log.write_bytes(b"".join(runme_lines(testdata)))
    pipeline.sync(log)
    # The sample ends without a newline; appended to a live log its last line is whole
    # only with one (a last line without it is read once the file is quiet, issue 24).
    generate = (testdata / "generate_trace_lines.jsonl").read_bytes().rstrip(b"\n") + b"\n"
    first_block = orjson.loads(generate.splitlines()[-1])["response"]["blocks"][0]["id"]
    with open(log, "ab") as f:
        f.write(generate.replace(first_block.encode(), RUNME_BLOCK.encode()))
    pipeline.sync(log)
    want_traces, want_blocklogs = expected(log)
    assert comparable(pipeline.store.list("BlockLog")) == want_blocklogs
    joined = want_blocklogs[
        next(n for n in want_blocklogs if n.startswith("01hf7b0kjm3hhfdvsx9yftz8pe"))
    ]
    assert joined["spec"]["genTraceId"] == "2c4efb9372de3bb51d66d3f7e9c3a76a"
    assert joined["spec"]["execTraceIds"] == [RUNME_TRACE]
