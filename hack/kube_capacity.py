"""Kube mode at scale, measured on a real etcd + kube-apiserver (hack/control-plane.sh).

1. catch-up: `foylectl run --store kube` (default flags: learning on, client
   rate limit --kube-qps/--kube-burst and --trace-retention at their defaults;
   only its directories, --training-dir and --foyle-config, inside the work dir
   so nothing goes to ~/.foyle; no embedding provider: learning works without)
   on a generated corpus already on disk; time until etcd holds the BlockLogs,
   Sessions and Examples `foylectl analyze` derives and its Traces not yet
   settled (the corpus is from 2024: none; polled in etcd, so the API server
   counts the controller's requests only) -> traces/s,
   the ratio to `foylectl analyze`'s time on the same corpus (wall time, start-up
   included), and the foyle.io requests the server counted
   (apiserver_request_total) by verb and resource;
2. etcd bytes: the stored value + key bytes under /registry/foyle.io/<plural>/
   (etcd's JSON gateway, no etcdctl) per object, the mean bytes of each of its
   metadata, spec and status fields (what an object holds), and the growth of etcd's
   in-use db size (etcd_mvcc_db_total_size_in_use_in_bytes) after compaction
   and defragmentation, per session;
3. two ingesters: the same corpus in a second namespace, Foyle's logs read by
   one ingester and RunMe's by another (their traces join the same BlockLogs
   and Sessions): how many BlockLogs and Sessions end different from the one
   ingester's (lost updates), and the 409 Conflicts over the writes.

Usage: python hack/kube_capacity.py [--size 1MB] [--seed 1]; prints JSON.
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
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import gen_logs  # noqa: E402

from controller.api.kinds import BY_KIND  # noqa: E402
from controller.reconcilers.retention import due  # noqa: E402
from controller.settings import Settings  # noqa: E402
from controller.store.base import strip_server_fields  # noqa: E402
from controller.store.sqlite import SQLiteStore  # noqa: E402

NAMESPACE = "foyle"
JOINED = ("Trace", "BlockLog", "Session")  # what the catch-up must write as analyze does
LEARNED = "Example"  # compared by spec: its status names this run's training files
TWO_INGESTERS = "foyle-two"  # the same corpus again, split between two ingesters
ETCD_QUOTA = 2 * 2**30  # etcd's default --quota-backend-bytes


def _etcd(url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/v3/{method}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stored_bytes(url: str, plural: str) -> tuple[int, int, dict[str, int]]:
    """(objects, key + value bytes, mean bytes by field) etcd holds for the custom
    resources `plural`: what each object costs, and what of it (docs/kubernetes.md)."""
    prefix = f"/registry/foyle.io/{plural}/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    kvs = _etcd(url, "kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get("kvs", [])
    values = [base64.b64decode(kv["value"]) for kv in kvs]
    size = sum(len(base64.b64decode(kv["key"])) for kv in kvs) + sum(map(len, values))
    return len(kvs), size, _by_field([json.loads(v) for v in values])


def _by_field(objects: list[dict[str, Any]]) -> dict[str, int]:
    """Mean compact-JSON bytes of each metadata, spec and status field, largest first."""
    total: Counter[str] = Counter()
    for obj in objects:
        for part in ("metadata", "spec", "status"):
            for key, value in (obj.get(part) or {}).items():
                total[f"{part}.{key}"] += len(json.dumps(value, separators=(",", ":")))
    return {field: round(n / len(objects)) for field, n in total.most_common()}


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


Requests = Counter[tuple[str, str, str]]  # (resource[/subresource], verb, code) -> count


def api_requests(kubectl: list[str]) -> Requests:
    """foyle.io requests the API server has served so far (apiserver_request_total)."""
    text = subprocess.run(
        [*kubectl, "get", "--raw", "/metrics"], check=True, capture_output=True, text=True
    ).stdout
    found: Requests = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'group="foyle.io"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            resource = labels["resource"] + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            key = (resource, labels["verb"], labels["code"])
            found[key] += int(float(line.rsplit(" ", 1)[1]))
    return found


def _by_resource_and_verb(requests: Requests) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (resource, verb, _), n in requests.items():
        out[f"{verb} {resource}"] += n
    return dict(sorted(out.items()))


def _with_code(requests: Requests, code: str) -> int:
    return sum(n for (_, _, c), n in requests.items() if c == code)


def _writes(requests: Requests) -> int:
    return sum(n for (_, verb, _), n in requests.items() if verb in ("POST", "PUT", "DELETE"))


def etcd_views(url: str, plural: str, namespace: str) -> dict[str, dict[str, Any]]:
    """The objects etcd holds, as `_view` makes them: polling etcd, not the API server,
    keeps the server's request count the controller's."""
    prefix = f"/registry/foyle.io/{plural}/{namespace}/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    kvs = _etcd(url, "kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get("kvs", [])
    return _view([json.loads(base64.b64decode(kv["value"])) for kv in kvs])


def _view(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects by name without what the store sets (versions, uids, times, namespace),
    nor what a BlockLog or Session keeps of its settled members to join them."""
    out = {}
    for obj in objects:
        clean = strip_server_fields(obj)
        clean["metadata"].pop("namespace", None)
        clean.get("spec", {}).pop("settled", None)
        clean.get("status", {}).pop("observedGeneration", None)
        if obj["kind"] == LEARNED:  # its owner's uid is this store's
            clean.pop("status", None)
            for owner in clean["metadata"].get("ownerReferences", []):
                owner.pop("uid", None)
        out[obj["metadata"]["name"]] = clean
    return out


