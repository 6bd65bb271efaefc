#!/usr/bin/env bash
# Build the foyle-controller image without a registry or Docker: the Dockerfile's recipe
# (deploy/image/packages.txt + deploy/image/install.sh) run in a `debootstrap --variant=minbase bookworm` root,
# packed as a docker-archive tarball (`ctr -n k8s.io images import`, `docker load`).
#
#   hack/image.sh build OUT.tar     build (or take from the cache) and copy the tarball to OUT.tar
#
# USER, ENV and ENTRYPOINT/CMD come from the Dockerfile (hack/pack_image.py reads them), so the
# two builds differ only in the base: debian:bookworm-slim there, a fresh bookworm minbase here.
# Needs root (debootstrap, chroot); installs debootstrap with apt-get when it is missing. The
# Debian mirror is the host's own apt source. The host's CA bundle is copied in for the build
# only (a TLS-intercepting proxy) and removed before packing. Cached by the hash of the recipe
# and the sources under ${XDG_CACHE_HOME:-~/.cache}/foyle-controller/image (FOYLE_IMAGE_CACHE).
# Environment: IMAGE (default foyle-controller:dev, the tag deploy/kustomization.yaml uses).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-foyle-controller:dev}"
CACHE="${FOYLE_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/foyle-controller/image}"
SUITE=bookworm
HOST_CA=/etc/ssl/certs/ca-certificates.crt

die() { echo "image: $*" >&2; exit 1; }

sources_key() {
  (cd "${REPO}" && find Dockerfile pyproject.toml README.md constraints.txt deploy/image controller \
    -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) \
    | { cat; echo "${IMAGE}"; } | sha256sum | cut -c1-16
}

host_mirror() {
  local sources=/etc/apt/sources.list.d/debian.sources
  if [[ -f "${sources}" ]]; then
    awk '/^URIs:/ {print $2; exit}' "${sources}"
  elif [[ -f /etc/apt/sources.list ]]; then
    awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list
  fi
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

build_root() {
  local root="$1" mirror
  mirror="$(host_mirror)"
  debootstrap --variant=minbase "${SUITE}" "${root}" ${mirror:+"${mirror}"} >"${root}.debootstrap.log" 2>&1 \
    || die "debootstrap failed; see ${root}.debootstrap.log"
  mkdir -p "${root}/tmp/src"
  (cd "${REPO}" && tar --exclude=__pycache__ --transform 's,^deploy/image,image,' \
    -cf - pyproject.toml README.md constraints.txt deploy/image controller) \
    | tar -xf - -C "${root}/tmp/src"
  cp /etc/resolv.conf "${root}/etc/resolv.conf"
  local ca_env=()
  if [[ -f "${HOST_CA}" ]]; then
    cp "${HOST_CA}" "${root}/tmp/build-ca.crt"
    ca_env=(BUILD_CA_BUNDLE=/tmp/build-ca.crt)
  fi
  # A private mount namespace: /proc is mounted for the build and gone with it.
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare --mount --propagation private -- bash -c '
    mount -t proc proc "$1/proc"
    shift
    exec chroot "$@"' _ "${root}" "${root}" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    "${ca_env[@]}" bash /tmp/src/image/install.sh /tmp/src
  rm -rf "${root}/tmp/src" "${root}/tmp/build-ca.crt"
  : >"${root}/etc/resolv.conf"  # the runtime provides its own
}

cmd_build() {
  local out="${1:?usage: image.sh build OUT.tar}"
  [[ "$(id -u)" == 0 ]] || die "needs root (debootstrap, chroot)"
  local cached
  cached="${CACHE}/foyle-controller-$(sources_key).tar"
  if [[ ! -s "${cached}" ]]; then
    ensure_debootstrap
    mkdir -p "${CACHE}"
    local root
    root="$(mktemp -d "${CACHE}/root.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this root
    trap "rm -rf '${root}' '${root}.debootstrap.log'" EXIT
    echo "image: building ${IMAGE} in a ${SUITE} minbase root" >&2
    build_root "${root}"
    python3 "${REPO}/hack/pack_image.py" "${root}" --dockerfile "${REPO}/Dockerfile" \
      --tag "${IMAGE}" --out "${cached}.part"
    mv "${cached}.part" "${cached}"
    # One image in the cache: the previous sources' tarball is never used again.
    find "${CACHE}" -maxdepth 1 -name 'foyle-controller-*.tar' ! -path "${cached}" -delete
  fi
  cp "${cached}" "${out}"
  echo "image: ${IMAGE} in ${out} ($(du -h "${out}" | cut -f1))" >&2
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  *) echo "usage: $0 build OUT.tar" >&2; exit 2 ;;
esac
