#!/usr/bin/env bash
# A real single-node Kubernetes cluster running deploy/, from scratch: no registry, no Docker.
#
#   hack/cluster.sh build      install and build what `up` needs, into the caches (then instant)
#   hack/cluster.sh up DIR     build if needed, start it; returns when the ingester DaemonSet and the operator
#                              Deployment are Ready. Leaves DIR/kubeconfig and DIR/bin/kubectl.
#   hack/cluster.sh down DIR   stop everything `up DIR` started and undo its changes to the host
#
# The control plane is hack/control-plane.sh's (etcd, kube-apiserver), serving pods on the node's
# address; the node adds kube-controller-manager, kube-scheduler, kube-proxy (nftables mode) and
# a kubelet, built from the same pinned k8s.io/kubernetes module and cached with it
# (`control-plane.sh build-node`), Debian's containerd, runc and CNI plugins (a bridge), and
# CoreDNS from Go modules. The images are imported with `ctr images import` from docker-archive
# tarballs: the pause image (a static C program), CoreDNS, and the project's image built from the
# working tree by hack/image.sh (the Dockerfile's recipe). deploy/ is applied through a kustomize
# overlay written to DIR/deploy: the node's log directory is DIR/logs (Foyle's logs in
# DIR/logs/foyle, RunMe's in DIR/logs/runme), the ingester's journal DIR/state/ingester, and the
# operator's training volume a PersistentVolume at DIR/training.
#
# The host is left as it was: containerd, the kubelet and kube-proxy run in a private mount
# namespace (their mounts, /run, /var/lib and /var/log there are DIR's and vanish with it), where
# the kernel settings the kubelet would rewrite (vm.overcommit_memory, kernel.panic,
# kernel.panic_on_oops) are files bind-mounted over /proc/sys. The pods' bridge gets its gateway
# address from here, so the CNI plugin does not turn on IP forwarding (nothing needs it: the API
# server, CoreDNS and anything a test serves listen on the node's own address). `down` deletes
# the bridge, kube-proxy's nftables tables and the cgroups it made, and puts back any sysctl
# that changed. What it needs from this machine: root, cgroup v1 (v2 is untested), go, apt-get for
# the Debian packages it installs when they are missing (containerd, runc,
# containernetworking-plugins, nftables, debootstrap; gcc and libc6-dev for the pause image). No
# CAP_SYS_RESOURCE is needed.
#
# Environment: CLUSTER_NODE_ADDRESS (default: the address of the default route's interface),
# CLUSTER_TIMEOUT (seconds for each wait, default 180), CLUSTER_OWNER_PID (`down` runs by
# itself when that process is gone). The pause and CoreDNS images are cached in
# ${FOYLE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/foyle-controller/cluster}, the binaries with
# the control plane's, the project's image with hack/image.sh's.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONTROL_PLANE="${REPO}/hack/control-plane.sh"
NODE=foyle-node
BRIDGE=foyle0
POD_GATEWAY=10.244.0.1
POD_CIDR=10.244.0.0/24
DNS_SERVICE_IP=10.0.0.10 # in control-plane.sh's --service-cluster-ip-range
CGROUP_ROOT=foyle-cluster
PAUSE_IMAGE=foyle.local/pause:1
COREDNS_IMAGE=foyle.local/coredns:1
PACKAGES=(containerd runc containernetworking-plugins nftables debootstrap gcc libc6-dev)
CNI_BIN=/usr/lib/cni # where Debian's containernetworking-plugins puts them
KUBELET_SYSCTLS=(vm/overcommit_memory kernel/panic kernel/panic_on_oops)
TIMEOUT="${CLUSTER_TIMEOUT:-180}"
IMAGE_CACHE="${FOYLE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/foyle-controller/cluster}"

log() { echo "cluster: $*" >&2; }
die() {
  log "$*"
  exit 1
}

ensure_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  # Installed, never started: a service manager must not start the host's own containerd.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [[ ! -e "${policy}" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"${policy}" && chmod +x "${policy}" && own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -z "${own_policy}" ]] || rm -f "${policy}"
}

