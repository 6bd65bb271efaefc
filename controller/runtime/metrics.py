"""Prometheus metrics: one registry per process, and the standard `workqueue_*` set.

`MetricsRegistry` wraps a prometheus_client `CollectorRegistry` so that a
process shares one (served on /metrics) while each test makes a private one.
Its `counter` / `gauge` / `histogram` return the cached metric on repeated
calls, so modules may ask for "their" metric wherever they need it.

`QueueMetrics` carries client-go's work-queue metric names, labelled by queue
`name`. The queue calls its hooks (add, get, done, retry, discard) under its
own lock. The two in-flight gauges, `workqueue_unfinished_work_seconds` and
`workqueue_longest_running_processor_seconds`, are computed at scrape time by
a custom collector from the start times of the items being processed: a
periodic refresh would need a thread per registry and still be stale between
ticks, while a collector is exact at the moment of the scrape and costs nothing
when nobody scrapes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# client-go's ExponentialBuckets(10e-9, 10, 10): 10 ns .. 10 s.
QUEUE_LATENCY_BUCKETS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
UNFINISHED_WORK = "workqueue_unfinished_work_seconds"
LONGEST_RUNNING = "workqueue_longest_running_processor_seconds"


class MetricsRegistry:
    """A CollectorRegistry with cached metric constructors and exposition."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.collector_registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._queues: dict[str, QueueMetrics] = {}
        # Re-entrant: making a QueueMetrics (under the lock) makes metrics.
        self._lock = threading.RLock()

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._metric(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._metric(Gauge, name, doc, labels)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._metric(Histogram, name, doc, labels, buckets=tuple(buckets))

    def render(self) -> bytes:
        """The Prometheus text exposition format of everything registered."""
        return generate_latest(self.collector_registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (e.g. `workqueue_adds_total`), None if absent."""
        return self.collector_registry.get_sample_value(name, labels or {})

    def _metric(self, cls: type[M], name: str, doc: str, labels: Sequence[str], **kwargs: Any) -> M:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = cls(name, doc, labelnames=tuple(labels), registry=None, **kwargs)
                self.collector_registry.register(metric)
                self._metrics[name] = metric
                return metric
        if not isinstance(existing, cls) or existing._labelnames != tuple(labels):
            raise ValueError(
                f"metric {name!r} already exists as {type(existing).__name__}"
                f"{existing._labelnames}, not {cls.__name__}{tuple(labels)}"
            )
        return existing

    def _queue_metrics(self, name: str, make: Callable[[], QueueMetrics]) -> QueueMetrics:
        """The queue's metrics, made once; the in-flight collector is registered with the first."""
        with self._lock:
            if not self._queues:
                self.collector_registry.register(_InFlightCollector(self._queues, self._lock))
            if name not in self._queues:
                self._queues[name] = make()
            return self._queues[name]


class QueueMetrics:
    """client-go's work-queue metrics for one queue (label `name`)."""

    def __init__(self, name: str, registry: MetricsRegistry, clock: Callable[[], float]) -> None:
        labels = ("name",)
        self.name = name
        self._clock = clock
        self._depth = registry.gauge(
            "workqueue_depth", "Current depth of the work queue.", labels
        ).labels(name)
        self._adds = registry.counter(
            "workqueue_adds_total", "Total number of adds handled by the work queue.", labels
        ).labels(name)
        self._queue_latency = registry.histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in the work queue before being requested.",
            labels,
            QUEUE_LATENCY_BUCKETS,
        ).labels(name)
        self._work_duration = registry.histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from the work queue takes.",
            labels,
            QUEUE_LATENCY_BUCKETS,
        ).labels(name)
        self._retries = registry.counter(
            "workqueue_retries_total", "Total number of retries handled by the work queue.", labels
        ).labels(name)
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_queue(
        cls, name: str, registry: MetricsRegistry, clock: Callable[[], float] = time.monotonic
    ) -> QueueMetrics:
        """The metrics of queue `name` on `registry`; the same object for the same name."""
        return registry._queue_metrics(name, lambda: cls(name, registry, clock))

    def add(self, item: Hashable) -> None:
        """An item became dirty (waiting to be processed)."""
        self._adds.inc()
        self._depth.inc()
        with self._lock:
            self._added_at.setdefault(item, self._clock())

    def get(self, item: Hashable) -> None:
        """A worker took the item."""
        self._depth.dec()
        now = self._clock()
        with self._lock:
            added = self._added_at.pop(item, None)
            self._started_at[item] = now
        if added is not None:
            self._queue_latency.observe(now - added)

    def done(self, item: Hashable) -> None:
        """A worker finished the item."""
        now = self._clock()
        with self._lock:
            started = self._started_at.pop(item, None)
        if started is not None:
            self._work_duration.observe(now - started)

    def discard(self, item: Hashable) -> None:
        """A dirty item was dropped without being processed (shutdown)."""
        self._depth.dec()
        with self._lock:
            self._added_at.pop(item, None)

    def retry(self) -> None:
        self._retries.inc()

    def in_flight(self) -> tuple[float, float]:
        """(total seconds of unfinished work, age of the longest-running item) now."""
        now = self._clock()
        with self._lock:
            ages = [now - started for started in self._started_at.values()]
        return sum(ages), max(ages, default=0.0)


