"""Fault injection for `foylectl run`: try to lose, duplicate or corrupt data (issue 7).

Each scenario drives the real controller as a subprocess (tests/cli_helpers.py)
while this process writes realistic log lines (hack/gen_logs.py), injects one
kind of fault, lets the controller catch up, then checks three things:

* every line is accounted for: per file, the LogFile status counts exactly the
  lines in the file (fewer = lost, more = duplicated), and `badLines` exactly
  the bad ones (LogFile `lines` counts good and bad lines alike);
* the Traces and BlockLogs equal what `foylectl analyze` makes of the same
  bytes in a fresh state dir;
* both SQLite files pass `PRAGMA integrity_check` where the scenario kills.

A violated check raises AssertionError; a scenario returns a Report with its
figures. tests/test_reliability*.py run them small; this CLI runs them long:

    python hack/chaos.py kill --iterations 1000
    python hack/chaos.py idle-files --files 10000
    python hack/chaos.py all
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _path in (str(REPO), str(REPO / "hack")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from gen_logs import build_session  # noqa: E402

from controller.store.journal import Journal  # noqa: E402
from tests.cli_helpers import (  # noqa: E402
    RunningController,
    comparable,
    foylectl,
    free_port,
    get_json,
    wait_for,
)
from tests.cli_helpers import running as controller  # noqa: E402
from tests.test_invariant import caught_up  # noqa: E402

T0 = 1_717_236_000.0
CATCH_UP = float(
    os.environ.get("CHAOS_CATCH_UP", 120)
)  # seconds a controller may take to catch up before a scenario fails


@dataclass
class Report:
    scenario: str
    lines_written: int = 0  # lines checked, summed over the checks of a scenario
    lines_lost: int = 0
    lines_duplicated: int = 0
    bad_lines: int = 0
    restarts: int = 0
    figures: dict[str, float] = field(default_factory=dict)


# -- writing ---------------------------------------------------------------------------


class Lines:
    """An endless supply of realistic lines: session after session from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._t = T0
        self._pending: list[bytes] = []

    def next(self) -> bytes:
        if not self._pending:
            session = build_session(self.rng, self._t)
            self._t = session.end_time + self.rng.uniform(1, 30)
            self._pending = [line for _, line in reversed(session.lines)]
        return self._pending.pop()

    def take(self, n: int) -> list[bytes]:
        return [self.next() for _ in range(n)]


