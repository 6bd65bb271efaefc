#!/usr/bin/env bash
# The one install step of the foyle-controller image, run as root inside a Debian bookworm root:
# by the Dockerfile (RUN, on debian:bookworm-slim) and by hack/image.sh (chroot, on a
# `debootstrap --variant=minbase bookworm` root). Same packages (deploy/image/packages.txt), same
# user, same virtualenv, same pinned Python packages (constraints.txt): so CI's image is the
# image users build.
#
# Usage: install.sh SRC   (SRC holds pyproject.toml, README.md, constraints.txt, controller/, image/: deploy/image as the build sees it)
# BUILD_CA_BUNDLE (optional): a CA bundle for apt and pip during this build only (a
# TLS-intercepting proxy); it is not installed into the image.
set -euo pipefail

SRC="${1:?usage: install.sh SRC}"
export DEBIAN_FRONTEND=noninteractive
apt_options=(-o APT::Install-Recommends=false -o Dpkg::Use-Pty=false -o APT::Sandbox::User=root)
pip_options=(--no-cache-dir --disable-pip-version-check --quiet)
if [[ -n "${BUILD_CA_BUNDLE:-}" ]]; then
  apt_options+=(-o "Acquire::https::CAInfo=${BUILD_CA_BUNDLE}")
  export PIP_CERT="${BUILD_CA_BUNDLE}"  # an environment variable reaches pip's build subprocess
fi

mapfile -t packages < <(grep -v '^[[:space:]]*\(#\|$\)' "${SRC}/image/packages.txt")
apt-get "${apt_options[@]}" update -qq
apt-get "${apt_options[@]}" install -y -qq "${packages[@]}" >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*

groupadd --gid 65532 foyle
useradd --no-create-home --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin foyle

python3 -m venv /opt/foylectl
/opt/foylectl/bin/pip install "${pip_options[@]}" --constraint "${SRC}/constraints.txt" "${SRC}"
ln -s /opt/foylectl/bin/foylectl /usr/local/bin/foylectl
find /opt/foylectl -name __pycache__ -prune -exec rm -rf {} +
