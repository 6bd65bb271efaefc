"""The registry-less image build (hack/image.sh): the image CI deploys, built for real.

Slow (a debootstrap and a pip install the first time, about 3 minutes; cached
after) and root only (debootstrap, chroot), as in CI. The image's own
`foylectl` is run in its root filesystem as UID 65532, the user it runs as.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.control_plane import real_cache

REPO = Path(__file__).resolve().parent.parent
CACHE_ENV = real_cache("FOYLE_IMAGE_CACHE", "image")  # the real HOME's, as a developer's

pytestmark = pytest.mark.slow


def test_hack_image_builds_the_dockerfiles_image_and_its_foylectl_runs(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "hack/image.sh needs root (debootstrap, chroot)"
    out = tmp_path / "image.tar"
    build = subprocess.run(
        ["bash", str(REPO / "hack" / "image.sh"), "build", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env={**os.environ, **CACHE_ENV},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    with tarfile.open(out) as tar:
        [manifest] = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        [layer] = manifest["Layers"]
        tar.extract(layer, tmp_path, filter="tar")
    assert manifest["RepoTags"] == ["foyle-controller:dev"]  # deploy/kustomization.yaml's tag
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["foylectl"]
    chroot = shutil.which("chroot")
    assert chroot is not None
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / layer), "-C", str(root)], check=True)
    version = subprocess.run(
        [chroot, "--userspec=65532:65532", str(root), "foylectl", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert version.returncode == 0 and version.stdout.startswith("foylectl "), version