class _InFlightCollector:
    """Computes the two in-flight gauges of every queue at scrape time."""

    def __init__(self, queues: dict[str, QueueMetrics], lock: threading.RLock) -> None:
        self._queues = queues
        self._lock = lock

    def describe(self) -> Iterable[Metric]:
        return self._families(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queues = list(self._queues.values())
        return iter(self._families(queues))

    @staticmethod
    def _families(queues: Iterable[QueueMetrics]) -> list[Metric]:
        unfinished = GaugeMetricFamily(
            UNFINISHED_WORK,
            "Seconds of work in progress not yet observed by work_duration; "
            "large values suggest stuck threads.",
            labels=["name"],
        )
        longest = GaugeMetricFamily(
            LONGEST_RUNNING,
            "How many seconds the longest-running processor of the work queue has been running.",
            labels=["name"],
        )
        for queue in queues:
            total, oldest = queue.in_flight()
            unfinished.add_metric([queue.name], total)
            longest.add_metric([queue.name], oldest)
        return [unfinished, longest]


# Seconds a reconcile (or a batch of them) takes: 1 ms .. ~65 s, as controller-runtime's.
RECONCILE_TIME_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def reconcile_time(registry: MetricsRegistry) -> Histogram:
    """controller-runtime's `controller_runtime_reconcile_time_seconds`, by controller (stage)."""
    return registry.histogram(
        "controller_runtime_reconcile_time_seconds",
        "Seconds per reconcile call of each controller (a batch of keys is one call).",
        ("controller",),
        RECONCILE_TIME_BUCKETS + (10.0, 30.0, 60.0),
    )


class IngestMetrics:
    """How far the LogFile reconciler has read, per file and in total (issue 22).

    Per-file series carry the `path` label and are removed when the file is
    rotated away or deleted, so a host that rotates logs for months does not
    grow a series per file it ever saw. The totals of what is still watched
    (files, bytes behind) are computed at scrape time from the per-file values.
    """

    def __init__(self, registry: MetricsRegistry) -> None:
        path = ("path",)
        self._lines = registry.counter(
            "ingest_lines_read_total", "Complete lines read from every log file."
        )
        self._bytes = registry.counter(
            "ingest_read_bytes_total", "Bytes read from every log file (complete lines)."
        )
        self._file_lines = registry.counter(
            "ingest_file_lines_read_total", "Complete lines read from one log file.", path
        )
        self._file_bytes = registry.counter(
            "ingest_file_read_bytes_total", "Bytes read from one log file.", path
        )
        self._file_behind = registry.gauge(
            "ingest_file_behind_bytes",
            "Bytes of one log file not read yet (size - watermark).",
            path,
        )
        self._file_last_read = registry.gauge(
            "ingest_file_last_read_timestamp_seconds",
            "Unix time of the last read of new lines from one log file.",
            path,
        )
        self._last_read = registry.gauge(
            "ingest_last_read_timestamp_seconds",
            "Unix time of the last read of new lines from any log file.",
        )
        self._behind: dict[str, int] = {}
        self._lock = threading.Lock()
        registry.gauge(
            "ingest_behind_bytes", "Bytes of the watched log files not read yet, in total."
        ).set_function(self._total_behind)
        registry.gauge(
            "ingest_files_watched", "Log files being followed (not rotated away or deleted)."
        ).set_function(self._files_watched)

    def read(self, path: str, lines: int, nbytes: int, now: float) -> None:
        """A batch of `lines` complete lines (`nbytes` bytes) was read from `path`."""
        self._lines.inc(lines)
        self._bytes.inc(nbytes)
        self._file_lines.labels(path).inc(lines)
        self._file_bytes.labels(path).inc(nbytes)
        self._file_last_read.labels(path).set(now)
        self._last_read.set(now)

    def position(self, path: str, size: int, watermark: int) -> None:
        """`path` is `size` bytes long and read up to `watermark`."""
        behind = max(0, size - watermark)
        with self._lock:
            self._behind[path] = behind
        self._file_behind.labels(path).set(behind)

    def forget(self, path: str) -> None:
        """`path` is no longer followed (rotated away, deleted or renamed): drop its series."""
        with self._lock:
            self._behind.pop(path, None)
        for metric in (self._file_lines, self._file_bytes, self._file_behind, self._file_last_read):
            with contextlib.suppress(KeyError):
                metric.remove(path)

    def _total_behind(self) -> float:
        with self._lock:
            return float(sum(self._behind.values()))

    def _files_watched(self) -> float:
        with self._lock:
            return float(len(self._behind))
