"""Side by side with another analyzer on the same corpus (issue 23: Foyle's own).

The peer is any command, given with `{logs}` (the corpus: `foyle/` and `runme/`
under it) and `{state}` (a new, empty directory for its state) in it; it must
exit 0 once it has caught up. Neither Foyle's code nor a way to build it
belongs in this repository: the peer is built outside it (docs/performance.md
says how it was wired), and only its command line comes here.

Each side runs as a whole process, peer then foylectl, `cfg.peer_runs` times in turn, with
its state on tmpfs (/dev/shm: no fsync cost, the CPU-bound comparison) and then
in the work dir (the normal disk). Wall seconds give lines/s; user + system
seconds of the process give CPU seconds. The median of each side is reported, and
`vs_peer_<place>`, foylectl's lines/s over the peer's.
"""

from __future__ import annotations

import shlex
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import REPO, Config, flags_text, foylectl, learn_flags, timed
from bench_shapes import make_corpus

TMPFS = Path("/dev/shm")


def places(cfg: Config) -> list[tuple[str, Path]]:
    """Where the state dirs go: tmpfs when this machine has one, and the work dir."""
    found = [("tmpfs", TMPFS)] if TMPFS.is_dir() else []
    return [*found, ("disk", cfg.workdir)]


def measure_peer(cfg: Config, result: dict[str, Any]) -> None:
    """The peer's (`cfg.peer`) and foylectl's lines/s and CPU s on the --size corpus,
    interleaved."""
    command = cfg.peer
    assert command is not None, "the peer figure needs --peer"
    logs, stats = make_corpus(cfg, "size", cfg.size, seed=1)
    result["corpus_lines"], result["corpus_bytes"] = stats.lines, stats.bytes
    result["flags"]["peer"] = command
    result["flags"]["vs_peer"] = flags_text(cfg)
    for place, parent in places(cfg):
        peer: list[tuple[float, float]] = []
        ours: list[tuple[float, float]] = []
        for run in range(cfg.peer_runs):
            name = f"{cfg.workdir.name}-{{}}-{run}"  # under /dev/shm too, which is shared
            peer_argv = _peer_argv(command, logs)
            peer.append(_timed_in(parent / name.format("peer"), peer_argv, cfg, None))
            ours_argv = _ours_argv(logs, learn_flags(cfg, f"vs-peer-{place}-{run}"))
            ours.append(_timed_in(parent / name.format("ours"), ours_argv, cfg, REPO))
        for side, figures in (("peer", peer), ("ours", ours)):
            wall = statistics.median(w for w, _ in figures)
            result[f"{side}_{place}_lines_per_s"] = stats.lines / wall
            result[f"{side}_{place}_cpu_s"] = statistics.median(c for _, c in figures)
        result[f"vs_peer_{place}"] = (
            result[f"ours_{place}_lines_per_s"] / result[f"peer_{place}_lines_per_s"]
        )


def _peer_argv(command: str, logs: Path) -> Callable[[Path], list[str]]:
    return lambda state: shlex.split(command.format(logs=logs, state=state))


def _ours_argv(logs: Path, flags: list[str]) -> Callable[[Path], list[str]]:
    return lambda state: foylectl(
        "analyze", "--logs", logs, "--state-dir", state, *flags, "--no-progress"
    )


def _timed_in(
    state: Path, argv: Callable[[Path], list[str]], cfg: Config, cwd: Path | None
) -> tuple[float, float]:
    """`timed` of the command `argv` makes for a new, empty `state` dir, removed after."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    try:
        command = argv(state)
        return timed(command, cfg, cwd, command[0])
    finally:
        shutil.rmtree(state, ignore_errors=True)
