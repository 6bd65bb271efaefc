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

from controller.api.kinds import KindInfo
from controller.errors import CommandError, UsageError
from controller.settings import (
    Settings,
    default_log_dirs,
    default_log_writers,
    default_state_dir,
)
from controller.store.base import NotFound, Store
from controller.store.files import make_private_dirs, world_writable_warning

if TYPE_CHECKING:  # heavy modules are imported lazily by the commands that need them
    from controller.foyleconfig import FoyleConfig, Provider
    from controller.index.embedders import Embedder
    from controller.index.retrieval import ExampleIndex
    from controller.pipeline import Pipeline
    from controller.reconcilers.learner import LearnerReconciler
    from controller.runtime.metrics import MetricsRegistry
    from controller.runtime.progress import ProgressReporter
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
NO_EMBEDDINGS_WARNING = (
    "no embedding provider (no openai.apiKeyFile/baseURL or azureOpenAI in Foyle's config,"
    " no --openai-api-key-file): training files in %s get no embedding and Foyle's agent will"
    " skip every one of them; examples search still works locally (BM25)"
)


# -- settings and stores ---------------------------------------------------------------


def state_dir_of(args: argparse.Namespace) -> Path:
    path = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    warning = world_writable_warning(path)
    if warning:
        print(f"foylectl: warning: {warning}", file=sys.stderr)
    return path