node_address() {
  if [[ -n "${CLUSTER_NODE_ADDRESS:-}" ]]; then
    echo "${CLUSTER_NODE_ADDRESS}"
    return
  fi
  local dev
  dev="$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')"
  [[ -n "${dev}" ]] || die "no default route; set CLUSTER_NODE_ADDRESS"
  ip -4 -o addr show dev "${dev}" | awk '{split($4, a, "/"); print a[1]; exit}'
}

# pack ROOT TAG ENTRYPOINT OUT: a docker-archive of ROOT, as hack/image.sh packs the project's.
pack() {
  local root="$1" tag="$2" entrypoint="$3" out="$4"
  printf 'ENTRYPOINT ["%s"]\n' "${entrypoint}" >"${root}.Dockerfile"
  python3 "${REPO}/hack/pack_image.py" "${root}" --dockerfile "${root}.Dockerfile" --tag "${tag}" --out "${out}"
  rm -f "${root}.Dockerfile"
}

# node_images: the pause and CoreDNS images in the cache (both tiny; built once).
node_images() {
  local bin work
  bin="$(bash "${CONTROL_PLANE}" bin)"
  mkdir -p "${IMAGE_CACHE}"
  work="$(mktemp -d "${IMAGE_CACHE}/build.XXXXXX")"
  if [[ ! -s "${IMAGE_CACHE}/pause.tar" ]]; then
    mkdir -p "${work}/pause"
    # The sandbox's process: it holds the pod's namespaces and exits on SIGTERM or SIGINT.
    printf '%s\n' '#include <signal.h>' '#include <unistd.h>' \
      'static void quit(int sig) { (void)sig; _exit(0); }' \
      'int main(void) { signal(SIGTERM, quit); signal(SIGINT, quit); for (;;) pause(); }' >"${work}/pause.c"
    gcc -static -O2 -o "${work}/pause/pause" "${work}/pause.c"
    pack "${work}/pause" "${PAUSE_IMAGE}" /pause "${IMAGE_CACHE}/pause.tar"
  fi
  if [[ ! -s "${IMAGE_CACHE}/coredns.tar" || "${bin}/coredns" -nt "${IMAGE_CACHE}/coredns.tar" ]]; then
    mkdir -p "${work}/coredns"
    cp "${bin}/coredns" "${work}/coredns/coredns"
    pack "${work}/coredns" "${COREDNS_IMAGE}" /coredns "${IMAGE_CACHE}/coredns.tar"
  fi
  rm -rf "${work}"
}

# cgroup_dirs: this cluster's cgroup root in each cgroup hierarchy.
cgroup_dirs() {
  findmnt -rn -t cgroup,cgroup2 -o TARGET | while read -r mnt; do echo "${mnt}/${CGROUP_ROOT}"; done
}

make_cgroups() {
  local d parent
  while read -r d; do
    mkdir -p "${d}"
    parent="$(dirname "${d}")"
    if [[ -f "${d}/cpuset.cpus" && -z "$(cat "${d}/cpuset.cpus")" ]]; then
      cat "${parent}/cpuset.cpus" >"${d}/cpuset.cpus"
      cat "${parent}/cpuset.mems" >"${d}/cpuset.mems"
    fi
  done < <(cgroup_dirs)
}

# remove_cgroups: kill what is left in this cluster's cgroups, then remove them, deepest first.
remove_cgroups() {
  local d pids
  while read -r d; do
    [[ -d "${d}" ]] || continue
    for _ in $(seq 50); do
      pids="$(find "${d}" -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
      [[ -z "${pids}" ]] && break
      # shellcheck disable=SC2086  # one pid a word
      kill -KILL ${pids} 2>/dev/null || true
      sleep 0.1
    done
    find "${d}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d "${d}" ]] && log "could not remove cgroup ${d}"
  done < <(cgroup_dirs)
  return 0
}

