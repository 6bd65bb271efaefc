"""What each `foylectl` command does: open the stores, wire the parts, run them."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from controller.configure import settings_from, writable_state_dir
from controller.errors import CommandError, UsageError
from controller.learning import (
    build_learners,
    example_index,
    learning_manager,
    pipeline_learners,
)
from controller.runtime.collector import collect_rarely
from controller.settings import STOP_SECONDS, Settings
from controller.store.base import Store

if TYPE_CHECKING:  # heavy modules are imported lazily by the commands that need them
    from controller.cli.progress import ProgressReporter
    from controller.pipeline import Pipeline
    from controller.store.journal import Journal

log = logging.getLogger("foylectl")

# Read from Foyle v0.0.45 (app/pkg/learn/in_memory.go, application/app.go): the agent's
# example DB loads the training dirs once, in NewInMemoryExampleDB; later it loads only
# files its own in-process learner posts to it. No watch, no endpoint: files written by
# anyone else are seen after a restart.
FOYLE_RESTART_NOTE = (
    "note: a running Foyle reads its training directories only at start-up"
    " (Foyle v0.0.45 has no reload); restart Foyle to use new examples"
)

# -- settings and stores ---------------------------------------------------------------


# What a running pipeline reads (and Examples, when it learns); in kube mode each comes
# from a watch-fed cache (issue 19). The ingester's Role lists and watches exactly these.
PIPELINE_KINDS = ("LogFile", "Trace", "BlockLog", "Session")


def open_store(
    settings: Settings,
    args: argparse.Namespace,
    *,
    must_exist: bool = False,
    cached_kinds: tuple[str, ...] = (),
) -> Store:
    if settings.store == "kube":
        from controller.store.kube import KubeStore

        return KubeStore(
            settings.namespace,
            kubeconfig=getattr(args, "kubeconfig", None),
            qps=settings.kube_qps,
            burst=settings.kube_burst,
            cached_kinds=cached_kinds,
        )
    from controller.store.sqlite import SQLiteStore

    if must_exist and not settings.store_path.exists():
        raise CommandError(
            f"no store at {settings.store_path}: run `foylectl run` or `foylectl analyze`"
            " first, or point --state-dir (or FOYLECTL_STATE_DIR) at an existing state dir"
        )
    if not must_exist:
        writable_state_dir(settings.state_dir)
    return SQLiteStore(settings.store_path)


# -- commands --------------------------------------------------------------------------


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    handlers = {
        "analyze": cmd_analyze,
        "run": cmd_run,
        "get": cmd_get,
        "describe": cmd_describe,
        "learn": cmd_learn,
        "examples": cmd_examples,
        "operator": cmd_operator,
    }
    if args.command == "completion":
        from controller.cli.completion import script

        print(script(parser, args.shell))
        return 0
    return handlers[args.command](args)


def cmd_get(args: argparse.Namespace) -> int:
    from controller.cli.getcmd import cmd_get as get
    from controller.cli.getcmd import wanted_from

    wanted_from(args)  # usage errors before opening anything
    settings = settings_from(args, need_logs=False)
    store = open_store(settings, args, must_exist=True)
    return get(args, store, settings.namespace if settings.store == "kube" else None)


def cmd_describe(args: argparse.Namespace) -> int:
    from controller.cli.describecmd import cmd_describe as describe
    from controller.cli.describecmd import wanted_from

    wanted_from(args)  # usage errors before opening anything
    settings = settings_from(args, need_logs=False)
    journal = settings.journal_path if settings.store == "kube" else None
    return describe(args, open_store(settings, args, must_exist=True), journal)


def _setup_logging(fmt: str) -> None:
    from controller.runtime.logsetup import setup_logging

    setup_logging(fmt)


def _journal(settings: Settings) -> Journal:
    from controller.store.journal import Journal
    from controller.store.sqlite_util import check_intact

    writable_state_dir(settings.state_dir)
    local = [settings.store_path] if settings.store == "sqlite" else []
    for path in (settings.journal_path, *local):  # issue 24: damage said at start
        check_intact(path)
    return Journal(settings.journal_path)


def cmd_analyze(args: argparse.Namespace) -> int:
    from controller.cli.progress import ProgressReporter, log_line, terminal_bar
    from controller.pipeline import Pipeline

    _setup_logging("text")
    settings = settings_from(args, need_logs=True)
    started = time.monotonic()
    store = open_store(settings, args)
    journal = _journal(settings)
    learners = build_learners(settings, store) if settings.learn else {}
    manager = Pipeline(settings, store, journal, oneshot=True, **pipeline_learners(learners))
    collect_rarely()
    tty = sys.stderr.isatty()
    progress = ProgressReporter(
        settings.log_dirs,
        journal,
        manager,
        terminal_bar if tty else log_line,
        interval=0.25 if tty else 5.0,
        delay=1.0,  # a corpus that takes longer than a second shows its progress
    )
    if not args.no_progress:
        progress.start()
    try:
        manager.run_until_idle()
    except KeyboardInterrupt:
        _interrupted(progress)
    finally:
        manager.stop()
        progress.stop()
        if progress.shown and tty:
            sys.stderr.write("\n")
    files = journal.files()
    counts = [
        _counted(sum(f.lines for f in files), "line"),
        _counted(sum(f.bad_lines for f in files), "bad line"),
        _counted(store.count("Trace"), "trace"),
        _counted(store.count("BlockLog"), "block log"),
    ]
    counts.insert(3, _counted(store.count("Session"), "session"))
    if learners:
        counts.append(_counted(store.count("Example"), "example"))
        waiting = next(iter(learners.values())).index.outage.waiting  # issue 20: one shared index
        if waiting:
            counts.append(f"{len(waiting)} waiting for the embedding service")
    print(
        f"analyzed {_counted(len(files), 'file')}: {', '.join(counts)}"
        f" in {time.monotonic() - started:.2f}s"
    )
    return _report_failing(manager)


def _interrupted(progress: ProgressReporter) -> NoReturn:
    """Ctrl-C: end the progress line and exit at once (issue 13), not after draining.

    In-flight batches are dropped as a kill drops them: the journal commits each
    batch with its watermark atomically, so the next run goes on from the last one.
    """
    progress.stop()
    if progress.shown and sys.stderr.isatty():
        sys.stderr.write("\n")
    print("foylectl: interrupted; analyze again to go on from here", file=sys.stderr)
    _exit_now(130)


def _report_failing(manager: Pipeline) -> int:
    """1 and a summary on stderr when reconciles were given up on, else 0."""
    failing = [(c.name, f) for c in manager.controllers for f in c.failing()]
    if not failing:
        return 0
    name, first = failing[0]
    print(
        f"foylectl: error: {_counted(len(failing), 'item')} could not be processed; the first,"
        f" {name} {first.key}, failed {first.failures} times: {first.first_error}",
        file=sys.stderr,
    )
    return 1


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`: the command drains and exits 0."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def cmd_run(args: argparse.Namespace) -> int:
    from controller.cli.progress import ProgressReporter, log_line
    from controller.pipeline import Pipeline
    from controller.runtime.httpserver import HealthServer
    from controller.runtime.metrics import MetricsRegistry

    stop = threading.Event()
    _stop_on_signals(stop)  # first thing: a SIGTERM during start-up still means exit 0
    _setup_logging(args.log_format)
    settings = settings_from(args, need_logs=True, create_default_dirs=True)
    writable_state_dir(settings.state_dir)
    cached = PIPELINE_KINDS + (("Example",) if settings.learn else ())
    store = open_store(settings, args, cached_kinds=cached)
    journal = _journal(settings)
    registry = MetricsRegistry()
    learners = build_learners(settings, store, registry) if settings.learn else {}
    manager = Pipeline(settings, store, journal, registry, **pipeline_learners(learners))
    collect_rarely()
    server = None
    if settings.metrics_addr:
        try:
            server = HealthServer(settings.metrics_addr, manager.registry, lambda: manager.ready)
        except OSError as err:
            raise CommandError(f"cannot serve on {settings.metrics_addr}: {err.strerror}") from err
        server.start()
    log.info(
        "watching %s; state in %s (%s store); learning %s%s",
        ", ".join(str(d) for d in settings.log_dirs),
        settings.state_dir,
        settings.store,
        f"from {', '.join(learners)}" if learners else "off",
        f"; metrics on http://{server.url}/metrics" if server else "",
    )
    if learners:
        log.info(FOYLE_RESTART_NOTE)
    progress = ProgressReporter(
        settings.log_dirs,
        journal,
        manager,
        log_line,
        interval=5.0,
        delay=5.0,
        until=lambda: manager.ready,
    )
    if not stop.is_set():
        _add_kube_extras(store, manager, settings.trace_retention)
        manager.start()
        log.info("started")
        progress.start()
    stop.wait()
    progress.stop()
    drained = manager.stop(timeout=STOP_SECONDS)
    if server is not None:
        server.stop()
    if drained:
        log.info("stopped")
        return 0
    log.info("stopped (some work left for the next start)")
    _exit_now(0)


def _exit_now(code: int) -> NoReturn:
    """Exit without waiting for in-flight work, as SIGKILL would (the journal's watermarks
    make that safe): worker threads still inside a request must not run into the
    interpreter's finalization, which can abort the process (exit -6)."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _add_kube_extras(store: Store, pipeline: Pipeline, trace_retention: float) -> None:
    """Issue 12: oversized-object metrics and Trace retention, for the kube store only."""
    from controller.store.kube import KubeStore

    if not isinstance(store, KubeStore):
        return
    store.attach_metrics(pipeline.registry)
    if trace_retention > 0:
        from controller.reconcilers.retention import TraceRetention

        retention = TraceRetention(store, trace_retention, pipeline.settle_traces)
        # A sweep lists every Trace: a quarter of the retention apart, at most hourly.
        interval = min(3600.0, max(1.0, trace_retention / 4))
        pipeline.manager.every(interval, retention.sweep_logged, "trace-retention")


