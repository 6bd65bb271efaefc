#!/usr/bin/env bash
# A real Kubernetes control plane for tests (etcd + kube-apiserver, no kubelet), the way envtest
# does it, built from pinned Go modules so a fresh machine with only Go needs nothing else.
#
#   hack/control-plane.sh build      build (or find) etcd, kube-apiserver, kubectl in the cache
#   hack/control-plane.sh build-node build (or find) what a node adds (hack/cluster.sh): kubelet,
#                                    kube-controller-manager, kube-scheduler, kube-proxy, coredns
#   hack/control-plane.sh bin        print the directory of the built binaries
#   hack/control-plane.sh up DIR     build if needed, start both on loopback, wait for /readyz;
#                                    leaves DIR/kubeconfig (admin) and DIR/bin/kubectl
#   hack/control-plane.sh down DIR   stop what `up DIR` started
#
# KUBE_APISERVER_FLAGS adds flags to kube-apiserver (e.g. --watch-cache=false);
# CONTROL_PLANE_NODE_ADDRESS (hack/cluster.sh) serves on all addresses, advertises this one to
# pods (the `kubernetes` Service's endpoint), allows privileged pods and reaches kubelets with a
# client certificate (DIR/pki/kubelet-client.crt, in system:masters: logs, exec);
# with CONTROL_PLANE_OWNER_PID, `up` also stops the servers when that process is gone.
# The binaries are cached in ${FOYLE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/foyle-controller/control-plane}/k8s-<v>-etcd-<v>/bin.
# kube-apiserver and kubectl live in the k8s.io/kubernetes module, whose go.mod points its staging
# modules (k8s.io/api, k8s.io/apimachinery, ...) at local paths; a wrapper module requires it and
# replaces each staging module with its published v0.<minor>.<patch> version. Needs go and openssl.
set -euo pipefail

K8S_VERSION="v1.37.2" # served by the module proxy, built by go >= 1.26.0
ETCD_VERSION="v3.7.0" # what this Kubernetes release pins (hack/lib/etcd.sh, go.mod)
COREDNS_VERSION="v1.14.7" # a node's cluster DNS (hack/cluster.sh); its go.mod has no replaces
CONTROL_PLANE_CMDS=(kube-apiserver kubectl)
NODE_CMDS=(kubelet kube-controller-manager kube-scheduler kube-proxy)

CACHE_ROOT="${FOYLE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/foyle-controller/control-plane}"
CACHE="${CACHE_ROOT}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"
BIN="${CACHE}/bin"

