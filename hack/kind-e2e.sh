#!/usr/bin/env bash
# End to end on kind: bring the cluster up, write the sample logs onto the node, and wait until
# `kubectl get blocklogs` lists exactly the block logs `foylectl analyze` derives from them.
# The cluster is deleted on exit (KEEP_CLUSTER=1 keeps it for a look around).
#
# Environment: CLUSTER (default foyle-e2e), TESTDATA (default tests/data/foyle in
# this checkout), DEADLINE seconds (default 180), plus what hack/kind-up.sh reads.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CLUSTER="${CLUSTER:-foyle-e2e}"
TESTDATA="${TESTDATA:-${REPO}/tests/data/foyle}"
DEADLINE="${DEADLINE:-180}"
CONTEXT="kind-${CLUSTER}"
WORK="$(mktemp -d)"
export LOG_DIR="${WORK}/logs"

teardown() {
  local status=$?
  if [[ "${status}" -ne 0 ]]; then
    kubectl --context "${CONTEXT}" --namespace foyle-ingester logs daemonset/foyle-ingester --tail 50 || true
    kubectl --context "${CONTEXT}" --namespace foyle logs deployment/foyle-operator --tail 50 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" != "1" ]]; then
    kind delete cluster --name "${CLUSTER}" || true
  fi
  rm -rf "${WORK}"
  exit "${status}"
}
trap teardown EXIT

[[ -d "${TESTDATA}" ]] || { echo "kind-e2e: no sample logs at ${TESTDATA}" >&2; exit 1; }

# What the cluster must end up with: the one-shot analysis of the same files.
python -m controller analyze --logs "${TESTDATA}" --state-dir "${WORK}/oneshot" --no-learn --no-progress
python -m controller get blocklogs -o name --state-dir "${WORK}/oneshot" \
  | sed 's|^[^/]*/||' | sort > "${WORK}/expected"
[[ -s "${WORK}/expected" ]] || { echo "kind-e2e: analyze derived no block logs" >&2; exit 1; }

"${REPO}/hack/kind-up.sh"

node="$(kind get nodes --name "${CLUSTER}" | head -n 1)"
echo "kind-e2e: writing the sample logs into ${node}:/var/log/foyle/foyle"
docker cp "${TESTDATA}/." "${node}:/var/log/foyle/foyle/"
# The ingester runs as UID 65532: the copies must be readable by others.
docker exec "${node}" chmod -R a+rX /var/log/foyle
docker exec "${node}" ls -l /var/log/foyle

echo "kind-e2e: waiting up to ${DEADLINE}s for $(wc -l < "${WORK}/expected") block logs"
end=$((SECONDS + DEADLINE))
until kubectl --context "${CONTEXT}" --namespace foyle get blocklogs -o name \
  | sed 's|^[^/]*/||' | sort | diff -q - "${WORK}/expected" >/dev/null; do
  if ((SECONDS >= end)); then
    echo "kind-e2e: FAILED: block logs differ from foylectl analyze after ${DEADLINE}s" >&2
    kubectl --context "${CONTEXT}" --namespace foyle get blocklogs -o name \
      | sed 's|^[^/]*/||' | sort | diff - "${WORK}/expected" >&2 || true
    exit 1
  fi
  sleep 2
done
kubectl --context "${CONTEXT}" --namespace foyle get blocklogs
kubectl --context "${CONTEXT}" --namespace foyle get examples
echo "kind-e2e: PASSED"
