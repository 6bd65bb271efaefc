"""The in-cluster operator: kopf hosts the learning controller on BlockLog custom resources.

Data flow: kopf watches `blocklogs.foyle.io` in one namespace and calls
`reconcile_blocklog(name)` on create, update and resume (every BlockLog found
at start-up), and `forget_blocklog(name)` on delete; both are the same `LearnerReconciler.reconcile` that
`foylectl run` and `foylectl learn` use, on a KubeStore. The handler is
level-triggered: it re-reads the BlockLog, so kopf's events are only hints.

Two kopf defaults do not fit and are replaced at start-up:

* kopf decides "updated" by comparing an essence that leaves out `status`,
  but the learner's input (generated and executed blocks, eval mode, doc) is
  all in status. Storing status itself in kopf's diff-base annotation could
  exceed the 256 kB annotation limit (a doc is a whole notebook), so the
  essence gets a digest of the Example the BlockLog yields instead.
* kopf keeps handler progress partly in `status.kopf`; the CRD schemas do not
  preserve unknown status fields, and the BlockLog reconciler owns status, so
  progress goes to annotations only.

Deletion is seen through a watch-event handler, with no finalizer (see
`forget_blocklog`): a BlockLog deletion never waits for the operator, and one
missed while it is down is covered by the Example's ownerReference (the
cluster's garbage collector) and by the index living in the pod's emptyDir
state dir, which a restart rebuilds through `resume`.

Settings come from `run_operator` (`foylectl operator`) through kopf's memo,
or from the environment when kopf itself loads this module
(`kopf run -m controller.operator`): FOYLE_NAMESPACE, FOYLECTL_STATE_DIR,
FOYLE_TRAINING_DIRS (os.pathsep-separated), FOYLE_KUBE_QPS, FOYLE_KUBE_BURST.
kopf is imported here only, so other `foylectl` commands start fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kopf
import orjson

from controller.api.kinds import BLOCKLOG, GROUP, VERSION
from controller.api.result import TerminalError
from controller.learn.rule import example_for
from controller.settings import Settings
from controller.store.files import make_private_dirs

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = GROUP  # kopf's bookkeeping annotations: foyle.io/...
ENV_NAMESPACE = "FOYLE_NAMESPACE"
ENV_TRAINING_DIRS = "FOYLE_TRAINING_DIRS"
ENV_KUBE_QPS = "FOYLE_KUBE_QPS"
ENV_KUBE_BURST = "FOYLE_KUBE_BURST"


def settings_from_env(environ: os._Environ[str] | dict[str, str] = os.environ) -> Settings:
    """The operator's settings when kopf loads this module without `foylectl operator`."""
    settings = Settings(store="kube", namespace=environ.get(ENV_NAMESPACE) or "foyle")
    training = environ.get(ENV_TRAINING_DIRS)
    if training:
        settings.training_dirs = [Path(d) for d in training.split(os.pathsep) if d]
    if environ.get(ENV_KUBE_QPS):
        settings.kube_qps = float(environ[ENV_KUBE_QPS])
    if environ.get(ENV_KUBE_BURST):
        settings.kube_burst = int(environ[ENV_KUBE_BURST])
    return settings


def learn_digest(blocklog: dict[str, Any]) -> str:
    """A digest of what the learner derives from a BlockLog: it changes exactly when that does."""
    example = example_for(blocklog)
    return hashlib.sha256(orjson.dumps(example, option=orjson.OPT_SORT_KEYS)).hexdigest()


class LearnInputDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base, plus a digest of the learner's input (see the module docstring)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = dict(super().build(body=body, extra_fields=extra_fields))
        essence["learnDigest"] = learn_digest(dict(body))
        return essence  # type: ignore[return-value]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else $KUBECONFIG read now (not when `kubernetes` was imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf's storage and build the learner on a KubeStore."""
    from controller.index.retrieval import ExampleIndex
    from controller.index.training import TrainingWriter
    from controller.reconcilers.learner import LearnerReconciler
    from controller.store.kube import KubeStore

    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = LearnInputDiffBase(prefix=ANNOTATION_PREFIX)
    # Least privilege: no cluster-wide list/watch of namespaces and CRDs; kopf serves the one
    # namespace it is given and the CRDs it finds at start-up (deploy/ has no ClusterRole).
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING  # an Event per success would double the API writes
    ours: Settings = memo.get("settings") or settings_from_env()
    memo["settings"] = ours
    make_private_dirs(ours.state_dir)
    store = KubeStore(ours.namespace, qps=ours.kube_qps, burst=ours.kube_burst)
    memo["store"] = store
    memo["learner"] = LearnerReconciler(
        store, ExampleIndex(ours.index_path), TrainingWriter(ours.training_dirs)
    )
    log.info("learning from blocklogs in namespace %s; state in %s", ours.namespace, ours.state_dir)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if "learner" in memo:
        memo["learner"].index.close()
    if "store" in memo:
        memo["store"].close()


def _in_our_namespace(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """The KubeStore reads one namespace; a clusterwide `kopf run -A` must not reach past it."""
    return namespace == memo["settings"].namespace


def _deleted(type: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return type == "DELETED" and _in_our_namespace(namespace, memo)


@kopf.on.resume(GROUP, VERSION, BLOCKLOG.plural, when=_in_our_namespace)
@kopf.on.create(GROUP, VERSION, BLOCKLOG.plural, when=_in_our_namespace)
@kopf.on.update(GROUP, VERSION, BLOCKLOG.plural, when=_in_our_namespace)
def reconcile_blocklog(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Converge the BlockLog's Example; an exception makes kopf retry with back-off,
    a TerminalError does not (kopf's PermanentError), as in the controller's worker loop."""
    failed = memo["learner"].reconcile([name]).failed
    if name in failed:
        err = failed[name]
        if isinstance(err, TerminalError):
            raise kopf.PermanentError(str(err)) from err
        raise err


@kopf.on.event(GROUP, VERSION, BLOCKLOG.plural, when=_deleted)
def forget_blocklog(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted BlockLog: drop its Example, index entry and training files.

    An event handler, not `kopf.on.delete`: kopf calls delete handlers only
    for objects held by its finalizer, and a finalizer on every BlockLog would
    block their deletion whenever the operator is down. Event handlers are
    not retried; an Example left behind is still garbage-collected through
    its ownerReference.
    """
    failed = memo["learner"].reconcile([name]).failed
    if name in failed:
        log.warning("forgetting the Example of deleted BlockLog %s failed: %s", name, failed[name])


def run_operator(
    settings: Settings, *, standalone: bool, peering: str | None, liveness: str | None
) -> int:
    """Run kopf in this process until SIGTERM/SIGINT; the exit code."""
    kopf.configure(log_format=kopf.LogFormat.FULL)
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