def _differing(got: dict[str, Any], want: dict[str, Any]) -> int:
    return sum(1 for name in got.keys() | want.keys() if got.get(name) != want.get(name))


def _learning(work: Path, run: str) -> list[str]:
    """Learning on, as a user gets it, its files in the work dir (not ~/.foyle): a Foyle
    config that does not exist (no embedding provider) and a training dir of its own."""
    return [
        "--foyle-config",
        str(work / "no-foyle-config.yaml"),
        "--training-dir",
        str(work / f"training-{run}"),
    ]


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


def _catch_up(
    work: Path,
    kubeconfig: Path,
    etcd: str,
    namespace: str,
    ingesters: dict[str, Path],
    want: dict[str, dict[str, Any]],
    timeout: float,
) -> tuple[float, dict[str, int]]:
    """Start one `foylectl run --store kube` per (node, log dir) and wait until etcd holds
    exactly what `want` says (kind -> `_view`), or `timeout` s. Returns the seconds it
    took and how many objects of each kind still differ. The runs are stopped after."""
    started = time.monotonic()
    runs = []
    for node, logs in ingesters.items():
        log = open(work / f"run-{namespace}-{node}.log", "wb")  # noqa: SIM115 - closed below
        argv = [sys.executable, "-m", "controller", "run", "--store", "kube"]
        argv += ["--namespace", namespace, "--kubeconfig", str(kubeconfig), "--logs", str(logs)]
        argv += ["--state-dir", str(work / f"state-{namespace}-{node}")]
        argv += _learning(work, f"{namespace}-{node}")
        runs.append((subprocess.Popen([*argv, "--node", node], stdout=log, stderr=log), log))
    try:
        while True:
            differ = {
                kind: _differing(etcd_views(etcd, BY_KIND[kind].plural, namespace), objects)
                for kind, objects in want.items()
            }
            if not any(differ.values()) or time.monotonic() > started + timeout:
                return time.monotonic() - started, differ
            if any(r.poll() is not None for r, _ in runs):
                tail = b"".join(Path(f.name).read_bytes()[-2000:] for _, f in runs)
                raise SystemExit(f"a run ended: {tail.decode(errors='replace')}")
            time.sleep(0.25)
    finally:
        for run, log in runs:
            run.terminate()
            run.wait(timeout=60)
            log.close()


