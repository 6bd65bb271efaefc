"""Figures of whole `foylectl` processes on corpora of a given shape: the floor and
`analyze` on the main corpus, `get blocklog(s)` on a store of many BlockLogs, and
issue 13's fan-in (one block executed N times) and fan-out (one suggestion, N blocks)."""

from __future__ import annotations

import os
import random
import select
import statistics
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
from bench_common import REPO, Config, flags_text, foylectl, learn_flags, timed_foylectl
from gen_logs import GenStats, fan_in_lines, fan_out_lines, generate, write_lines

T0 = 1_713_300_000.0  # line times of the fan-in and fan-out corpora
SAMPLE_BYTES = 2 << 20  # corpus generated to learn BlockLogs per byte
GET_REPEATS, LIST_REPEATS = 5, 3
SHORT_RUN_S = 10.0


def make_corpus(cfg: Config, name: str, size: int, seed: int) -> tuple[Path, GenStats]:
    out = cfg.workdir / name
    start = time.perf_counter()
    stats = generate(out, size_bytes=size, seed=seed, foyle_files=3, runme_files=3, bad_lines=3)
    elapsed = time.perf_counter() - start
    print(
        f"corpus {name}: {stats.bytes / 1e6:.1f} MB, {stats.lines} lines in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return out, stats


def floor_lines_per_s(stats: GenStats) -> float:
    """Read and parse every line with orjson: the least work any design must do."""
    lines = 0
    start = time.perf_counter()
    for path in stats.files:
        with open(path, "rb") as f:
            for line in f:
                with suppress(orjson.JSONDecodeError):
                    orjson.loads(line)
                lines += 1
    return lines / (time.perf_counter() - start)


def analyze_s(cfg: Config, logs: Path, name: str, flags: list[str]) -> float:
    """Seconds of `foylectl analyze` of `logs` into a new state dir `state-<name>`."""
    state = cfg.workdir / f"state-{name}"
    return timed_foylectl(
        cfg, "analyze", "--logs", logs, "--state-dir", state, *flags, "--no-progress"
    )


def steady_analyze_s(cfg: Config, logs: Path, name: str, flags: list[str]) -> float:
    """analyze_s, as the median of 3 runs when one takes under SHORT_RUN_S: the short
    fan-in runs are where start-up noise and the machine's load weigh most."""
    times = [analyze_s(cfg, logs, name, flags)]
    if times[0] < SHORT_RUN_S:
        times += [analyze_s(cfg, logs, f"{name}-{i}", flags) for i in (2, 3)]
    return statistics.median(times)


def blocklog_corpus(cfg: Config) -> tuple[Path, GenStats]:
    """A main-shaped corpus with at least cfg.blocklogs generated blocks (one BlockLog each),
    its size found from the blocks per byte of a small sample of the same seed."""
    sample = generate(cfg.workdir / "blocklog-sample", size_bytes=SAMPLE_BYTES, seed=5)
    per_byte = sample.generated_blocks / sample.bytes
    size = int(cfg.blocklogs / per_byte * 1.02)
    while True:
        logs, stats = make_corpus(cfg, f"blocklogs-{size}", size, seed=5)
        if stats.generated_blocks >= cfg.blocklogs:
            return logs, stats
        size = int(size * 1.05 * cfg.blocklogs / max(stats.generated_blocks, 1))


def read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> list[bytes]:
    """The first `count` lines `proc` writes to stdout, as soon as they arrive."""
    assert proc.stdout is not None
    fd, data, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {count} output lines within {timeout:.0f}s")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break  # the process ended first
            data += chunk
    return data.split(b"\n")[:count]


def first_row_ms(cfg: Config, state: Path) -> float:
    """Milliseconds from starting `foylectl get blocklogs` to its first row (after the header)."""
    start = time.perf_counter()
    cmd = foylectl("get", "blocklogs", "--state-dir", state)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = read_lines(proc, 2, cfg.timeout)
        elapsed = time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()
    if len(lines) < 2 or not lines[1]:
        raise RuntimeError("foylectl get blocklogs printed no row")
    return elapsed * 1000


def blocklog_names(cfg: Config, state: Path) -> list[str]:
    proc = subprocess.run(
        foylectl("get", "blocklogs", "-o", "name", "--state-dir", state),
        cwd=REPO,
        capture_output=True,
        timeout=cfg.timeout,
        check=True,
    )
    return [line.rsplit("/", 1)[-1] for line in proc.stdout.decode().split()]


def measure_blocklogs(cfg: Config, result: dict[str, Any]) -> None:
    """`get blocklog NAME` (median of 5) and the first row of `get blocklogs` (median of 3)
    on a store built by `analyze` (learning off: it makes no BlockLogs) to hold cfg.blocklogs."""
    logs, stats = blocklog_corpus(cfg)
    flags = learn_flags(cfg, "blocklogs", learn=False)
    result["flags"]["blocklog_build"] = flags_text(cfg, learn=False)
    result["blocklog_corpus_bytes"] = stats.bytes
    result["blocklog_build_s"] = analyze_s(cfg, logs, "blocklogs", flags)
    state = cfg.workdir / "state-blocklogs"
    names = blocklog_names(cfg, state)
    result["blocklogs_reached"] = len(names)
    name = names[len(names) // 2]
    gets = [
        timed_foylectl(cfg, "get", "blocklog", name, "--state-dir", state)
        for _ in range(GET_REPEATS)
    ]
    result["get_blocklog_ms"] = statistics.median(gets) * 1000
    firsts = [first_row_ms(cfg, state) for _ in range(LIST_REPEATS)]
    result["list_blocklogs_first_row_ms"] = statistics.median(firsts)


def measure_fanin(cfg: Config, result: dict[str, Any]) -> None:
    """Seconds per 1,000 executions of one block at each size: `analyze` time less that of
    the same Generate trace with no executions (process start-up and the suggestion)."""
    flags = learn_flags(cfg, "fanin")
    result["flags"]["fanin"] = flags_text(cfg)
    raw: dict[str, float] = {}
    per_1000: dict[str, float] = {}
    result |= {"fanin_analyze_s": raw, "fanin_s_per_1000": per_1000}
    for executions in [0, *cfg.fanin]:
        logs = cfg.workdir / f"fanin-{executions}"
        write_lines(logs, fan_in_lines(random.Random(13), T0, executions), T0)
        raw[str(executions)] = steady_analyze_s(cfg, logs, f"fanin-{executions}", flags)
        if executions:
            per_1000[str(executions)] = (raw[str(executions)] - raw["0"]) * 1000 / executions
    low, high = str(min(cfg.fanin)), str(max(cfg.fanin))
    if low != high:
        result["fanin_ratio"] = per_1000[high] / per_1000[low]


def measure_fanout(cfg: Config, result: dict[str, Any]) -> None:
    """Seconds of `analyze` on one Generate trace whose response has cfg.fanout blocks."""
    flags = learn_flags(cfg, "fanout")
    result["flags"]["fanout"] = flags_text(cfg)
    logs = cfg.workdir / "fanout"
    write_lines(logs, fan_out_lines(random.Random(17), T0, cfg.fanout), T0)
    result[f"fanout_{cfg.fanout}_blocks_s"] = analyze_s(cfg, logs, "fanout", flags)
