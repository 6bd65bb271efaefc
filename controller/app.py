"""What each `foylectl` command does: open the stores, wire the parts, run them."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.api.kinds import KindInfo, UnknownKind, lookup
from controller.cli import UsageError
from controller.settings import Settings, default_log_dirs, default_state_dir
from controller.store.base import NotFound, Store

if TYPE_CHECKING:  # heavy modules are imported lazily by the commands that need them
    from controller.learn.index import ExampleIndex
    from controller.reconcilers.learner import LearnerReconciler
    from controller.runtime.metrics import MetricsRegistry
    from controller.store.journal import Journal

log = logging.getLogger("foylectl")


# -- settings and stores ---------------------------------------------------------------


def state_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()


def writable_state_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise UsageError(f"cannot create the state dir {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"the state dir {path} is not writable")
    return path


def settings_from(
    args: argparse.Namespace, *, need_logs: bool, create_default_dirs: bool = False
) -> Settings:
    settings = Settings(state_dir=state_dir_of(args))
    if getattr(args, "store", None):
        settings.store = args.store
        settings.namespace = args.namespace
    if need_logs:
        explicit = bool(args.logs)
        dirs = (
            [Path(d).expanduser().absolute() for d in args.logs] if explicit else default_log_dirs()
        )
        missing = [d for d in dirs if not d.is_dir()]
        if explicit and missing:
            raise UsageError(f"log directory {missing[0]} does not exist or is not a directory")
        if create_default_dirs and not explicit:
            # Foyle and RunMe create these when they first log; watching them from the start
            # means their first lines are seen the moment they are written.
            for directory in missing:
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                    log.info("created %s (where %s writes its logs)", directory, directory.name)
                except OSError as err:
                    log.warning("cannot create %s: %s", directory, err.strerror)
        settings.log_dirs = [d for d in dirs if d.is_dir()]
        if not settings.log_dirs:
            raise UsageError(
                "none of the default log directories exists ("
                + ", ".join(str(d) for d in dirs)
                + "); name one with --logs DIR"
            )
        settings.max_line_bytes = args.max_line_bytes
    if getattr(args, "training_dir", None):
        settings.training_dirs = [Path(d).expanduser() for d in args.training_dir]
    return settings


def open_store(settings: Settings, args: argparse.Namespace, *, must_exist: bool = False) -> Store:
    if settings.store == "kube":
        from controller.store.kube import KubeStore

        return KubeStore(
            settings.namespace,
            kubeconfig=getattr(args, "kubeconfig", None),
            qps=settings.kube_qps,
            burst=settings.kube_burst,
        )
    from controller.store.sqlite import SQLiteStore

    if must_exist and not settings.store_path.exists():
        raise UsageError(
            f"no store at {settings.store_path}: run `foylectl run` or `foylectl analyze`"
            " first, or point --state-dir (or FOYLECTL_STATE_DIR) at an existing state dir"
        )
    if not must_exist:
        writable_state_dir(settings.state_dir)
    return SQLiteStore(settings.store_path)


def find(store: Store, info: KindInfo, name_or_id: str) -> dict[str, Any]:
    """A resource by name, or by the raw id in its spec (so `get blocklog RAWID` works)."""
    from controller.api.names import name_for_id

    for candidate in dict.fromkeys((name_or_id, name_for_id(name_or_id))):
        try:
            return store.get(info.kind, candidate)
        except NotFound:
            continue
    raise UsageError(f'{info.plural} "{name_or_id}" not found')


# -- commands --------------------------------------------------------------------------


def dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "analyze": cmd_analyze,
        "run": cmd_run,
        "get": cmd_get,
        "describe": cmd_describe,
        "learn": cmd_learn,
        "examples": cmd_examples,
        "operator": cmd_operator,
    }
    return handlers[args.command](args)


def _kind(word: str) -> KindInfo:
    try:
        return lookup(word)
    except UnknownKind as err:
        raise UsageError(str(err)) from err


def cmd_get(args: argparse.Namespace) -> int:
    from controller.output import render

    info = _kind(args.kind)
    settings = settings_from(args, need_logs=False)
    store = open_store(settings, args, must_exist=True)
    if args.name:
        items = [find(store, info, args.name)]
    else:
        items, version = store.list_with_version(info.kind, args.selector)
    print(render(info, items, args.output, single=bool(args.name)), flush=True)
    if args.watch:
        if args.name:
            items, version = store.list_with_version(info.kind, args.selector)
        return _watch(store, info, version, args)
    return 0


def _watch(store: Store, info: KindInfo, version: str, args: argparse.Namespace) -> int:
    import json

    from controller.output import qualified_name, table
    from controller.store.base import Gone, matches_labels

    while True:
        try:
            for event in store.watch(info.kind, version):
                version = event.resource_version
                obj = event.object
                if args.name and args.name not in (obj["metadata"]["name"], obj["spec"].get("id")):
                    continue
                if not matches_labels(obj, args.selector):
                    continue
                if args.output in ("json", "yaml"):
                    print(json.dumps({"type": event.type, "object": obj}), flush=True)
                elif args.output == "name":
                    print(qualified_name(info, obj), flush=True)
                else:
                    row = table(info, [obj], wide=args.output == "wide").splitlines()[1]
                    print(row + ("   (deleted)" if event.type == "DELETED" else ""), flush=True)
        except Gone:
            _, version = store.list_with_version(info.kind)


def cmd_describe(args: argparse.Namespace) -> int:
    from controller.api.names import name_for_id
    from controller.output import describe
    from controller.reconcilers.blocklog import member_ids

    info = _kind(args.kind)
    store = open_store(settings_from(args, need_logs=False), args, must_exist=True)
    obj = find(store, info, args.name)
    related: dict[str, list[dict[str, Any]]] = {}
    if info.kind == "BlockLog":
        traces = []
        for trace_id in member_ids(obj["spec"]):
            try:
                traces.append(store.get("Trace", name_for_id(trace_id)))
            except NotFound:
                continue
        related["Traces"] = traces
    print(describe(obj, related))
    return 0


def _setup_logging(fmt: str) -> None:
    from controller.runtime.logsetup import setup_logging

    setup_logging(fmt)


def _index(settings: Settings, args: argparse.Namespace) -> ExampleIndex:
    """The example index, embedding with OpenAI when a key file is given."""
    from controller.learn.index import ExampleIndex

    embedder = None
    key_file = getattr(args, "openai_api_key_file", None)
    if key_file:
        from controller.learn.embedders import OpenAIEmbedder

        try:
            key = Path(key_file).expanduser().read_text().strip()
        except OSError as err:
            raise UsageError(
                f"cannot read the OpenAI API key file {key_file}: {err.strerror}"
            ) from err
        embedder = OpenAIEmbedder(key)
    return ExampleIndex(settings.index_path, embedder)


def _learner(
    settings: Settings, store: Store, args: argparse.Namespace, registry: Any = None
) -> LearnerReconciler:
    from controller.learn.training import TrainingWriter
    from controller.reconcilers.learner import LearnerReconciler

    writable_state_dir(settings.state_dir)
    index = _index(settings, args)
    return LearnerReconciler(store, index, TrainingWriter(settings.training_dirs), metrics=registry)


def _journal(settings: Settings) -> Journal:
    from controller.store.journal import Journal

    writable_state_dir(settings.state_dir)
    return Journal(settings.journal_path)


def cmd_analyze(args: argparse.Namespace) -> int:
    from controller.runtime.manager import Manager
    from controller.runtime.progress import Progress

    _setup_logging("text")
    settings = settings_from(args, need_logs=True)
    settings.learn = not args.no_learn
    started = time.monotonic()
    store = open_store(settings, args)
    journal = _journal(settings)
    learner = _learner(settings, store, args) if settings.learn else None
    manager = Manager(
        settings, store, journal, learner=learner.reconcile if learner else None, oneshot=True
    )
    progress = Progress(settings.log_dirs, journal, enabled=not args.no_progress)
    progress.start()
    try:
        manager.run_until_idle()
    finally:
        manager.stop()
        progress.stop()
    files = journal.files()
    counts = [
        _counted(sum(f.lines for f in files), "line"),
        _counted(sum(f.bad_lines for f in files), "bad line"),
        _counted(store.count("Trace"), "trace"),
        _counted(store.count("BlockLog"), "block log"),
    ]
    if learner:
        counts.append(_counted(store.count("Example"), "example"))
    print(
        f"analyzed {_counted(len(files), 'file')}: {', '.join(counts)}"
        f" in {time.monotonic() - started:.2f}s"
    )
    return 0


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
    from controller.runtime.httpserver import HealthServer
    from controller.runtime.manager import Manager
    from controller.runtime.metrics import MetricsRegistry

    stop = threading.Event()
    _stop_on_signals(stop)  # first thing: a SIGTERM during start-up still means exit 0
    _setup_logging(args.log_format)
    settings = settings_from(args, need_logs=True, create_default_dirs=True)
    settings.poll = args.poll
    settings.workers = max(1, args.workers)
    settings.metrics_addr = args.metrics_addr
    settings.rescan_interval = args.rescan_interval
    settings.abandon_after = args.abandon_after
    settings.retention = args.retention
    settings.learn = not args.no_learn
    if args.node:
        settings.node = args.node
    writable_state_dir(settings.state_dir)
    store = open_store(settings, args)
    journal = _journal(settings)
    registry = MetricsRegistry()
    learner = _learner(settings, store, args, registry) if settings.learn else None
    manager = Manager(
        settings, store, journal, registry, learner=learner.reconcile if learner else None
    )
    server = None
    if settings.metrics_addr:
        server = HealthServer(settings.metrics_addr, manager.registry, lambda: manager.ready)
        server.start()
    log.info(
        "watching %s; state in %s (%s store); learning %s%s",
        ", ".join(str(d) for d in settings.log_dirs),
        settings.state_dir,
        settings.store,
        "on" if learner else "off",
        f"; metrics on http://{settings.metrics_addr}/metrics" if server else "",
    )
    if not stop.is_set():
        manager.start()
        _start_kube_extras(store, registry, args.trace_retention, stop)
        log.info("started")
    stop.wait()
    drained = manager.stop(timeout=8.0)
    if server is not None:
        server.stop()
    log.info("stopped%s", "" if drained else " (some work left for the next start)")
    return 0


def _start_kube_extras(
    store: Store, registry: MetricsRegistry, trace_retention: float, stop: threading.Event
) -> None:
    """Issue 12: oversized-object metrics and Trace retention, for the kube store only."""
    from controller.store.kube import KubeStore

    if not isinstance(store, KubeStore):
        return
    store.attach_metrics(registry)
    if trace_retention > 0:
        from controller.reconcilers.retention import TraceRetention

        # A sweep lists every Trace: a quarter of the retention apart, at most hourly.
        interval = min(3600.0, max(1.0, trace_retention / 4))
        TraceRetention(store, trace_retention, registry, interval=interval).start(stop)


def cmd_learn(args: argparse.Namespace) -> int:
    from controller.reconcilers.learner import learn_all

    _setup_logging("text")
    settings = settings_from(args, need_logs=False)
    store = open_store(settings, args, must_exist=settings.store == "sqlite")
    learner = _learner(settings, store, args)
    counts = learn_all(store, learner)
    print("learned: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if not args.follow:
        return 0
    from controller.runtime.follow import follow_blocklogs

    stop = threading.Event()
    _stop_on_signals(stop)
    follow_blocklogs(store, learner.reconcile, stop)
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    import json

    settings = settings_from(args, need_logs=False)
    if not settings.index_path.exists():
        raise UsageError(
            f"no example index at {settings.index_path}: run `foylectl run` or `foylectl learn` first"
        )
    hits = _index(settings, args).search(args.text, k=args.k)
    results = [(name, score, json.loads(example)) for name, score, example in hits]
    if args.output == "json":
        print(json.dumps([{"name": n, "score": s, "example": e} for n, s, e in results], indent=2))
        return 0
    if not results:
        print("no examples found")
    for rank, (name, score, example) in enumerate(results, 1):
        answer = (example.get("spec", {}).get("answer") or [{}])[0].get("contents", "")
        print(f"{rank}. {name}  score={score:.3f}")
        print("   answer: " + answer.strip().replace("\n", "\n           "))
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from controller.operator import run_operator

    if args.kubeconfig:
        # kopf's login and the kubernetes client both honour $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).expanduser())
    settings = Settings(state_dir=state_dir_of(args), store="kube", namespace=args.namespace)
    if args.training_dir:
        settings.training_dirs = [Path(d).expanduser() for d in args.training_dir]
    return run_operator(
        settings, standalone=args.standalone, peering=args.peering, liveness=args.liveness
    )