class Writer(threading.Thread):
    """Appends lines to several files until stopped, often a line in several small writes.

    Split writes leave partial last lines for the controller to meet, and many
    small appends mean many small commits: kills land mid-read and mid-commit.
    """

    def __init__(
        self, files: list[Path], seed: int, pace: float = 0.005, limit: int | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.files, self.pace, self.limit = files, pace, limit
        self.lines = Lines(seed)
        self.written = 0
        self._halt = threading.Event()
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def run(self) -> None:
        rng = random.Random(self.lines.rng.random())
        while not self._halt.is_set() and (self.limit is None or self.written < self.limit):
            line = self.lines.next()
            with open(rng.choice(self.files), "ab") as f:
                pieces = sorted(rng.sample(range(1, len(line)), k=min(3, len(line) - 1)))
                for begin, end in zip([0, *pieces], [*pieces, len(line)], strict=True):
                    f.write(line[begin:end])
                    f.flush()
            self.written += 1
            self._halt.wait(self.pace)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def write_lines(path: Path, lines: list[bytes], mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write(b"".join(lines))


# -- checking --------------------------------------------------------------------------


def logfile_counts(state: Path) -> dict[str, tuple[int, int]]:
    """(lines, badLines) per path, summed over every LogFile that names it."""
    counts: dict[str, tuple[int, int]] = {}
    for obj in get_json(state, "logfiles"):
        lines, bad = counts.get(obj["spec"]["path"], (0, 0))
        status = obj.get("status", {})
        counts[obj["spec"]["path"]] = (lines + status.get("lines", 0), bad + status["badLines"])
    return counts


def newline_lines(logs: Path) -> dict[str, tuple[int, int]]:
    """(lines, 0) for every log file under `logs`: generated files hold only good lines."""
    return {str(p): (p.read_bytes().count(b"\n"), 0) for p in sorted(logs.rglob("*.json*"))}


def account(
    report: Report, state: Path, expected: dict[str, tuple[int, int]], timeout: float = 15
) -> None:
    """Every line ingested once or counted bad: LogFile statuses equal `expected`.

    Statuses are published at most once a second, so this waits for them; at
    the deadline the difference is recorded as lost or duplicated lines.
    """
    got: dict[str, tuple[int, int]] = {}

    def settled() -> bool:
        nonlocal got
        got = logfile_counts(state)
        return got == expected

    with contextlib.suppress(AssertionError):
        wait_for(settled, timeout, "LogFile statuses", interval=0.2)
    report.lines_written += sum(lines for lines, _ in expected.values())
    report.bad_lines += sum(bad for _, bad in got.values())
    for path, (want, want_bad) in expected.items():
        have, have_bad = got.get(path, (0, 0))
        report.lines_lost += max(0, want - have)
        report.lines_duplicated += max(0, have - want)
        assert have_bad == want_bad, f"{path}: {have_bad} bad lines, expected {want_bad}"
    differ = {p: (got.get(p), want) for p, want in expected.items() if got.get(p) != want}
    assert not report.lines_lost and not report.lines_duplicated, (
        f"lines lost {report.lines_lost}, duplicated {report.lines_duplicated};"
        f" (LogFile, file) (lines, bad) per path: {dict(list(differ.items())[:5])}"
    )
    assert set(got) <= set(expected), f"LogFiles for unknown paths {set(got) - set(expected)}"


def assert_intact(state: Path) -> None:
    """PRAGMA integrity_check says ok for the journal and the store."""
    for name in ("journal.db", "store.db"):
        path = state / name
        if not path.exists():
            continue
        conn = sqlite3.connect(path, timeout=30)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert result == [("ok",)], f"{path}: {result}"


def assert_matches_analyze(logs: Path, state: Path, work: Path, *analyze_args: str) -> None:
    """The store's Traces and BlockLogs equal `foylectl analyze` of the same bytes.

    Called once the controller has stopped, so the files hold the bytes it read.
    """
    fresh = work / "analyze-state"
    shutil.rmtree(fresh, ignore_errors=True)
    foylectl(
        "analyze",
        "--logs",
        logs,
        "--state-dir",
        fresh,
        "--no-learn",
        "--no-progress",
        *analyze_args,
    )
    for kind in ("traces", "blocklogs"):
        got, want = comparable(get_json(state, kind)), comparable(get_json(fresh, kind))
        assert got.keys() == want.keys(), (
            f"{kind}: missing {sorted(want.keys() - got.keys())[:5]},"
            f" extra {sorted(got.keys() - want.keys())[:5]}"
        )
        for name in want:
            assert got[name] == want[name], f"{kind}/{name} differs from analyze"


def wait_caught_up(
    run: RunningController | None, state: Path, logs: Path, timeout: float = CATCH_UP
) -> None:
    """Until `run` has started (its resync queued what was left) and has read everything."""
    if run is not None:
        run.wait_started()
    wait_for(lambda: caught_up(state, logs), timeout, "the controller to catch up", interval=0.1)


def watermark(state: Path, path: Path) -> int:
    journal = Journal(state / "journal.db")
    try:
        row = journal.active_file_at(str(path))
        return row.watermark if row else -1
    finally:
        journal.close()


def finish(run: RunningController, report: Report) -> None:
    """SIGTERM; the controller must exit 0 within 10 s."""
    started = time.monotonic()
    code = run.terminate(timeout=10)
    report.figures["sigterm_exit_s"] = round(time.monotonic() - started, 2)
    assert code == 0, f"exit {code}:\n{run.output()[-3000:]}"


# -- 1. SIGKILL at random moments ------------------------------------------------------


def kill(work: Path, iterations: int = 20, seed: int = 1) -> Report:
    """Kill -9 at random moments while a writer appends; converge with nothing lost.

    The writer stops after 100 lines per kill, so a long run's backlog (and each
    start-up's resync) stays the size of a day's logs rather than growing unbounded.
    """
    report = Report("kill")
    rng = random.Random(seed)
    logs, state = work / "logs", work / "state"
    files = [logs / "foyle" / "foyle.logs.json", logs / "runme" / "a.json", logs / "b.jsonl"]
    writer = Writer(files, seed, limit=100 * iterations)
    writer.start()
    with controller(logs, state) as run:
        try:
            for _ in range(iterations):
                run.wait_started()
                time.sleep(rng.uniform(0, 0.4))  # a random kill point, not synchronisation
                run.kill()
                report.restarts += 1
                assert_intact(state)
                run = RunningController(logs, state)
        finally:
            writer.stop()
        wait_caught_up(run, state, logs)
        account(report, state, newline_lines(logs))
        finish(run, report)
    assert_intact(state)
    assert_matches_analyze(logs, state, work)
    return report


# -- 6. a partial last line when killed ------------------------------------------------


def partial_line(work: Path, seed: int = 6) -> Report:
    """Killed while a last line is half written, or complete but without its newline."""
    report = Report("partial-line")
    logs, state = work / "logs", work / "state"
    lines = Lines(seed)
    half, whole = logs / "half.json", logs / "no-newline.json"
    cut_line, last = lines.next(), lines.next()
    head_half, head_whole = lines.take(20), lines.take(20)
    write_lines(half, [*head_half, cut_line[: len(cut_line) // 2]])
    write_lines(whole, [*head_whole, last.rstrip(b"\n")])
    complete_part = sum(map(len, head_half))
    with controller(logs, state) as run:
        run.wait_started()
        wait_for(
            lambda: (
                watermark(state, half) == complete_part
                and watermark(state, whole) == whole.stat().st_size
            ),
            30,
            "both files read up to their last line",
        )
        run.kill()
        report.restarts += 1
    write_lines(half, [cut_line[len(cut_line) // 2 :], *lines.take(10)])
    write_lines(whole, [b"\n", *lines.take(10)])
    with controller(logs, state) as run:
        wait_caught_up(run, state, logs)
        account(report, state, {str(half): (31, 0), str(whole): (31, 0)})
        finish(run, report)
    assert_matches_analyze(logs, state, work)
    return report


# -- 7. odd input ----------------------------------------------------------------------


def odd_input(work: Path, huge_line_mib: int = 0, seed: int = 7) -> Report:
    """NULs, invalid UTF-8, CRLF, BOM, empty lines, arrays and scalars, over-long lines.

    With `huge_line_mib`, also a line of that many MiB (over the default 16 MiB
    cap): skipped and counted, the file goes on, the controller's memory stays
    bounded (its peak RSS is reported).
    """
    report = Report("odd-input")
    logs, state = work / "logs", work / "state"
    good = Lines(seed)
    g = good.next
    cases: dict[str, tuple[list[bytes], int, int]] = {  # name: (content, lines, bad)
        "one-line-no-newline.json": ([g().rstrip(b"\n")], 1, 0),
        "nul-runs.json": ([g(), b"\0" * 4096 + b"\n", b"\0" * 10 + g(), g()], 4, 2),
        "invalid-utf8.json": ([g(), b'{"message": "caf\xe9 \xff\xfe"}\n', g()], 3, 1),
        "crlf.json": ([g().rstrip(b"\n") + b"\r\n" for _ in range(3)], 3, 0),
        "bom.json": ([b"\xef\xbb\xbf" + g(), g()], 2, 0),
        "empty-lines.json": ([g(), b"\n", b"   \n", g()], 4, 2),
        "arrays-and-scalars.json": ([b"[1, 2]\n", b"3\n", b'"x"\n', b"null\n", g()], 5, 4),
        # 2 MiB: over the 1 MiB cap of the short run, under the default 16 MiB of the long one
        "long-line.json": ([g(), b'{"pad": "' + b"x" * (2 << 20) + b'"}\n', g()], 3, 0),
    }
    if huge_line_mib:
        huge = b'{"pad": "' + b"y" * (huge_line_mib << 20) + b'"}\n'
        cases["huge-line.json"] = ([g(), huge, g()], 3, 1)
    else:
        cases["long-line.json"] = (cases["long-line.json"][0], 3, 1)
    expected = {}
    for name, (content, n, bad) in cases.items():
        write_lines(logs / name, content, "wb")
        expected[str(logs / name)] = (n, bad)
    cap = ("--max-line-bytes", str(1 << 20)) if not huge_line_mib else ()
    with controller(logs, state, *cap) as run:
        wait_caught_up(run, state, logs)
        report.figures["peak_rss_mib"] = peak_rss_mib(run.proc.pid)
        account(report, state, expected)
        finish(run, report)
    assert_matches_analyze(logs, state, work, *cap)  # the same cap on both sides
    return report


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


# -- 8. missed events ------------------------------------------------------------------


def overflow(work: Path, seed: int = 8) -> Report:
    """A real inotify queue overflow, no sysctl changed: the rescan finds what events lost.

    The controller is SIGSTOPped, so its inotify queue (fs.inotify.max_queued_events)
    fills with alternating appends to two files (distinct events never coalesce): twice
    the queue's limit, each line in small writes, so the events a reader may still take
    before the stop lands cannot save the queue and the lines stay few. A third file
    created after that has its events dropped. First with the rescan
    effectively off: a later line in another file is ingested but the third file
    is not (the loss is real). Then with a 1 s rescan: the third file is found.
    """
    report = Report("overflow")
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    lines = Lines(seed)
    line = lines.next()
    pieces = [line[i : i + 16] for i in range(0, len(line), 16)]  # an event per write
    repeats = limit // len(pieces) + 1  # per file: 2 files x repeats x pieces > 2 x limit
    for phase, rescan in (("lost", "3600"), ("caught-up", "1")):
        logs, state = work / phase / "logs", work / phase / "state"
        a, b, late = logs / "a.json", logs / "b.json", logs / "late.json"
        write_lines(a, [])
        write_lines(b, [])
        with controller(logs, state, "--rescan-interval", rescan) as run:
            run.wait_started()
            run.proc.send_signal(signal.SIGSTOP)
            with open(a, "ab", buffering=0) as fa, open(b, "ab", buffering=0) as fb:
                for _ in range(repeats):
                    for piece in pieces:
                        fa.write(piece)
                        fb.write(piece)
            write_lines(late, lines.take(5))
            run.proc.send_signal(signal.SIGCONT)
            wait_for(
                lambda r=run: "Inotify queue overflowed" in r.output(),
                30,
                "the overflow to be reported",
                detail=run.tail,
            )
            if phase == "lost":
                write_lines(a, [line])
                size = a.stat().st_size
                wait_for(
                    lambda s=state, p=a, n=size: watermark(s, p) == n,
                    60,
                    "the line written after the overflow",
                )
                assert watermark(state, late) == -1, "the lost file was found without a rescan"
                finish(run, report)
                continue
            wait_caught_up(run, state, logs)
            account(report, state, newline_lines(logs))
            finish(run, report)
    report.figures["events_queued_limit"] = limit
    return report


LIMIT_FILE = {  # the knob a user raises for the limit each scenario exhausts
    "max_inotify_instances": "fs/inotify/max_user_instances",
    "max_inotify_watches": "fs/inotify/max_user_watches",
}


def watch_limits(work: Path, seed: int = 18) -> Report:
    """No inotify instance left, or no watch left for a sub-directory (a user namespace
    keeps the limit to the controller): new lines are still found (polling, rescan)."""
    report = Report("watch-limits")
    lines = Lines(seed)
    for knob, value, errno_name in (
        ("max_inotify_instances", 0, "EMFILE"),
        ("max_inotify_watches", 1, "ENOSPC"),
    ):
        logs, state = work / knob / "logs", work / knob / "state"
        metrics = f"127.0.0.1:{free_port()}"
        (logs / "sub").mkdir(parents=True)
        out = work / knob / "run.log"
        with open(out, "wb") as log_file:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--user",
                    "--map-root-user",
                    "sh",
                    "-c",
                    f'echo {value} > /proc/sys/user/{knob} && exec "$@"',
                    "sh",
                    sys.executable,
                    "-m",
                    "controller",
                    "run",
                    "--logs",
                    str(logs),
                    "--state-dir",
                    str(state),
                    "--no-learn",
                    "--rescan-interval",
                    "1",
                    "--metrics-addr",
                    metrics,
                ],
                stdout=log_file,
                stderr=log_file,
                cwd=REPO,
            )
            try:
                wait_for(lambda o=out, p=proc: _started_or_exited(p, o), 30, "start-up")
                write_lines(logs / "sub" / "new.json", lines.take(7))
                wait_caught_up(None, state, logs, 30)
                account(report, state, newline_lines(logs))
                counted = f'watcher_inotify_fallbacks_total{{reason="{errno_name}"}} 1.0'
                assert counted in _scrape(metrics), f"no {counted} on /metrics"
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=10) == 0, out.read_text()
                # One warning that names the limit and the fix, not one per directory or event.
                warnings = [w for w in out.read_text().splitlines() if "polling for changes" in w]
                assert len(warnings) == 1 and LIMIT_FILE[knob] in warnings[0], warnings
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        report.figures[f"{knob}={value}_ok"] = 1
    return report


def _scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as response:
        return response.read().decode()


def _started_or_exited(proc: subprocess.Popen[bytes], out: Path) -> bool:
    """True once `run` says it started; an early exit fails at once with what it printed."""
    if proc.poll() is not None:
        raise AssertionError(f"run exited {proc.returncode} before starting:\n{out.read_text()}")
    return "foylectl: started" in out.read_text()


# -- 9. start-up race; many idle files and one hot one ---------------------------------


def startup_race(work: Path, seed: int = 9) -> Report:
    """Files created all through start-up (scan and watch set-up), no rescan to rescue them."""
    report = Report("startup-race")
    logs, state = work / "logs", work / "state"
    logs.mkdir(parents=True)
    lines = Lines(seed)
    stop = threading.Event()
    created = []

    def create() -> None:
        while not stop.is_set():
            path = logs / f"f{len(created):05d}.json"
            write_lines(path, lines.take(2))
            created.append(path)
            stop.wait(0.002)

    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    with controller(logs, state, "--rescan-interval", "3600") as run:
        try:
            run.wait_started()
            count = len(created)
            wait_for(lambda: len(created) > count + 50, 10, "files created after start-up")
        finally:
            stop.set()
            thread.join()
        wait_caught_up(run, state, logs, 60)
        account(report, state, newline_lines(logs))
        finish(run, report)
    report.figures["files"] = len(created)
    return report


def idle_files(work: Path, files: int = 10_000, hot_lines: int = 100, seed: int = 19) -> Report:
    """`files` idle files and one hot one: latency, CPU and open fds stay low."""
    report = Report("idle-files")
    logs, state = work / "logs", work / "state"
    lines = Lines(seed)
    idle_line = lines.next()
    for i in range(files):
        write_lines(logs / f"d{i % 100:02d}" / f"idle-{i:05d}.json", [idle_line])
    hot = logs / "hot.json"
    write_lines(hot, [])
    with controller(logs, state) as run:
        started = time.monotonic()
        wait_caught_up(run, state, logs, 300)
        report.figures["initial_catch_up_s"] = round(time.monotonic() - started, 1)
        journal = Journal(state / "journal.db")
        latencies = []
        cpu0, t0 = cpu_seconds(run.proc.pid), time.monotonic()
        for line in lines.take(hot_lines):
            write_lines(hot, [line])
            size, written = hot.stat().st_size, time.monotonic()
            wait_for(
                lambda s=size: getattr(journal.active_file_at(str(hot)), "watermark", -1) == s,
                10,
                "the hot line",
                interval=0.002,
                detail=run.tail,
            )
            latencies.append(time.monotonic() - written)
            time.sleep(0.02)  # the writer's pace, not synchronisation
        cpu = (cpu_seconds(run.proc.pid) - cpu0) / (time.monotonic() - t0)
        fds = len(os.listdir(f"/proc/{run.proc.pid}/fd"))
        journal.close()
        account(report, state, newline_lines(logs), timeout=30)
        finish(run, report)
    latencies.sort()
    report.figures.update(
        idle_files=files,
        hot_latency_median_ms=round(statistics.median(latencies) * 1000, 1),
        hot_latency_p95_ms=round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
        cpu_share_while_hot=round(cpu, 3),
        open_fds=fds,
    )
    return report


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 10. the state database ------------------------------------------------------------


def state_deleted(work: Path, seed: int = 10) -> Report:
    """The store, then the journal, deleted while stopped: rebuilt on start, said so."""
    report = Report("state-deleted")
    logs, state = work / "logs", work / "state"
    lines = Lines(seed)
    write_lines(logs / "foyle.json", lines.take(300))
    write_lines(logs / "runme" / "runme.json", lines.take(300))
    expected_log = {
        "store.db": "re-deriving",
        "journal.db": "reading every log file from the start to rebuild it",
    }
    for removed in (None, *expected_log):
        if removed:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state / removed}{suffix}").unlink(missing_ok=True)
        with controller(logs, state) as run:
            wait_caught_up(run, state, logs)
            account(report, state, newline_lines(logs))
            finish(run, report)
        if removed:
            report.restarts += 1
            assert expected_log[removed] in run.output(), run.output()
        assert_matches_analyze(logs, state, work)
    return report


def state_corrupted(work: Path, seed: int = 11) -> Report:
    """A damaged store or journal: exit 1, one line naming the file and the way out."""
    report = Report("state-corrupted")
    logs, state = work / "logs", work / "state"
    write_lines(logs / "a.json", Lines(seed).take(200))
    foylectl("analyze", "--logs", logs, "--state-dir", state, "--no-learn", "--no-progress")
    pristine = work / "pristine"
    shutil.copytree(state, pristine)
    damages: dict[str, Callable[[Path], None]] = {
        "header": lambda p: p.write_bytes(os.urandom(4096) + p.read_bytes()[4096:]),
        "schema-page": lambda p: overwrite(p, 100, os.urandom(3996)),
    }
    for name in ("store.db", "journal.db"):
        for damage, apply in damages.items():
            shutil.rmtree(state)
            shutil.copytree(pristine, state)
            apply(state / name)
            commands = [("run", "--logs", str(logs), "--no-learn")]
            if name == "store.db":
                commands.append(("get", "traces"))
            for command in commands:
                proc = foylectl(*command, "--state-dir", state, check=False, timeout=30)
                err = proc.stderr.strip()
                where = f"{name} {damage}, foylectl {command[0]}: {err!r}"
                assert proc.returncode == 1, where
                assert "Traceback" not in err, where
                last = err.splitlines()[-1]
                assert str(state / name) in last and "foylectl analyze" in last, where
                report.figures[f"{name}:{damage}:{command[0]}"] = proc.returncode
    return report


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def disk_full(work: Path, seed: int = 12) -> Report:
    """ENOSPC on the state dir (a 64 MiB tmpfs): no watermark past stored data, recovery."""
    report = Report("disk-full")
    logs, state = work / "logs", work / "state"
    state.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(state)], check=True)
    try:
        lines = Lines(seed)
        path = logs / "a.json"
        write_lines(path, lines.take(200))
        with controller(logs, state, "--rescan-interval", "1") as run:
            wait_caught_up(run, state, logs)
            filler = state / "filler"
            fill(filler)
            stored, seen = watermark(state, path), len(run.output())
            write_lines(path, lines.take(400))
            wait_for(lambda: "full" in run.output()[seen:], 30, "the disk-full error")
            assert "move it aside" not in run.output()[seen:], "a full disk is not damage"
            probes = [watermark(state, path) for _ in range(20)]
            report.figures["watermark_while_full_max"] = max(probes)
            report.figures["watermark_before_full"] = stored
            filler.unlink()
            started = time.monotonic()
            wait_caught_up(run, state, logs)
            report.figures["recovery_s"] = round(time.monotonic() - started, 1)
            account(report, state, newline_lines(logs))
            finish(run, report)
        assert_intact(state)
        assert_matches_analyze(logs, state, work)
    finally:
        if not os.environ.get("CHAOS_KEEP_MOUNT"):
            subprocess.run(["umount", "-l", str(state)], check=False)
    return report


def fill(path: Path) -> None:
    """Write `path` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def can_mount_tmpfs() -> bool:
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], check=False)
        if ok.returncode == 0:
            subprocess.run(["umount", d], check=False)
        return ok.returncode == 0


# -- 12. SIGTERM under load ------------------------------------------------------------


def sigterm(work: Path, backlog_lines: int = 30_000, seed: int = 13) -> Report:
    """SIGTERM with a backlog and a writer going: exit 0 in 10 s; a restart re-reads nothing."""
    report = Report("sigterm")
    logs, state = work / "logs", work / "state"
    lines = Lines(seed)
    for name in ("foyle.json", "runme.json"):
        write_lines(logs / name, lines.take(backlog_lines // 2))
    writer = Writer([logs / "foyle.json", logs / "live.json"], seed)
    writer.start()
    try:
        with controller(logs, state) as run:
            run.wait_started()
            wait_for(lambda: watermark(state, logs / "foyle.json") > 0, 30, "reading under way")
            finish(run, report)
    finally:
        writer.stop()
    with controller(logs, state) as run:
        wait_caught_up(run, state, logs)
        account(report, state, newline_lines(logs))
        finish(run, report)
    assert_matches_analyze(logs, state, work)
    report.restarts = 1
    return report


# -- CLI -------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[..., Report]] = {
    "kill": kill,
    "partial-line": partial_line,
    "odd-input": odd_input,
    "overflow": overflow,
    "watch-limits": watch_limits,
    "startup-race": startup_race,
    "idle-files": idle_files,
    "state-deleted": state_deleted,
    "state-corrupted": state_corrupted,
    "disk-full": disk_full,
    "sigterm": sigterm,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--iterations", type=int, default=1000, help="kills (kill)")
    parser.add_argument("--files", type=int, default=10_000, help="idle files (idle-files)")
    parser.add_argument("--huge-line-mib", type=int, default=100, help="odd-input's long line")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    extra = {
        "kill": {"iterations": args.iterations, "seed": args.seed},
        "idle-files": {"files": args.files},
        "odd-input": {"huge_line_mib": args.huge_line_mib},
    }
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    failed = 0
    for name in names:
        if name == "disk-full" and not can_mount_tmpfs():
            print(json.dumps({"scenario": name, "skipped": "cannot mount a tmpfs"}))
            continue
        work = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        started = time.monotonic()
        try:
            report = SCENARIOS[name](work, **extra.get(name, {}))
            result = {**asdict(report), "passed": True}
        except AssertionError as err:
            failed += 1
            result = {"scenario": name, "passed": False, "error": str(err)[:2000]}
        result["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(result), flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