log() { echo "control-plane: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# write_wrapper DIR CMD...: the wrapper module that builds these commands of k8s.io/kubernetes.
write_wrapper() {
  local dir="$1" staging="v0.${K8S_VERSION#v1.}" modfile cmd
  shift
  mkdir -p "${dir}"
  (cd "${dir}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" >/dev/null)
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${K8S_VERSION}.mod"
  {
    echo "module foyle.local/control-plane"
    echo
    echo "go $(go mod edit -json "${modfile}" | sed -n 's/^\t"Go": "\(.*\)",*$/\1/p')"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    # every staging module k8s.io/kubernetes replaces with ./staging/src/<path>
    go mod edit -json "${modfile}" | sed -n 's/^.*"Path": "\.\/staging\/src\/\(.*\)",*$/\1/p' |
      while read -r mod; do printf '\t%s => %s %s\n' "${mod}" "${mod}" "${staging}"; done
    echo ")"
  } >"${dir}/go.mod"
  {
    printf '//go:build tools\n\n// Package tools pins the commands this module builds.\npackage tools\n\nimport (\n'
    for cmd in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${cmd}"; done
    printf ')\n'
  } >"${dir}/tools.go"
  (cd "${dir}" && go mod tidy -e 2>/dev/null)
}

# all_built CMD...: whether every command is in the cache.
all_built() {
  local cmd
  for cmd in "$@"; do [[ -x "${BIN}/${cmd}" ]] || return 1; done
}

# build_kubernetes CMD...: build the missing commands of k8s.io/kubernetes through the wrapper.
build_kubernetes() {
  all_built "$@" && return
  local src="${CACHE}/src/kubernetes" minor="${K8S_VERSION#v1.}" k8s_ld="" pkg cmd
  minor="${minor%%.*}"
  write_wrapper "${src}" "$@"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ld+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    k8s_ld+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in "$@"; do
    [[ -x "${BIN}/${cmd}" ]] && continue
    (cd "${src}" && CGO_ENABLED=0 go build -trimpath -ldflags "${k8s_ld}" \
      -o "${BIN}/${cmd}.tmp" "k8s.io/kubernetes/cmd/${cmd}")
    mv "${BIN}/${cmd}.tmp" "${BIN}/${cmd}"
  done
}

# locked_build WHAT CMD...: one build at a time per cache (two test sessions may start
# together); the loser finds it built. Runs build_WHAT unless every CMD is cached.
locked_build() {
  local what="$1" start=${SECONDS}
  shift
  command -v go >/dev/null || die "go is required to build the control plane (deselect with -m 'not apiserver')"
  if all_built "$@"; then
    log "cached in ${BIN}"
    return
  fi
  mkdir -p "${BIN}"
  exec 9>"${CACHE}/build.lock"
  flock 9
  if all_built "$@"; then
    log "built meanwhile in ${BIN}"
    exec 9>&-
    return
  fi
  log "building $* into ${BIN}"
  "build_${what}"
  exec 9>&-
  log "built in $((SECONDS - start))s"
}

build_control_plane() {
  if [[ ! -x "${BIN}/etcd" ]]; then
    mkdir -p "${CACHE}/src/etcd"
    (
      cd "${CACHE}/src/etcd"
      printf 'module foyle.local/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "${ETCD_VERSION}" >go.mod
      printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
      go mod tidy -e 2>/dev/null
      CGO_ENABLED=0 go build -trimpath -o "${BIN}/etcd.tmp" go.etcd.io/etcd/server/v3
      mv "${BIN}/etcd.tmp" "${BIN}/etcd"
    )
  fi
  build_kubernetes "${CONTROL_PLANE_CMDS[@]}"
}

build_node() {
  build_kubernetes "${NODE_CMDS[@]}"
  if [[ ! -x "${BIN}/coredns" ]]; then
    GOBIN="${CACHE}/src/coredns-bin" CGO_ENABLED=0 go install -trimpath \
      "github.com/coredns/coredns@${COREDNS_VERSION}"
    mv "${CACHE}/src/coredns-bin/coredns" "${BIN}/coredns"
  fi
}

build() { locked_build control_plane etcd "${CONTROL_PLANE_CMDS[@]}"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# certs DIR: a throw-away CA, the API server's serving certificate, the service-account key pair.
certs() {
  local pki="$1/pki"
  mkdir -p "${pki}"
  (
    cd "${pki}"
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=foyle-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    # the names pods use too (the `kubernetes` Service, 10.0.0.1 in --service-cluster-ip-range)
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,%s%s\n' \
      'DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local' \
      "${CONTROL_PLANE_NODE_ADDRESS:+,IP:${CONTROL_PLANE_NODE_ADDRESS}}" >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    if [[ -n "${CONTROL_PLANE_NODE_ADDRESS:-}" ]]; then
      openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
        -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
      openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
        -out kubelet-client.crt 2>/dev/null
    fi
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# stop DIR: stop what `up DIR` started (DIR/pids), newest first: kube-apiserver, then etcd
# (stopped together, the server spends its grace period retrying a vanished etcd). Each gets
# TERM, and KILL if it is still running 20 s later.
stop() {
  local dir="$1" pid
  [[ -f "${dir}/pids" ]] || return 0
  for pid in $(tac "${dir}/pids"); do
    kill -TERM "${pid}" 2>/dev/null || continue
    for _ in $(seq 200); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pid}" 2>/dev/null || true
  done
  rm -f "${dir}/pids"
}

up() {
  local dir="$1"
  build
  mkdir -p "${dir}/bin" "${dir}/logs"
  dir="$(cd "${dir}" && pwd)"
  [[ -f "${dir}/pids" ]] && die "${dir} is already up (run: $0 down ${dir})"
  # shellcheck disable=SC2064  # stop exactly this DIR if anything below fails
  trap "stop '${dir}'" EXIT
  ln -sf "${BIN}/kubectl" "${dir}/bin/kubectl"
  certs "${dir}"
  local etcd_port peer_port api_port token
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  api_port="$(free_port)"
  token="$(openssl rand -hex 24)"
  printf '%s,admin,admin,system:masters\n' "${token}" >"${dir}/pki/tokens.csv"

  "${BIN}/etcd" --name foyle-test --data-dir "${dir}/etcd" \
    --listen-client-urls "http://127.0.0.1:${etcd_port}" \
    --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
    --listen-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-cluster "foyle-test=http://127.0.0.1:${peer_port}" \
    --unsafe-no-fsync --log-level warn \
    </dev/null >"${dir}/logs/etcd.log" 2>&1 &
  echo $! >>"${dir}/pids"

  local extra=() serving=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
  read -ra extra <<<"${KUBE_APISERVER_FLAGS:-}"
  if [[ -n "${CONTROL_PLANE_NODE_ADDRESS:-}" ]]; then
    serving=(--bind-address 0.0.0.0 --advertise-address "${CONTROL_PLANE_NODE_ADDRESS}" --allow-privileged
      --kubelet-client-certificate "${dir}/pki/kubelet-client.crt" --kubelet-client-key "${dir}/pki/kubelet-client.key"
      --kubelet-preferred-address-types InternalIP)
  fi
  "${BIN}/kube-apiserver" --etcd-servers "http://127.0.0.1:${etcd_port}" \
    "${serving[@]}" --secure-port "${api_port}" \
    --tls-cert-file "${dir}/pki/apiserver.crt" --tls-private-key-file "${dir}/pki/apiserver.key" \
    --token-auth-file "${dir}/pki/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "${dir}/pki/sa.pub" \
    --service-account-signing-key-file "${dir}/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --cert-dir "${dir}/pki" \
    --profiling=false --v 1 "${extra[@]}" \
    </dev/null >"${dir}/logs/kube-apiserver.log" 2>&1 &
  echo $! >>"${dir}/pids"
  echo "http://127.0.0.1:${etcd_port}" >"${dir}/etcd-url"
  if [[ -n "${CONTROL_PLANE_OWNER_PID:-}" ]]; then
    # A watchdog: if the owner (e.g. a test session) dies without `down`, stop the servers anyway.
    (
      while kill -0 "${CONTROL_PLANE_OWNER_PID}" 2>/dev/null; do sleep 2; done
      stop "${dir}"
      rm -f "${dir}/watchdog.pid"
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"${dir}/watchdog.pid"
  fi

  cat >"${dir}/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: control-plane
    cluster:
      server: https://127.0.0.1:${api_port}
      certificate-authority-data: $(base64 -w0 <"${dir}/pki/ca.crt")
users:
  - name: admin
    user:
      token: ${token}
contexts:
  - name: admin
    context: {cluster: control-plane, user: admin, namespace: default}
current-context: admin
YAML
  chmod 0600 "${dir}/kubeconfig"

  local deadline=$((SECONDS + ${CONTROL_PLANE_TIMEOUT:-120}))
  until "${BIN}/kubectl" --kubeconfig "${dir}/kubeconfig" get --raw /readyz >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "${dir}/logs/etcd.log" "${dir}/logs/kube-apiserver.log" >&2
      die "kube-apiserver not ready after ${CONTROL_PLANE_TIMEOUT:-120}s (logs in ${dir}/logs)"
    fi
    while read -r pid; do
      kill -0 "${pid}" 2>/dev/null && continue
      tail -n 20 "${dir}/logs/etcd.log" "${dir}/logs/kube-apiserver.log" >&2
      die "a control-plane process exited (logs in ${dir}/logs)"
    done <"${dir}/pids"
    sleep 0.5
  done
  trap - EXIT
  log "ready: KUBECONFIG=${dir}/kubeconfig ${dir}/bin/kubectl get --raw /readyz"
}

case "${1:-}" in
build) build ;;
build-node) locked_build node "${NODE_CMDS[@]}" coredns ;;
bin) echo "${BIN}" ;;
up)
  [[ $# -eq 2 ]] || die "usage: $0 up DIR"
  up "$2"
  ;;
down)
  [[ $# -eq 2 ]] || die "usage: $0 down DIR"
  if [[ -f "$2/watchdog.pid" ]]; then
    kill -TERM "$(cat "$2/watchdog.pid")" 2>/dev/null || true
    rm -f "$2/watchdog.pid"
  fi
  stop "$2"
  ;;
*)
  echo "usage: $0 build | build-node | bin | up DIR | down DIR" >&2
  exit 2
  ;;
esac
