"""Ingest metrics (issue 22 item 10): how far behind the ingester is, per file and in total.

First through the LogFile reconciler with a real journal, store and registry
(a read budget makes "behind" deterministic), then through a real `foylectl
run` scraped over HTTP while a real writer appends, rotates and removes files.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.reconcilers.logfile import LogFileReconciler, LogFileSettings
from controller.runtime.metrics import IngestMetrics, MetricsRegistry
from controller.store.journal import Journal
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import RunningController, free_port, wait_for
from tests.test_logfile_reconciler import append, lines


def test_bytes_behind_lines_and_bytes_read_per_file_and_in_total(tmp_path: Path) -> None:
    registry = MetricsRegistry()
    logs = tmp_path / "logs"
    logs.mkdir()
    a, b = logs / "a.jsonl", logs / "b.jsonl"
    append(a, lines(range(100)))
    append(b, lines(range(100, 110)))
    journal, store = Journal(tmp_path / "journal.db"), SQLiteStore(tmp_path / "store.db")
    try:
        budget = 4096
        reconciler = LogFileReconciler(
            store,
            journal,
            LogFileSettings(
                batch_bytes=budget,
                bytes_per_reconcile=budget,
                publish_interval=0.0,
                rotate_wait=0.0,  # a deleted file is let go at once, not drained while quiet
            ),
            metrics=IngestMetrics(registry),
        )
        assert (
            reconciler.reconcile([str(a)]).result(str(a)).requeue
        )  # the budget ran out: more to read
        reconciler.reconcile([str(b)])
        value = metric_values(registry)
        row = journal.active_file_at(str(a))
        assert row is not None and 0 < row.watermark < a.stat().st_size
        assert value("ingest_file_behind_bytes", path=str(a)) == a.stat().st_size - row.watermark
        assert value("ingest_file_behind_bytes", path=str(b)) == 0
        assert value("ingest_behind_bytes") == a.stat().st_size - row.watermark
        assert value("ingest_files_watched") == 2
        assert value("ingest_file_read_bytes_total", path=str(a)) == row.watermark
        assert value("ingest_file_lines_read_total", path=str(b)) == 10
        assert value("ingest_lines_read_total") == row.lines + 10
        assert value("ingest_read_bytes_total") == row.watermark + b.stat().st_size

        while reconciler.reconcile([str(a)]).result(str(a)).requeue:
            pass
        assert value("ingest_behind_bytes") == 0
        assert value("ingest_lines_read_total") == 110
        b.unlink()
        reconciler.reconcile([str(b)])
        assert value("ingest_files_watched") == 1
        assert value("ingest_file_lines_read_total", path=str(b)) is None  # series dropped
        reconciler.close()
    finally:
        store.close()
        journal.close()


def metric_values(registry: MetricsRegistry) -> Callable[..., float | None]:
    return lambda name, **labels: registry.value(name, labels)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_run_exposes_ingest_metrics_and_logs_files_it_follows_and_loses(tmp_path: Path) -> None:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    first = logs / "first.jsonl"
    append(first, lines(range(5)))
    port = free_port()
    run = RunningController(logs, state, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        run.wait_started()
        second = logs / "second.jsonl"
        append(second, lines(range(5, 8)))
        written = first.stat().st_size + second.stat().st_size

        def caught_up() -> dict | None:
            samples = scrape(port)
            done = samples.get(("ingest_read_bytes_total", ())) == written
            return samples if done and samples.get(("ingest_behind_bytes", ())) == 0 else None

        samples = wait_for(caught_up, 30, "every written byte read")
        assert samples[("ingest_lines_read_total", ())] == 8
        assert samples[("ingest_files_watched", ())] == 2
        assert samples[("ingest_file_lines_read_total", (("path", str(second)),))] == 3
        assert abs(samples[("ingest_last_read_timestamp_seconds", ())] - time.time()) < 60
        for stage in ("logfile", "trace"):
            key = ("controller_runtime_reconcile_time_seconds_count", (("controller", stage),))
            assert samples[key] > 0, stage
        wait_for(lambda: f"following {second}" in run.output(), 10, "the new file announced")

        first.rename(logs / "first.jsonl.1")  # logrotate's rename, then a fresh file
        append(first, lines(range(8, 9)))
        second.unlink()
        wait_for(lambda: f"stopped following {second}: removed" in run.output(), 30, "removal")
        wait_for(lambda: f"stopped following {first}: rotated" in run.output(), 30, "rotation")
        gone = ("ingest_file_lines_read_total", (("path", str(second)),))
        wait_for(lambda: gone not in scrape(port), 10, "the removed file's series dropped")
    finally:
        assert run.terminate() == 0, run.output()
