"""The in-cluster operator: kopf feeds the learning controllers from BlockLogs and Sessions.

Data flow: kopf watches `blocklogs.foyle.io` and `sessions.foyle.io` in one
namespace and hands every event's name (the start-up listing included, and
deletions) to the learning controller of that kind: the same learners
`foylectl run` builds (`controller.learning`), under the same worker loop as
`foylectl learn --follow`: batches, retries with back-off, one warning per
failing key and one per embedding-provider outage. The learner is
level-triggered (it re-reads the object), so events are only hints.

kopf is used for what it is good at here (login, watching with reconnects,
liveness) and nothing else: event handlers keep no progress or diff-base
state, so the operator never writes to a BlockLog or Session, and no
finalizer ever holds up a deletion. An Example whose source was deleted while
the operator was down is removed by the cluster's garbage collector (its
ownerReference). kopf's own line per handled object is silenced unless
`--verbose`: a summary per interval is logged instead.

Settings come from `run_operator` (`foylectl operator`) through kopf's memo,
or from the environment when kopf itself loads this module
(`kopf run -m controller.operator`; see `settings_from_env`).
kopf is imported here only, so other `foylectl` commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from controller.api.kinds import BLOCKLOG, GROUP, SESSION, VERSION
from controller.configure import settings_from
from controller.learning import build_learners, learning_manager
from controller.settings import STOP_SECONDS, Settings

log = logging.getLogger(__name__)

# `kopf run -m controller.operator` reads its settings from these (os.pathsep-separated dirs).
ENV_FLAGS = {
    "FOYLE_NAMESPACE": "namespace",
    "FOYLECTL_STATE_DIR": "state_dir",
    "FOYLE_TRAINING_DIRS": "training_dir",
    "FOYLE_CONFIG": "foyle_config",
    "FOYLE_LEARN_FROM": "learn_from",
    "FOYLE_OPENAI_API_KEY_FILE": "openai_api_key_file",
    "FOYLE_OPENAI_BASE_URL": "openai_base_url",
}
ENV_KUBE_QPS = "FOYLE_KUBE_QPS"
ENV_KUBE_BURST = "FOYLE_KUBE_BURST"


def settings_from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    """The operator's settings when kopf loads this module without `foylectl operator`:
    the environment read as the same flags, assembled by the same `settings_from`."""
    flags: dict[str, Any] = dict.fromkeys(ENV_FLAGS.values())
    for variable, flag in ENV_FLAGS.items():
        if environ.get(variable):
            flags[flag] = environ[variable]
    if flags["training_dir"]:
        flags["training_dir"] = [Path(d) for d in flags["training_dir"].split(os.pathsep) if d]
    for path_flag in ("state_dir", "foyle_config", "openai_api_key_file"):
        if flags[path_flag]:
            flags[path_flag] = Path(flags[path_flag])
    flags["namespace"] = flags["namespace"] or "foyle"
    settings = settings_from(argparse.Namespace(store="kube", **flags), need_logs=False)
    if environ.get(ENV_KUBE_QPS):
        settings.kube_qps = float(environ[ENV_KUBE_QPS])
    if environ.get(ENV_KUBE_BURST):
        settings.kube_burst = int(environ[ENV_KUBE_BURST])
    return settings


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else $KUBECONFIG read now (not when `kubernetes` was imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the learners on a KubeStore and start their controllers."""
    from controller.runtime.metrics import MetricsRegistry
    from controller.store.kube import KubeStore

    # Least privilege: no cluster-wide list/watch of namespaces and CRDs; kopf serves the one
    # namespace it is given and the CRDs it finds at start-up (deploy/ has no ClusterRole).
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING  # an Event per success would double the API writes
    ours: Settings = memo.get("settings") or settings_from_env()
    memo["settings"] = ours
    store = KubeStore(ours.namespace, qps=ours.kube_qps, burst=ours.kube_burst)
    memo["store"] = store
    registry = MetricsRegistry()
    learners = build_learners(ours, store, registry)
    memo["learners"] = learners
    manager, controllers = learning_manager(learners, registry, summary_interval=60.0)
    manager.start()
    memo["manager"], memo["controllers"] = manager, controllers
    log.info(
        "learning from %s in namespace %s; state in %s; training files in %s",
        ", ".join(learners),
        ours.namespace,
        ours.state_dir,
        ", ".join(str(d) for d in ours.training_dirs),
    )


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if "manager" in memo:
        memo["manager"].stop(STOP_SECONDS)
    for learner in memo.get("learners", {}).values():
        learner.index.close()
    if "store" in memo:
        memo["store"].close()


def _in_our_namespace(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """The KubeStore reads one namespace; a clusterwide `kopf run -A` must not reach past it."""
    return bool(namespace == memo["settings"].namespace)


@kopf.on.event(GROUP, VERSION, BLOCKLOG.plural, when=_in_our_namespace)
def blocklog_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Any BlockLog event, the start-up listing and deletions included: learn it again."""
    _hint(memo, BLOCKLOG.kind, name)


@kopf.on.event(GROUP, VERSION, SESSION.plural, when=_in_our_namespace)
def session_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Any Session event: learn it again (Foyle >= v0.0.37 learns from Sessions)."""
    _hint(memo, SESSION.kind, name)


def _hint(memo: kopf.Memo, kind: str, name: str) -> None:
    controller = memo.get("controllers", {}).get(kind)
    if controller is not None:  # --learn-from may leave this kind out
        controller.add(name)


def run_operator(
    settings: Settings,
    *,
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    verbose: bool = False,
) -> int:
    """Run kopf in this process until SIGTERM/SIGINT; the exit code."""
    kopf.configure(log_format=kopf.LogFormat.FULL, verbose=verbose)
    if not verbose:  # kopf logs a line per handled object at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        kopf.run(
            standalone=standalone or None,
            peering_name=peering,
            liveness_endpoint=liveness,
            namespaces=[settings.namespace],
            memo=kopf.Memo(settings=settings),
        )
    except Exception:
        log.exception("the operator stopped with an error")
        return 1
    return 0
