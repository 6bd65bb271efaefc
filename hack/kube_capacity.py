"""Kube mode at scale, measured on a real etcd + kube-apiserver (hack/control-plane.sh).

1. catch-up: `foylectl run --store kube` (default client rate limit, 50 qps burst
   100) on a generated corpus already on disk; time until the API server holds
   every Trace and BlockLog `foylectl analyze` derives -> traces/s, and the
   foyle.io requests the server counted (apiserver_request_total) meanwhile;
2. etcd bytes: the stored value + key bytes under /registry/foyle.io/<plural>/
   (etcd's JSON gateway, no etcdctl), per Trace and per BlockLog, and the
   growth of etcd's in-use db size (etcd_mvcc_db_total_size_in_use_in_bytes)
   after compaction and defragmentation, per session;
3. retention: the same after one TraceRetention sweep (bodies elided).

Usage: python hack/kube_capacity.py [--size 2MB] [--seed 1]; prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import gen_logs  # noqa: E402

from controller.reconcilers.retention import TraceRetention  # noqa: E402
from controller.runtime.metrics import MetricsRegistry  # noqa: E402
from controller.store.kube import KubeStore  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402

NAMESPACE = "foyle"
ETCD_QUOTA = 2 * 2**30  # etcd's default --quota-backend-bytes


def _etcd(url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/v3/{method}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stored_bytes(url: str, plural: str) -> tuple[int, int]:
    """(objects, key + value bytes) etcd holds for the custom resources `plural`."""
    prefix = f"/registry/foyle.io/{plural}/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    kvs = _etcd(url, "kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get("kvs", [])
    size = sum(len(base64.b64decode(kv["key"])) + len(base64.b64decode(kv["value"])) for kv in kvs)
    return len(kvs), size


def db_in_use(url: str) -> int:
    """etcd's live db bytes after compacting all history and defragmenting."""
    revision = int(_etcd(url, "kv/range", {"key": _b64("a")})["header"]["revision"])
    _etcd(url, "kv/compaction", {"revision": revision, "physical": True})
    _etcd(url, "maintenance/defragment", {})
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    match = re.search(r"^etcd_mvcc_db_total_size_in_use_in_bytes (\S+)$", text, re.MULTILINE)
    assert match, "etcd /metrics has no etcd_mvcc_db_total_size_in_use_in_bytes"
    return int(float(match.group(1)))


def api_requests(kubectl: list[str]) -> int:
    """Requests the API server has served to clients so far (apiserver_request_total)."""
    text = subprocess.run(
        [*kubectl, "get", "--raw", "/metrics"], check=True, capture_output=True, text=True
    ).stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'group="foyle.io"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _foylectl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )


def measure(work: Path, size: int, seed: int) -> dict[str, Any]:
    plane = work / "plane"
    subprocess.run(["bash", str(REPO / "hack" / "control-plane.sh"), "up", str(plane)], check=True)
    try:
        return _measure(work, plane, size, seed)
    finally:
        subprocess.run(["bash", str(REPO / "hack" / "control-plane.sh"), "down", str(plane)])


def _measure(work: Path, plane: Path, size: int, seed: int) -> dict[str, Any]:
    kubeconfig = plane / "kubeconfig"
    kubectl = [str(plane / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig)]
    subprocess.run([*kubectl, "apply", "-f", str(REPO / "crds")], check=True, capture_output=True)
    subprocess.run([*kubectl, "create", "namespace", NAMESPACE], check=True, capture_output=True)
    etcd = (plane / "etcd-url").read_text().strip()
    logs = work / "logs"
    stats = gen_logs.generate(logs, size_bytes=size, seed=seed)
    _foylectl("analyze", "--logs", logs, "--state-dir", work / "oneshot", "--no-learn")
    expected = SQLiteStore(work / "oneshot" / "store.db")
    want = {kind: expected.count(kind) for kind in ("Trace", "BlockLog")}
    baseline = db_in_use(etcd)
    requests_before = api_requests(kubectl)

    store = KubeStore(NAMESPACE, kubeconfig=str(kubeconfig))
    log = open(work / "run.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    run = subprocess.Popen(
        [sys.executable, "-m", "controller", "run", "--store", "kube", "--namespace", NAMESPACE]
        + ["--kubeconfig", str(kubeconfig), "--logs", str(logs), "--state-dir", str(work / "node")]
        + ["--no-learn", "--node", "node-a"],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = started + 1800
        while {k: store.count(k) for k in want} != want:
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit(f"no convergence: {(work / 'run.log').read_text()[-2000:]}")
            time.sleep(0.5)
        seconds = time.monotonic() - started
    finally:
        run.terminate()
        run.wait(timeout=60)
        log.close()

    requests = api_requests(kubectl) - requests_before
    traces, trace_bytes = stored_bytes(etcd, "traces")
    blocklogs, blocklog_bytes = stored_bytes(etcd, "blocklogs")
    logfiles, logfile_bytes = stored_bytes(etcd, "logfiles")
    grown = db_in_use(etcd) - baseline
    TraceRetention(store, 0.0, MetricsRegistry(), clock=lambda: 4e9).sweep()
    _, elided_bytes = stored_bytes(etcd, "traces")
    grown_elided = db_in_use(etcd) - baseline
    store.close()
    per_session = grown / stats.sessions
    per_session_elided = grown_elided / stats.sessions
    return {
        "corpus_bytes": stats.bytes,
        "sessions": stats.sessions,
        "traces": traces,
        "blocklogs": blocklogs,
        "logfiles": logfiles,
        "catch_up_seconds": round(seconds, 1),
        "traces_per_second": round(traces / seconds, 1),
        "foyle_requests": requests,
        "foyle_requests_per_second": round(requests / seconds, 1),
        "requests_per_trace": round(requests / traces, 1),
        "etcd_value_bytes_per_trace": round(trace_bytes / traces),
        "etcd_value_bytes_per_trace_elided": round(elided_bytes / traces),
        "etcd_value_bytes_per_blocklog": round(blocklog_bytes / blocklogs),
        "etcd_value_bytes_logfiles": logfile_bytes,
        "etcd_db_in_use_bytes_per_session": round(per_session),
        "etcd_db_in_use_bytes_per_session_elided": round(per_session_elided),
        "sessions_in_2GiB_quota": int(ETCD_QUOTA / per_session),
        "sessions_in_2GiB_quota_elided": int(ETCD_QUOTA / per_session_elided),
    }


def _size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2MB", help="generated corpus size (default 2MB)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kube-capacity-") as work:
        print(json.dumps(measure(Path(work), _size(args.size), args.seed), indent=2))


if __name__ == "__main__":
    main()