def cmd_learn(args: argparse.Namespace) -> int:
    from controller.reconcilers.learner import learn_all

    _setup_logging("text")
    settings = settings_from(args, need_logs=False)
    store = open_store(settings, args, must_exist=settings.store == "sqlite")
    learners = build_learners(settings, store)
    for learner in learners.values():
        counts = learn_all(store, learner)
        print("learned: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(FOYLE_RESTART_NOTE)
    if not args.follow:
        return 0
    from controller.cli.follow import follow
    from controller.runtime.metrics import MetricsRegistry

    stop = threading.Event()
    _stop_on_signals(stop)
    manager, controllers = learning_manager(learners, MetricsRegistry())
    threads = [
        threading.Thread(
            target=follow,
            args=(store, kind, learners[kind].source.label, controller, stop),
            name=f"follow-{kind}",
            daemon=True,
        )
        for kind, controller in controllers.items()
    ]
    manager.start()
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()
    manager.stop(STOP_SECONDS)
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    import json

    from controller.cli.output import printable
    from controller.learn.query import blocks_to_markdown

    if not args.text.strip():
        raise UsageError("examples search needs TEXT to search for")
    settings = settings_from(args, need_logs=False)
    if not settings.index_path.exists():
        raise CommandError(
            f"no example index at {settings.index_path}: run `foylectl run` or `foylectl learn` first"
        )
    hits = example_index(settings).search(args.text, k=args.k)
    results = [(name, score, json.loads(example)) for name, score, example in hits]
    if args.output == "json":
        print(json.dumps([{"name": n, "score": s, "example": e} for n, s, e in results], indent=2))
        return 0
    if not results:
        print("no examples found")
    for rank, (name, score, example) in enumerate(results, 1):
        spec = example.get("spec", {})
        answer = (spec.get("answer") or [{}])[0].get("contents", "")
        query = blocks_to_markdown((spec.get("query") or {}).get("blocks") or [])
        print(f"{rank}. {name}  score={score:.3f}")
        for label, text in (("query: ", _last_lines(query, 3)), ("answer:", answer.strip())):
            print(f"   {label} " + printable(text).replace("\n", "\n           "))
    return 0


def _last_lines(text: str, n: int) -> str:
    """The end of a query (the cells just before the answer), marked when cut."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join((["..."] if len(lines) > n else []) + lines[-n:])


def cmd_operator(args: argparse.Namespace) -> int:
    from controller.operator import run_operator

    if args.kubeconfig:
        # kopf's login and the kubernetes client both honour $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).expanduser())
    from controller.store.kube import load_api_client

    load_api_client(
        os.environ.get("KUBECONFIG") if args.kubeconfig else None
    )  # no configuration: one line now, not kopf's retry loop
    return run_operator(
        settings_from(args, need_logs=False),
        standalone=args.standalone,
        peering=args.peering,
        liveness=args.liveness,
        verbose=args.verbose,
    )
