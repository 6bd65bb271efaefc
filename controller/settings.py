"""One settings object for the whole controller, instead of long argument chains."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.analyze.traces import ABANDON_AFTER_SECONDS
from controller.logs.framing import MAX_LINE_BYTES
from controller.logs.transition import ROTATE_WAIT

if TYPE_CHECKING:
    from controller.foyleconfig import Provider

ENV_STATE_DIR = "FOYLECTL_STATE_DIR"
# On SIGTERM in-flight work gets this long, then is left as a SIGKILL leaves it (the journal's
# watermarks and level-triggered reconciles make that safe): a pod ends within 5 s.
STOP_SECONDS = 2.5


def default_state_dir() -> Path:
    return Path(os.environ.get(ENV_STATE_DIR) or Path.home() / ".foyle" / "controller")


def default_log_dirs(foyle_log_dirs: Sequence[Path] = ()) -> list[Path]:
    """Foyle's raw logs and RunMe's log directory (per platform), as Foyle itself uses them.

    `foyle_log_dirs` are the ones Foyle's config names (its raw log dir and
    `learner.logDirs`); RunMe's default directory is watched as well.
    """
    return list(default_log_writers(foyle_log_dirs))


def default_log_writers(foyle_log_dirs: Sequence[Path] = ()) -> dict[Path, str]:
    """Each default log directory and the program that writes there."""
    home = Path.home()
    runme = (
        home / "Library" / "Application Support" / "runme" / "logs"
        if platform.system() == "Darwin"
        else home / ".config" / "runme" / "logs"
    )
    writers = dict.fromkeys(foyle_log_dirs or [home / ".foyle" / "logs" / "raw"], "Foyle")
    writers.setdefault(runme, "RunMe")
    return writers


def default_training_dirs() -> list[Path]:
    return [Path.home() / ".foyle" / "training"]


@dataclass
class Settings:
    log_dirs: list[Path] = field(default_factory=default_log_dirs)
    state_dir: Path = field(default_factory=default_state_dir)
    store: str = "sqlite"  # or "kube"
    namespace: str = "foyle"
    node: str = field(default_factory=socket.gethostname)
    poll: bool = False
    workers: int = 2
    rescan_interval: float = 30.0
    abandon_after: float = ABANDON_AFTER_SECONDS
    # --store kube: a Trace finished this long ago is settled into its BlockLogs and
    # Session and deleted, as Kubernetes keeps Events for an hour (0: kept for ever)
    trace_retention: float = 3600.0
    max_line_bytes: int = MAX_LINE_BYTES
    rotate_wait: float = ROTATE_WAIT  # seconds a rotated file's writer is quiet before let go
    symlinks_anywhere: bool = False  # follow symlinks out of the log dirs (default: not)
    metrics_addr: str | None = None
    learn: bool = True
    training_dirs: list[Path] = field(default_factory=default_training_dirs)
    embedding_provider: Provider | None = None  # Foyle's config's, or --openai-* (issue 11)
    # Foyle <= v0.0.36 learned from BlockLogs; since v0.0.37 ("Learn from all executed
    # cells") from Sessions. Both kinds of file load in any Foyle, so both is the default:
    # a current Foyle user gets what Foyle itself learns, an older one loses nothing.
    learn_from: str = "both"  # blocklogs, sessions or both
    kube_qps: float = 200.0
    kube_burst: int = 400

    def apply_flags(self, flags: Mapping[str, Any]) -> None:
        """Take each flag given on the command line (not None or False) onto its field.

        Flags default to None (or False), so a default lives on this dataclass only.
        """
        for flag, name in FLAG_FIELDS.items():
            value = flags.get(flag)
            if value is not None and value is not False:
                setattr(self, name, value)
        if flags.get("no_learn"):
            self.learn = False

    @property
    def store_path(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def index_path(self) -> Path:
        return self.state_dir / "examples-index.db"


# Command-line flags (argparse dests) that set one Settings field each.
FLAG_FIELDS = {
    "poll": "poll",
    "workers": "workers",
    "metrics_addr": "metrics_addr",
    "rescan_interval": "rescan_interval",
    "abandon_after": "abandon_after",
    "max_line_bytes": "max_line_bytes",
    "rotate_wait": "rotate_wait",
    "follow_symlinks_anywhere": "symlinks_anywhere",
    "node": "node",
    "learn_from": "learn_from",
    "trace_retention": "trace_retention",
    "kube_qps": "kube_qps",
    "kube_burst": "kube_burst",
}


def default(name: str) -> Any:
    """A Settings field's default, for help texts (the dataclass is the one place it is set)."""
    return Settings.__dataclass_fields__[name].default