def writable_state_dir(path: Path) -> Path:
    try:
        make_private_dirs(path)
    except OSError as err:
        raise CommandError(f"cannot create the state dir {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"the state dir {path} is not writable")
    return path


def foyle_config_of(args: argparse.Namespace) -> FoyleConfig | None:
    """Foyle's config (issue 11), for commands that learn or read logs; None for the others."""
    if not hasattr(args, "foyle_config"):
        return None
    from controller.foyleconfig import FoyleConfigError, load

    try:
        config = load(args.foyle_config)
    except FoyleConfigError as err:
        raise UsageError(str(err)) from err
    if args.foyle_config and not config.found:
        log.warning("Foyle's config %s does not exist; using Foyle's defaults", config.path)
    for note in config.notes:
        log.warning("Foyle's config %s: %s", config.path, note)
    return config


def settings_from(
    args: argparse.Namespace, *, need_logs: bool, create_default_dirs: bool = False
) -> Settings:
    settings = Settings(state_dir=state_dir_of(args))
    foyle = foyle_config_of(args)
    if foyle is not None:
        settings.training_dirs = list(foyle.training_dirs)
        settings.embedding_provider = foyle.provider
    settings.embedding_provider = _provider(settings.embedding_provider, args)
    if getattr(args, "store", None):
        settings.store = args.store
        if args.namespace is not None and args.store != "kube":
            raise UsageError(
                "-n/--namespace is for --store kube; the sqlite store has no namespaces"
            )
        settings.namespace = args.namespace or settings.namespace
    if need_logs:
        explicit = bool(args.logs)
        dirs = (
            [Path(d).expanduser().absolute() for d in args.logs]
            if explicit
            else default_log_dirs(foyle.log_dirs if foyle else ())
        )
        missing = [d for d in dirs if not d.is_dir()]
        if explicit and missing:
            raise UsageError(f"log directory {missing[0]} does not exist or is not a directory")
        if create_default_dirs and not explicit:
            # Foyle and RunMe create these when they first log; watching them from the start
            # means their first lines are seen the moment they are written.
            for directory in missing:
                try:
                    make_private_dirs(directory)
                    writer = default_log_writers().get(directory, "a writer")
                    log.info("created %s (where %s writes its logs)", directory, writer)
                except OSError as err:
                    log.warning("cannot create %s: %s", directory, err.strerror)
        settings.log_dirs = [d for d in dirs if d.is_dir()]
        if not settings.log_dirs:
            raise UsageError(
                "none of the default log directories exists ("
                + ", ".join(str(d) for d in dirs)
                + "); name one with --logs DIR"
            )
    if getattr(args, "training_dir", None):
        settings.training_dirs = [Path(d).expanduser() for d in args.training_dir]
    settings.apply_flags(vars(args))
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
        raise CommandError(
            f"no store at {settings.store_path}: run `foylectl run` or `foylectl analyze`"
            " first, or point --state-dir (or FOYLECTL_STATE_DIR) at an existing state dir"
        )
    if not must_exist:
        writable_state_dir(settings.state_dir)
    return SQLiteStore(settings.store_path)


def find(store: Store, info: KindInfo, name_or_id: str) -> dict[str, Any]:
    """One resource by name, raw id or (a LogFile) path; CommandError when there is none."""
    from controller.getcmd import find as find_all
    from controller.getcmd import not_found

    found = find_all(store, info, name_or_id)
    if not found:
        raise CommandError(not_found(info, name_or_id))
    return found[0]


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
        from controller.completion import script

        print(script(parser, args.shell))
        return 0
    return handlers[args.command](args)


def _kind(word: str) -> KindInfo:
    from controller.getargs import BadResourceArgs, kind_of

    try:
        return kind_of(word)
    except BadResourceArgs as err:
        raise UsageError(str(err)) from err


def cmd_get(args: argparse.Namespace) -> int:
    from controller.getcmd import cmd_get as get
    from controller.getcmd import wanted_from

    wanted_from(args)  # usage errors before opening anything
    settings = settings_from(args, need_logs=False)
    store = open_store(settings, args, must_exist=True)
    return get(args, store, settings.namespace if settings.store == "kube" else None)


def cmd_describe(args: argparse.Namespace) -> int:
    from controller.api.names import name_for_id
    from controller.output import describe
    from controller.reconcilers.blocklog import member_ids

    kind, name = args.kind, args.name
    if name is None:  # describe KIND/NAME, as `get -o name` prints it
        kind, _, name = args.kind.partition("/")
        if not name:
            raise UsageError("describe wants KIND NAME or KIND/NAME")
    info = _kind(kind)
    store = open_store(settings_from(args, need_logs=False), args, must_exist=True)
    obj = find(store, info, name)
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


def _provider(base: Provider | None, args: argparse.Namespace) -> Provider | None:
    """Foyle's config's embedding provider, with the --openai-* flags overriding it."""
    from controller.foyleconfig import Provider

    key = getattr(args, "openai_api_key_file", None)
    url = getattr(args, "openai_base_url", None)
    if key is None and url is None:
        return base
    if base is not None and base.kind == "openai":
        return Provider("openai", key or base.api_key_file, url or base.base_url)
    return Provider("openai", key, url or "")


def _embedder(provider: Provider | None) -> Embedder | None:
    if provider is None:
        return None
    from controller.index.embedders import OPENAI_BASE_URL, OpenAIEmbedder

    key = ""
    if provider.api_key_file is not None:
        try:
            key = provider.api_key_file.expanduser().read_text().strip()
        except OSError as err:
            raise UsageError(
                f"cannot read the {provider.kind} API key file {provider.api_key_file}:"
                f" {err.strerror}"
            ) from err
    if provider.kind == "azure" and not provider.base_url:
        raise UsageError("Foyle's config names azureOpenAI without a baseURL")
    try:
        return OpenAIEmbedder(
            key,
            base_url=provider.base_url or OPENAI_BASE_URL,
            azure_deployment=provider.deployment,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def _index(settings: Settings) -> ExampleIndex:
    """The example index, embedding as Foyle does when a provider is configured."""
    from controller.index.retrieval import ExampleIndex

    return ExampleIndex(settings.index_path, _embedder(settings.embedding_provider))


def _learners(
    settings: Settings, store: Store, registry: Any = None
) -> dict[str, LearnerReconciler]:
    """One learner per source `--learn-from` names (issue 11), sharing the index and files."""
    from controller.index.training import TrainingWriter
    from controller.reconcilers.learner import LEARN_FROM, LearnerReconciler

    writable_state_dir(settings.state_dir)
    index = _index(settings)
    if not index.embeds:
        log.warning(NO_EMBEDDINGS_WARNING, ", ".join(str(d) for d in settings.training_dirs))
    training = TrainingWriter(settings.training_dirs)
    sources = LEARN_FROM[settings.learn_from]
    return {
        s.kind: LearnerReconciler(store, index, training, metrics=registry, source=s)
        for s in sources
    }


def _reconcilers(learners: dict[str, LearnerReconciler]) -> dict[str, Any]:
    """The Pipeline's learner arguments for the learners built."""
    blocklogs, sessions = learners.get("BlockLog"), learners.get("Session")
    return {
        "learner": blocklogs.reconcile_many if blocklogs else None,
        "session_learner": sessions.reconcile_many if sessions else None,
    }


def _journal(settings: Settings) -> Journal:
    from controller.store.journal import Journal
    from controller.store.sqlite_util import check_intact

    writable_state_dir(settings.state_dir)
    local = [settings.store_path] if settings.store == "sqlite" else []
    for path in (settings.journal_path, *local):  # issue 24: damage said at start
        check_intact(path)
    return Journal(settings.journal_path)


def cmd_analyze(args: argparse.Namespace) -> int:
    from controller.pipeline import Pipeline
    from controller.runtime.progress import ProgressReporter, log_line, terminal_bar

    _setup_logging("text")
    settings = settings_from(args, need_logs=True)
    started = time.monotonic()
    store = open_store(settings, args)
    journal = _journal(settings)
    learners = _learners(settings, store) if settings.learn else {}
    manager = Pipeline(settings, store, journal, oneshot=True, **_reconcilers(learners))
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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


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
    from controller.pipeline import Pipeline
    from controller.runtime.httpserver import HealthServer
    from controller.runtime.metrics import MetricsRegistry
    from controller.runtime.progress import ProgressReporter, log_line

    stop = threading.Event()
    _stop_on_signals(stop)  # first thing: a SIGTERM during start-up still means exit 0
    _setup_logging(args.log_format)
    settings = settings_from(args, need_logs=True, create_default_dirs=True)
    writable_state_dir(settings.state_dir)
    store = open_store(settings, args)
    journal = _journal(settings)
    registry = MetricsRegistry()
    learners = _learners(settings, store, registry) if settings.learn else {}
    manager = Pipeline(settings, store, journal, registry, **_reconcilers(learners))
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
        manager.start()
        _start_kube_extras(store, registry, settings.trace_retention, stop)
        log.info("started")
        progress.start()
    stop.wait()
    progress.stop()
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
    learners = _learners(settings, store)
    for learner in learners.values():
        counts = learn_all(store, learner)
        print("learned: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(FOYLE_RESTART_NOTE)
    if not args.follow:
        return 0
    from controller.runtime.controller import Controller
    from controller.runtime.follow import follow
    from controller.runtime.metrics import MetricsRegistry

    stop = threading.Event()
    _stop_on_signals(stop)
    registry = MetricsRegistry()
    controllers = {
        kind: Controller(
            f"learn-{kind.lower()}",
            learner.reconcile,
            registry,
            reconcile_many=learner.reconcile_many,
        )
        for kind, learner in learners.items()
    }
    threads = [
        threading.Thread(
            target=follow,
            args=(store, kind, learners[kind].source.label, controller, stop),
            name=f"follow-{kind}",
            daemon=True,
        )
        for kind, controller in controllers.items()
    ]
    for controller in controllers.values():
        controller.start()
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()
    for controller in controllers.values():
        controller.stop(timeout=8.0)
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    import json

    from controller.output import printable

    settings = settings_from(args, need_logs=False)
    if not settings.index_path.exists():
        raise CommandError(
            f"no example index at {settings.index_path}: run `foylectl run` or `foylectl learn` first"
        )
    hits = _index(settings).search(args.text, k=args.k)
    results = [(name, score, json.loads(example)) for name, score, example in hits]
    if args.output == "json":
        print(json.dumps([{"name": n, "score": s, "example": e} for n, s, e in results], indent=2))
        return 0
    if not results:
        print("no examples found")
    for rank, (name, score, example) in enumerate(results, 1):
        answer = (example.get("spec", {}).get("answer") or [{}])[0].get("contents", "")
        print(f"{rank}. {name}  score={score:.3f}")
        print("   answer: " + printable(answer.strip()).replace("\n", "\n           "))
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from controller.operator import run_operator

    if args.kubeconfig:
        # kopf's login and the kubernetes client both honour $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).expanduser())
    from controller.store.kube import load_api_client

    load_api_client(
        os.environ.get("KUBECONFIG") if args.kubeconfig else None
    )  # no configuration: one line now, not kopf's retry loop
    settings = Settings(state_dir=state_dir_of(args), store="kube", namespace=args.namespace)
    if args.training_dir:
        settings.training_dirs = [Path(d).expanduser() for d in args.training_dir]
    return run_operator(
        settings, standalone=args.standalone, peering=args.peering, liveness=args.liveness
    )
