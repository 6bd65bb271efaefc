#!/usr/bin/env bash
# Create a kind cluster running foyle-controller: build the image, load it, apply deploy/.
#
# The node's /var/log/foyle (what the ingester DaemonSet reads, read-only) is bind-mounted from
# LOG_DIR on this machine, so log files written on either side appear on the node: Foyle's logs
# go in LOG_DIR/foyle, RunMe's in LOG_DIR/runme (both are created here).
#
# What tests this script: nothing in CI (CI has no Docker or kind). CI runs deploy/ on a real
# single-node cluster instead (hack/cluster.sh, the `cluster` test tier): the image from the
# Dockerfile's recipe under containerd and a kubelet, probes, hostPath, tokens, DNS, the
# ConfigMap, Secret and claim, rolling updates, pod deletion, SIGTERM, RBAC, Pod Security.
# Only here: `docker build` of the Dockerfile itself and `kind load`, kind's node image
# (cgroup v2, systemd driver, newer containerd), its local-path StorageClass (fsGroup on the
# claim), a CNI that enforces NetworkPolicy. docs/kubernetes.md lists what is verified where.
#
# Environment: CLUSTER (default foyle), IMAGE (default foyle-controller:dev, the tag
# deploy/kustomization.yaml uses), LOG_DIR (default $TMPDIR/foyle-kind-$CLUSTER/logs). Needs docker, kind, kubectl.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-foyle}"
IMAGE="${IMAGE:-foyle-controller:dev}"
LOG_DIR="${LOG_DIR:-${TMPDIR:-/tmp}/foyle-kind-${CLUSTER}/logs}"
CONTEXT="kind-${CLUSTER}"

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null || { echo "kind-up: ${tool} is required" >&2; exit 1; }
done

mkdir -p "${LOG_DIR}/foyle" "${LOG_DIR}/runme"
LOG_DIR="$(cd "${LOG_DIR}" && pwd)"

echo "kind-up: creating cluster ${CLUSTER} (node log dir <- ${LOG_DIR})"
kind create cluster --name "${CLUSTER}" --wait 180s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      - hostPath: ${LOG_DIR}
        containerPath: /var/log/foyle
YAML

# The pods run as UID 65532 and cannot chown a hostPath: prepare the journal dir on each node.
for node in $(kind get nodes --name "${CLUSTER}"); do
  docker exec "${node}" sh -c \
    'mkdir -p /var/lib/foyle-controller && chown 65532:65532 /var/lib/foyle-controller && chmod 0700 /var/lib/foyle-controller'
done

echo "kind-up: building ${IMAGE}"
docker build --tag "${IMAGE}" "${REPO}"
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

echo "kind-up: applying deploy/"
kubectl --context "${CONTEXT}" apply -k "${REPO}/deploy"
kubectl --context "${CONTEXT}" wait --for condition=Established --timeout 60s \
  crd/logfiles.foyle.io crd/traces.foyle.io crd/blocklogs.foyle.io crd/examples.foyle.io
kubectl --context "${CONTEXT}" --namespace foyle-ingester rollout status daemonset/foyle-ingester --timeout 180s
kubectl --context "${CONTEXT}" --namespace foyle rollout status deployment/foyle-operator --timeout 180s
echo "kind-up: ready; try: kubectl --context ${CONTEXT} get foyle -n foyle"