write_configs() {
  local dir="$1" address="$2" kubelet_port="$3" proxy_healthz="$4" proxy_metrics="$5" node="${1}/node"
  mkdir -p "${node}/cni" "${node}/var-lib" "${node}/var-log" "${node}/sysctl"
  cat >"${node}/containerd.toml" <<TOML
version = 2
root = "${node}/var-lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "${node}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN}"
    conf_dir = "${node}/cni"
TOML
  # The bridge's gateway address is set by `up` (isGateway false): the plugin leaves
  # net.ipv4.ip_forward alone, and masquerading (iptables) is off.
  cat >"${node}/cni/10-foyle.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "foyle", "plugins": [{"type": "bridge", "bridge": "${BRIDGE}",
  "isGateway": false, "ipMasq": false, "ipam": {"type": "host-local",
  "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}"}]],
  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "${node}/var-lib/cni-ipam"}}]}
JSON
  cat >"${node}/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${node}/containerd.sock
# this machine: cgroup v1, no CAP_SYS_RESOURCE, no iptables, a shared host
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /${CGROUP_ROOT}
maxOpenFiles: 20000
oomScoreAdj: 0
makeIPTablesUtilChains: false
failSwapOn: false
port: ${kubelet_port}
healthzPort: 0
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: ${dir}/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDNS: [${DNS_SERVICE_IP}]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  cat >"${node}/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: ${dir}/kubeconfig}
hostnameOverride: ${NODE}
clusterCIDR: ${POD_CIDR}
bindAddress: ${address}
healthzBindAddress: 127.0.0.1:${proxy_healthz}
metricsBindAddress: 127.0.0.1:${proxy_metrics}
# leave the host's conntrack table settings alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

# start_namespace: the private mount namespace, with /run, /var/lib, /var/log and the kubelet's
# sysctls replaced by DIR's; a `sleep` holds it until `down`.
start_namespace() {
  local node="${NODE_DIR}" s
  for s in "${KUBELET_SYSCTLS[@]}"; do cat "/proc/sys/${s}" >"${node}/sysctl/${s//\//.}"; done
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare --mount --propagation private -- bash -c '
    node="$1"
    shift
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount --bind "${node}/var-lib" /var/lib
    mount --bind "${node}/var-log" /var/log
    for s in "$@"; do mount --bind "${node}/sysctl/${s//\//.}" "/proc/sys/${s}"; done
    touch "${node}/ns.ready"
    exec sleep infinity' _ "${node}" "${KUBELET_SYSCTLS[@]}" </dev/null >"${DIR}/logs/node-ns.log" 2>&1 &
  echo $! >"${node}/ns.pid"
  wait_for "the node's mount namespace" test -f "${node}/ns.ready"
  IN_NODE=(nsenter --target "$(cat "${node}/ns.pid")" --mount --) # execs CMD: its pid is CMD's
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# fail WHAT: what is known (the pods, the tails of the daemons' logs), then die.
fail() {
  "${DIR}/bin/kubectl" --kubeconfig "${DIR}/kubeconfig" get pods -A -o wide >&2 2>/dev/null || true
  local name
  for name in containerd kubelet kube-proxy kube-controller-manager kube-scheduler; do
    [[ -f "${DIR}/logs/${name}.log" ]] && { echo "--- ${name}" && grep -E '^[EF][0-9]|level=(error|fatal)' "${DIR}/logs/${name}.log" | tail -n 5; } >&2
  done
  die "$1 (logs in ${DIR}/logs, the pods' in ${NODE_DIR}/var-log/pods)"
}

# wait_for WHAT CMD...: poll CMD until it succeeds, for at most TIMEOUT seconds, while every
# daemon started so far is running.
wait_for() {
  local what="$1" deadline=$((SECONDS + TIMEOUT)) pid name
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "${what}: not ready after ${TIMEOUT}s"
    while read -r pid name; do
      kill -0 "${pid}" 2>/dev/null || fail "${name} exited"
    done <"${NODE_DIR}/pids"
    sleep 0.5
  done
}

# start_daemon NAME CMD...: start a daemon, log to DIR/logs/NAME.log, record its pid.
start_daemon() {
  local name="$1"
  shift
  "$@" </dev/null >"${DIR}/logs/${name}.log" 2>&1 &
  echo "$! ${name}" >>"${NODE_DIR}/pids"
}

kube() { "${DIR}/bin/kubectl" --kubeconfig "${DIR}/kubeconfig" "$@"; }

coredns_manifest() {
  local address="$1"
  cat <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        bind ${address}
        errors
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . /etc/resolv.conf
        cache 30
    }
---
# On the node's network: pods reach it on the node's address, with no forwarding between pods.
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      hostNetwork: true
      dnsPolicy: Default
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
      containers:
        - name: coredns
          image: ${COREDNS_IMAGE}
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: ${DNS_SERVICE_IP}
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
    - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
YAML
}

