"""`foylectl`: argument parsing only; the work is in controller.cli.app.

Start-up stays fast for `foylectl get` (typed many times): heavy libraries
(kopf, kubernetes, watchdog, prometheus) are imported by the commands that
need them, never here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from controller.cli.output import output_format
from controller.errors import CommandError, UsageError
from controller.settings import default

DESCRIPTION = """\
Continuous log processing and learning for Foyle and RunMe.

foylectl watches Foyle's and RunMe's log files and keeps Traces, BlockLogs,
LogFiles and Examples converged to their contents, in an embedded SQLite store
(default) or as Kubernetes custom resources.

Common use:
  foylectl run                      watch the default log dirs, keep the store current
  foylectl get blocklogs -w         follow block logs from another terminal
  foylectl analyze --logs DIR       process every log once and exit
  foylectl examples search "TEXT"   the learned examples nearest to TEXT
"""


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def listen_addr(text: str) -> str:
    from controller.runtime.addr import parse_addr

    parse_addr(text)
    return text


listen_addr.__name__ = "HOST:PORT"
positive_int.__name__ = "positive integer"  # argparse names the type in its error
positive_float.__name__ = "positive number"


def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        help="where the store, journal and index live"
        " (default: $FOYLECTL_STATE_DIR or ~/.foyle/controller)",
    )


def _store_args(p: argparse.ArgumentParser) -> None:
    _state_args(p)
    p.add_argument(
        "--store",
        choices=("sqlite", "kube"),
        default="sqlite",
        help="sqlite: the embedded store in the state dir (default); kube: custom resources",
    )
    p.add_argument(
        "-n",
        "--namespace",
        help="namespace for --store kube (default foyle); the sqlite store has none",
    )
    p.add_argument(
        "--kubeconfig", help="kubeconfig for --store kube (default: in-cluster or ~/.kube/config)"
    )
    p.add_argument(
        "--kube-qps",
        type=positive_float,
        help="--store kube: API requests per second this client sends at most; the server's"
        " Priority and Fairness answers 429 above its share, and the request is sent again"
        f" after Retry-After (default {default('kube_qps'):g})",
    )
    p.add_argument(
        "--kube-burst",
        type=positive_int,
        help="--store kube: requests sent at once before --kube-qps paces them"
        f" (default {default('kube_burst')})",
    )


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--logs",
        type=Path,
        action="append",
        metavar="DIR",
        help="a log directory, searched recursively for *.json and *.jsonl (repeatable;"
        " default: ~/.foyle/logs/raw and RunMe's log dir)",
    )
    p.add_argument(
        "--max-line-bytes",
        type=positive_int,
        help="longer lines are skipped and counted as bad"
        f" (default {default('max_line_bytes') >> 20} MiB)",
    )
    p.add_argument(
        "--follow-symlinks-anywhere",
        action="store_true",
        help="read log files through symlinks that point out of the log directories"
        " (default: such links are reported and skipped)",
    )


def _learn_args(p: argparse.ArgumentParser) -> None:
    _training_args(p)
    _embedder_args(p)
    p.add_argument(  # issue 11
        "--learn-from",
        choices=("blocklogs", "sessions", "both"),
        help="what Examples are learned from: blocklogs (Foyle <= v0.0.36: fixed suggestions),"
        " sessions (Foyle >= v0.0.37: every successful execution, example id = context id),"
        " or both (default: what any Foyle version learns)",
    )


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--training-dir",
        type=Path,
        action="append",
        help="where Examples are written for Foyle (repeatable; default: Foyle's"
        " learner.exampleDirs, else ~/.foyle/training)",
    )


def _embedder_args(p: argparse.ArgumentParser) -> None:
    # issue 11: Foyle's own config is the default source of keys, URLs and directories.
    p.add_argument(
        "--foyle-config",
        type=Path,
        metavar="FILE",
        help="Foyle's config file, read for its key file, base URL, training and log dirs"
        " (default ~/.foyle/config.yaml; a missing file is fine; flags override it)",
    )
    p.add_argument(
        "--openai-api-key-file",
        type=Path,
        help="embed with OpenAI text-embedding-3-small, as Foyle does (default: Foyle's"
        " openai.apiKeyFile; without any, local BM25 ranking and files Foyle cannot load)",
    )
    p.add_argument(
        "--openai-base-url",
        metavar="URL",
        help="an OpenAI-compatible API base URL (default: Foyle's openai.baseURL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foylectl",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the program's version number and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "analyze", help="process every complete line of every log file once, then exit"
    )
    _log_args(p)
    _store_args(p)
    p.add_argument("--no-learn", action="store_true", help="do not derive Examples")
    _learn_args(p)
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")

    p = sub.add_parser("run", help="watch the log directories and keep everything converged")
    _log_args(p)
    _store_args(p)
    p.add_argument(
        "--poll",
        action="store_true",
        help="poll for changes instead of inotify (network filesystems)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        help=f"worker threads per queue (default {default('workers')})",
    )
    p.add_argument(
        "--metrics-addr",
        type=listen_addr,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here; :PORT alone binds 127.0.0.1 only,"
        " 0.0.0.0:PORT every interface",
    )
    p.add_argument(
        "--rescan-interval",
        type=positive_float,
        help="seconds between full rescans, the backstop for lost events"
        f" (default {default('rescan_interval'):g})",
    )
    p.add_argument(
        "--rotate-wait",
        type=positive_float,
        help="seconds a rotated or deleted log file is still read after its writer's last"
        " line, and a last line without its newline waits for more"
        f" (default {default('rotate_wait'):g})",
    )
    p.add_argument(
        "--abandon-after",
        type=positive_float,
        help="seconds without a line before an unfinished trace is Abandoned"
        f" (default {default('abandon_after'):g})",
    )
    p.add_argument(
        "--trace-retention",
        type=non_negative_float,
        metavar="SECONDS",
        help="--store kube: delete Traces finished this long ago, their contributions kept "
        f"in their BlockLogs and Sessions (default {default('trace_retention'):g}; 0: keep them)",
    )
    p.add_argument(
        "--no-learn", action="store_true", help="do not run the learning controller in this process"
    )
    _learn_args(p)
    p.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format on stderr"
    )
    p.add_argument(
        "--node", help="this node's name, for LogFiles in a cluster (default: host name)"
    )

    p = sub.add_parser("get", help="list resources (like kubectl get)")
    p.add_argument(
        "resources",
        nargs="*",
        metavar="KIND[,KIND] [NAME...] | KIND/NAME...",
        help="logfiles (lf), traces (tr), blocklogs (bl), sessions (se), examples (ex), or e.g."
        " blocklog.foyle.io/NAME as -o name prints it; a NAME may be a raw id,"
        " a LogFile's NAME its path",
    )
    p.add_argument(
        "-o",
        "--output",
        type=output_format,
        default="table",
        help="table, wide, json, yaml, name, jsonpath=TEMPLATE, custom-columns=HEADER:PATH,...",
    )
    p.add_argument(
        "-w", "--watch", action="store_true", help="after listing, print changes as they happen"
    )
    p.add_argument(
        "-l", "--selector", help="label selector: k=v, k!=v, k, !k, k in (a,b), k notin (a,b)"
    )
    p.add_argument("--no-headers", action="store_true", help="no header row in table output")
    p.add_argument("--show-labels", action="store_true", help="a LABELS column")
    p.add_argument("--sort-by", metavar="JSONPATH", help="sort by this field, e.g. .spec.startTime")
    _store_args(p)

    describe_help = "a readable view of resources; a BlockLog's or Session's life as a timeline"
    p = sub.add_parser("describe", help=describe_help, description=describe_help)
    p.add_argument(
        "resources",
        nargs="+",
        metavar="KIND [NAME...] | KIND/NAME...",
        help="logfiles (lf), traces (tr), blocklogs (bl), sessions (se), examples (ex), as"
        " `get` reads them; without a NAME, every resource of the kind",
    )
    _store_args(p)

    learn_help = (
        "turn every learnable BlockLog and Session into an Example, then exit (or --follow)"
    )
    p = sub.add_parser("learn", help=learn_help, description=learn_help)
    _store_args(p)
    p.add_argument("--follow", action="store_true", help="keep following the store's changes")
    _learn_args(p)

    p = sub.add_parser("examples", help="work with learned examples")
    ex = p.add_subparsers(dest="examples_command", metavar="SUBCOMMAND", required=True)
    s = ex.add_parser("search", help="the examples whose query is nearest to TEXT")
    s.add_argument("text", help="what to search for: words of a notebook cell (not empty)")
    s.add_argument("-k", type=positive_int, default=3, help="how many (default 3)")
    s.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _state_args(s)
    _embedder_args(s)

    p = sub.add_parser(
        "operator", help="run the in-cluster operator (kopf): the learning controller on CRDs"
    )
    p.add_argument("--namespace", default="foyle", help="the namespace it serves (default foyle)")
    p.add_argument(
        "--kubeconfig", help="kubeconfig outside a cluster (default: in-cluster, $KUBECONFIG)"
    )
    p.add_argument("--standalone", action="store_true", help="no peering with other operators")
    p.add_argument("--peering", default=None, help="kopf peering object name")
    p.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log every handled object (default: a summary)"
    )
    p.set_defaults(store="kube")
    _state_args(p)
    _learn_args(p)

    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=("bash", "zsh"))
    return parser


class _VersionAction(argparse.Action):
    """argparse's "version" action, the version looked up only when asked for: reading the
    installed package's metadata costs ~20 ms, which every other command paid at start."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> NoReturn:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("foyle-controller")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from controller.cli import app
    from controller.store.base import StoreUnavailable

    try:
        return app.dispatch(args, parser)
    except UsageError as err:
        print(f"foylectl: error: {err}", file=sys.stderr)
        return 2
    except (CommandError, StoreUnavailable) as err:
        print(f"foylectl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug or an unforeseen failure: one line, the trace on request
        if os.environ.get("FOYLECTL_DEBUG"):
            raise
        print(
            f"foylectl: error: {type(err).__name__}: {err} (FOYLECTL_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return 1
