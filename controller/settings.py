"""One settings object for the whole controller, instead of long argument chains."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.foyleconfig import Provider

ENV_STATE_DIR = "FOYLECTL_STATE_DIR"


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
    abandon_after: float = 600.0
    max_line_bytes: int = 16 << 20
    symlinks_anywhere: bool = False  # follow symlinks out of the log dirs (default: not)
    metrics_addr: str | None = None
    learn: bool = True
    training_dirs: list[Path] = field(default_factory=default_training_dirs)
    embedding_provider: Provider | None = None  # from Foyle's config (issue 11)
    log_format: str = "text"
    kube_qps: float = 50.0
    kube_burst: int = 100

    @property
    def store_path(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def index_path(self) -> Path:
        return self.state_dir / "examples-index.db"