# write_overlay: deploy/ with this cluster's node paths, and a PersistentVolume for the training
# claim (this cluster has no StorageClass).
write_overlay() {
  local overlay="${DIR}/deploy" base
  mkdir -p "${overlay}"
  # kustomize takes a relative path to a base, never an absolute one
  base="$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "${REPO}/deploy" "${overlay}")"
  cat >"${overlay}/training-pv.yaml" <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: foyle-training}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: foyle, name: foyle-training}
  hostPath: {path: ${DIR}/training, type: Directory}
YAML
  cat >"${overlay}/kustomization.yaml" <<YAML
# Written by hack/cluster.sh: deploy/ on this node.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${base}
  - training-pv.yaml
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata: {name: foyle-ingester, namespace: foyle-ingester}
      spec:
        template:
          spec:
            volumes:
              - name: logs
                hostPath: {path: ${DIR}/logs}
              - name: journal
                hostPath: {path: ${DIR}/state/ingester}
YAML
}

build() {
  [[ "$(id -u)" == 0 ]] || die "needs root (apt-get, debootstrap; then containerd, the kubelet, nftables)"
  ensure_packages
  bash "${CONTROL_PLANE}" build
  bash "${CONTROL_PLANE}" build-node
  node_images
  IMAGE=foyle-controller:dev bash "${REPO}/hack/image.sh" build /dev/null
}