def _measure(work: Path, plane: Path, size: int, seed: int) -> dict[str, Any]:
    kubeconfig = plane / "kubeconfig"
    kubectl = [str(plane / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig)]
    subprocess.run([*kubectl, "apply", "-k", str(REPO / "crds")], check=True, capture_output=True)
    for namespace in (NAMESPACE, TWO_INGESTERS):
        subprocess.run(
            [*kubectl, "create", "namespace", namespace], check=True, capture_output=True
        )
    etcd = (plane / "etcd-url").read_text().strip()
    logs = work / "logs"
    stats = gen_logs.generate(logs, size_bytes=size, seed=seed)
    local_started = time.monotonic()
    _foylectl("analyze", "--logs", logs, "--state-dir", work / "oneshot", *_learning(work, "local"))
    local_seconds = time.monotonic() - local_started
    expected = SQLiteStore(work / "oneshot" / "store.db")
    made = {kind: expected.count(kind) for kind in (*JOINED, LEARNED)}
    # What the cluster holds once caught up: what analyze derives, but the Traces finished
    # --trace-retention ago (default) are settled into their BlockLogs and Sessions.
    final = {kind: _view(expected.list(kind)) for kind in (*JOINED, LEARNED)}
    now, retention = time.time(), Settings().trace_retention
    final["Trace"] = {n: t for n, t in final["Trace"].items() if not due(t, now, retention)}
    baseline = db_in_use(etcd)
    requests_before = api_requests(kubectl)

    seconds, differ = _catch_up(
        work, kubeconfig, etcd, NAMESPACE, {"node-a": logs}, final, timeout=1800
    )
    if any(differ.values()):
        raise SystemExit(f"no convergence on what analyze derives: {differ} objects differ")
    requests = api_requests(kubectl) - requests_before
    total = sum(requests.values())
    traces, trace_bytes, _ = stored_bytes(etcd, "traces")
    blocklogs, blocklog_bytes, blocklog_fields = stored_bytes(etcd, "blocklogs")
    sessions, session_bytes, session_fields = stored_bytes(etcd, "sessions")
    logfiles, logfile_bytes, _ = stored_bytes(etcd, "logfiles")
    examples, example_bytes, example_fields = stored_bytes(etcd, "examples")
    grown = db_in_use(etcd) - baseline
    per_session = grown / stats.sessions

    # Two ingesters on disjoint log dirs (Foyle's on one node, RunMe's on another) whose
    # traces join the same BlockLogs and Sessions: they must end where one ingester did.
    before_two = api_requests(kubectl)
    two_seconds, lost = _catch_up(
        work,
        kubeconfig,
        etcd,
        TWO_INGESTERS,
        {"node-foyle": logs / "foyle", "node-runme": logs / "runme"},
        final,
        timeout=max(120.0, 4 * seconds),
    )
    two_requests = api_requests(kubectl) - before_two
    return {
        "corpus_bytes": stats.bytes,
        "sessions": stats.sessions,
        "flags": "run --store kube, defaults (learning on, --kube-qps 200 --kube-burst 400,"
        " --trace-retention 3600), --training-dir/--foyle-config in the work dir",
        "traces_made": made["Trace"],
        "examples_made": made[LEARNED],
        "traces_stored": traces,
        "blocklogs": blocklogs,
        "session_objects": sessions,
        "logfiles": logfiles,
        "catch_up_seconds": round(seconds, 1),
        "traces_per_second": round(made["Trace"] / seconds, 1),
        "local_catch_up_seconds": round(local_seconds, 2),
        "kube_to_local_ratio": round(seconds / local_seconds, 1),
        "foyle_requests": total,
        "foyle_requests_per_second": round(total / seconds, 1),
        "requests_per_trace": round(total / made["Trace"], 2),
        "requests_by_verb": _by_resource_and_verb(requests),
        "etcd_value_bytes_per_trace": round(trace_bytes / traces) if traces else 0,
        "etcd_value_bytes_per_blocklog": round(blocklog_bytes / blocklogs),
        "etcd_value_bytes_per_session_object": round(session_bytes / sessions) if sessions else 0,
        "etcd_value_bytes_logfiles": logfile_bytes,
        "etcd_value_bytes_per_example": round(example_bytes / examples) if examples else 0,
        "etcd_bytes_by_field": {
            "BlockLog": blocklog_fields,
            "Session": session_fields,
            "Example": example_fields,
        },
        "etcd_db_in_use_bytes_per_session": round(per_session),
        "sessions_in_2GiB_quota": int(ETCD_QUOTA / per_session),
        "two_ingesters_catch_up_seconds": round(two_seconds, 1),
        "two_ingesters_lost_updates": lost,
        "two_ingesters_conflicts": _with_code(two_requests, "409"),
        "two_ingesters_conflict_rate": round(
            _with_code(two_requests, "409") / max(1, _writes(two_requests)), 4
        ),
        "throttled_429": _with_code(requests + two_requests, "429"),
    }


def _size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1MB", help="generated corpus size (default 1MB)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kube-capacity-") as work:
        print(json.dumps(measure(Path(work), _size(args.size), args.seed), indent=2))


if __name__ == "__main__":
    main()
