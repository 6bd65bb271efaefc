"""Pack a root filesystem as a docker-archive image tarball, configured from the Dockerfile.

`hack/image.sh` builds the root with the Dockerfile's install step; this takes
the image configuration (ENV, USER, WORKDIR, ENTRYPOINT, CMD) from the same
Dockerfile, so the registry-less image and a `docker build` differ only in
their base. The output loads with `ctr -n k8s.io images import` and
`docker load`: one layer, `manifest.json`, the config, `repositories`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shlex
import tarfile
import tempfile
from pathlib import Path
from typing import Any

SKIPPED = ("proc/", "sys/", "dev/")  # the runtime mounts these; only the directories stay


def dockerfile_config(text: str) -> dict[str, Any]:
    """The runtime configuration the Dockerfile's instructions set."""
    config: dict[str, Any] = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    }
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ENV":
            config["Env"].extend(
                f"{k}={v}" for k, _, v in (p.partition("=") for p in shlex.split(rest))
            )
        elif word == "USER":
            config["User"] = rest.strip()
        elif word == "WORKDIR":
            config["WorkingDir"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            config["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = json.loads(rest)
    return config


def _layer(root: Path, out: Path) -> str:
    """The root as one uncompressed layer (owners kept numerically); its sha256."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name.removeprefix("./")
        if any(name.startswith(s) for s in SKIPPED):
            return None
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pack(root: Path, dockerfile: Path, tag: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        diff_id = _layer(root, layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": dockerfile_config(dockerfile.read_text()),
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [
                {"created_by": "hack/image.sh (deploy/image/install.sh in a bookworm minbase)"}
            ],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        repo, _, version = tag.rpartition(":")
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
        with tarfile.open(out, "w") as tar:
            _add_bytes(tar, config_name, config_bytes)
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
            _add_bytes(tar, "repositories", json.dumps({repo: {version: diff_id}}).encode())
            tar.add(layer, arcname=f"{diff_id}/layer.tar")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--dockerfile", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pack(args.root, args.dockerfile, args.tag, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