up() {
  mkdir -p "$1"
  DIR="$(cd "$1" && pwd)"
  NODE_DIR="${DIR}/node"
  case "${DIR}/" in /run/* | /var/lib/* | /var/log/*) die "DIR must not be under /run, /var/lib or /var/log (the node's namespace replaces them)" ;; esac
  [[ "$(id -u)" == 0 ]] || die "needs root (containerd, the kubelet, nftables)"
  [[ -e "${NODE_DIR}/pids" ]] && die "${DIR} is already up (run: $0 down ${DIR})"
  ip link show "${BRIDGE}" >/dev/null 2>&1 && die "bridge ${BRIDGE} exists: another cluster is up"
  local start=${SECONDS} address
  address="$(node_address)"
  build
  mkdir -p "${DIR}/images" "${DIR}/logs/foyle" "${DIR}/logs/runme" "${DIR}/state/ingester" "${DIR}/training" "${NODE_DIR}"
  # The pods run as UID 65532 and cannot chown a hostPath.
  chown 65532:65532 "${DIR}/state/ingester" "${DIR}/training"
  chmod 0700 "${DIR}/state/ingester"
  IMAGE=foyle-controller:dev bash "${REPO}/hack/image.sh" build "${DIR}/images/foyle-controller.tar"
  log "images ready after $((SECONDS - start))s"

  # From here on a failure undoes what was started.
  : >"${NODE_DIR}/pids"
  echo "${address}" >"${NODE_DIR}/address"
  # shellcheck disable=SC2064
  trap "log 'up failed; stopping'; down '${DIR}'" EXIT
  nft list tables >"${NODE_DIR}/nft-tables.before"
  sysctl -a 2>/dev/null | sort >"${NODE_DIR}/sysctl.before"
  CONTROL_PLANE_NODE_ADDRESS="${address}" CONTROL_PLANE_OWNER_PID="${CLUSTER_OWNER_PID:-}" \
    bash "${CONTROL_PLANE}" up "${DIR}"
  local bin
  bin="$(bash "${CONTROL_PLANE}" bin)"
  write_configs "${DIR}" "${address}" "$(free_port)" "$(free_port)" "$(free_port)"

  ip link add "${BRIDGE}" type bridge
  echo "${BRIDGE}" >"${NODE_DIR}/bridge"
  ip addr add "${POD_GATEWAY}/24" dev "${BRIDGE}"
  ip link set "${BRIDGE}" up
  make_cgroups
  start_namespace

  start_daemon containerd "${IN_NODE[@]}" containerd --config "${NODE_DIR}/containerd.toml"
  wait_for containerd ctr --address "${NODE_DIR}/containerd.sock" version
  local tar
  for tar in "${IMAGE_CACHE}/pause.tar" "${IMAGE_CACHE}/coredns.tar" "${DIR}/images/foyle-controller.tar"; do
    ctr --address "${NODE_DIR}/containerd.sock" -n k8s.io images import "${tar}" >/dev/null
  done
  rm -f "${DIR}/images/foyle-controller.tar"
  local kubeconfig="${DIR}/kubeconfig"
  start_daemon kube-controller-manager "${bin}/kube-controller-manager" --kubeconfig "${kubeconfig}" \
    --leader-elect=false --secure-port 0 --root-ca-file "${DIR}/pki/ca.crt" \
    --service-account-private-key-file "${DIR}/pki/sa.key" --v 1
  start_daemon kube-scheduler "${bin}/kube-scheduler" --kubeconfig "${kubeconfig}" \
    --leader-elect=false --secure-port 0 --v 1
  start_daemon kubelet "${IN_NODE[@]}" "${bin}/kubelet" --config "${NODE_DIR}/kubelet.yaml" \
    --kubeconfig "${kubeconfig}" --hostname-override "${NODE}" --node-ip "${address}" --v 1
  start_daemon kube-proxy "${IN_NODE[@]}" "${bin}/kube-proxy" --config "${NODE_DIR}/kube-proxy.yaml" --v 1
  wait_for "node ${NODE}" kube wait --for condition=Ready --timeout 5s "node/${NODE}"

  coredns_manifest "${address}" | kube apply -f - >/dev/null
  write_overlay
  kube apply -k "${DIR}/deploy" >/dev/null
  wait_for "CoreDNS" kube -n kube-system rollout status deployment/coredns --timeout 5s
  wait_for "the ingester DaemonSet" kube -n foyle-ingester rollout status daemonset/foyle-ingester --timeout 5s
  wait_for "the operator Deployment" kube -n foyle rollout status deployment/foyle-operator --timeout 5s
  if [[ -n "${CLUSTER_OWNER_PID:-}" ]]; then
    # A watchdog: if the owner (e.g. a test session) dies without `down`, tear down anyway.
    (
      while kill -0 "${CLUSTER_OWNER_PID}" 2>/dev/null && [[ -e "${NODE_DIR}/pids" ]]; do sleep 2; done
      [[ -e "${NODE_DIR}/pids" ]] && bash "$0" down "${DIR}"
    ) </dev/null >/dev/null 2>&1 &
  fi
  trap - EXIT
  log "ready in $((SECONDS - start))s: KUBECONFIG=${DIR}/kubeconfig ${DIR}/bin/kubectl get pods -A"
}

# stop_pids PID...: TERM them all, then KILL what still runs 10 s later.
stop_pids() {
  local pid
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    for pid in "$@"; do kill -0 "${pid}" 2>/dev/null && break; done
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# restore_sysctls: put back every setting a cluster could change (networking, memory, kernel
# panics and keys, inotify, user namespaces) that differs from before `up`; counters and
# statistics that change by themselves are left alone.
restore_sysctls() {
  [[ -f "${NODE_DIR}/sysctl.before" ]] || return 0
  local key value settable='^(net|vm|kernel\.(panic|keys)|fs\.inotify|user)\.'
  local volatile='(nf_conntrack_count|\.neigh\.|stable_secret|vm\.stat_refresh)'
  sysctl -a 2>/dev/null | sort | comm -13 "${NODE_DIR}/sysctl.before" - |
    grep -E "${settable}" | grep -vE "${volatile}" | while IFS=' = ' read -r key _; do
    value="$(awk -v k="${key}" -F ' = ' '$1 == k {print $2; exit}' "${NODE_DIR}/sysctl.before")"
    [[ -n "${value}" ]] || continue
    log "restoring ${key} = ${value}"
    sysctl -q -w "${key}=${value}" >/dev/null 2>&1 || log "could not restore ${key}"
  done || true # nothing to restore
}

down() {
  DIR="$(cd "$1" && pwd)"
  NODE_DIR="${DIR}/node"
  local pid name ns_pid="" table link
  [[ -f "${NODE_DIR}/ns.pid" ]] && ns_pid="$(cat "${NODE_DIR}/ns.pid")"
  if [[ -f "${NODE_DIR}/pids" ]]; then
    # kube-proxy, the kubelet, the scheduler and controller manager; the containers; containerd
    # shellcheck disable=SC2046
    stop_pids $(awk '$2 != "containerd" {print $1}' "${NODE_DIR}/pids")
    remove_cgroups
    # shellcheck disable=SC2046
    stop_pids $(awk '$2 == "containerd" {print $1}' "${NODE_DIR}/pids")
  fi
  if [[ -n "${ns_pid}" ]] && [[ -e "/proc/${ns_pid}/ns/mnt" ]]; then
    # whatever is left in the namespace (the containers' shims), then the namespace itself
    local ns
    ns="$(readlink "/proc/${ns_pid}/ns/mnt")"
    for pid in /proc/[0-9]*; do
      [[ "$(readlink "${pid}/ns/mnt" 2>/dev/null)" == "${ns}" && "${pid#/proc/}" != "${ns_pid}" ]] &&
        kill -KILL "${pid#/proc/}" 2>/dev/null
    done
    stop_pids "${ns_pid}"
  fi
  bash "${CONTROL_PLANE}" down "${DIR}"
  remove_cgroups
  if [[ -f "${NODE_DIR}/nft-tables.before" ]]; then
    nft list tables 2>/dev/null | grep -vxFf "${NODE_DIR}/nft-tables.before" | while read -r _ family table; do
      nft delete table "${family}" "${table}"
    done || true # none made
  fi
  if [[ -f "${NODE_DIR}/bridge" ]]; then
    for link in $(ip -o link show master "${BRIDGE}" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link delete "${link}" 2>/dev/null || true
    done
    ip link delete "${BRIDGE}" 2>/dev/null || true
    rm -f "${NODE_DIR}/bridge"
  fi
  restore_sysctls
  # The node's containerd content (the images, unpacked): about 600 MB, never reused. Its
  # many small files take a loaded disk 20 s to delete, so that goes on after `down` returns.
  if [[ -d "${NODE_DIR}/var-lib" ]]; then
    mv "${NODE_DIR}/var-lib" "${NODE_DIR}/var-lib.deleting"
    nohup rm -rf "${NODE_DIR}/var-lib.deleting" "${DIR}/images" >/dev/null 2>&1 &
  fi
  rm -f "${NODE_DIR}/pids" "${NODE_DIR}/ns.pid" "${NODE_DIR}/ns.ready"
  log "down: ${DIR}"
}

case "${1:-}" in
build) build ;;
up)
  [[ $# -eq 2 ]] || die "usage: $0 up DIR"
  up "$2"
  ;;
down)
  [[ $# -eq 2 ]] || die "usage: $0 down DIR"
  down "$2"
  ;;
*)
  echo "usage: $0 build | up DIR | down DIR" >&2
  exit 2
  ;;
esac
