"""The Dockerfile for real: built with buildah from a debootstrap base and local wheels, then run.

No registry image can be pulled here, so the base is Debian 12 made with ``debootstrap`` (with
python3 and venv), imported into buildah's storage; the project and its dependencies are built
into wheels on the host and installed in the image with ``PIP_NO_INDEX``/``PIP_FIND_LINKS``. The
image is then run (chroot isolation, host network) and scraped on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procutil import free_port, http, require_binary, wait_for

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/netprobe-test-base:bookworm"
IMAGE = "localhost/netprobe-exporter:test"
STORAGE = ["--storage-driver", "vfs"]


def _need(tool: str, package: str) -> str:
    path = require_binary(tool, package)
    if os.geteuid() != 0:
        pytest.skip("building images with buildah here needs root")
    return path


def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, (
        f"{argv[:4]}… failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    buildah = _need("buildah", "buildah")
    debootstrap = _need("debootstrap", "debootstrap")
    work = tmp_path_factory.mktemp("image")
    # the base image: Debian 12 with python3, made here (kept in buildah's storage for reruns)
    if subprocess.run([buildah, *STORAGE, "inspect", BASE], capture_output=True).returncode:
        rootfs = work / "rootfs"
        _run([debootstrap, "--variant=minbase", "--include=python3,python3-venv",
              "bookworm", str(rootfs)], timeout=900)  # fmt: skip
        ctr = _run([buildah, *STORAGE, "from", "scratch"], 60).strip()
        try:
            mnt = _run([buildah, *STORAGE, "mount", ctr], 60).strip()
            _run(["cp", "-a", f"{rootfs}/.", mnt], 300)
            _run([buildah, *STORAGE, "umount", ctr], 60)
            _run([buildah, *STORAGE, "commit", "-q", ctr, BASE], 300)
        finally:
            subprocess.run([buildah, *STORAGE, "rm", ctr], capture_output=True)
        shutil.rmtree(rootfs, ignore_errors=True)
    # the build context: the project as committed, plus wheels of it and of everything it needs
    context = work / "context"
    _run(["git", "clone", "-q", str(ROOT), str(context)], 120)
    for extra in ("Dockerfile", ".dockerignore"):  # the working tree's, as under test
        shutil.copy(ROOT / extra, context / extra)
    _run([sys.executable, "-m", "pip", "wheel", "-q", ".", "setuptools>=77", "wheel",
          "-w", "wheels"], 600, cwd=context)  # fmt: skip
    build_args = [f"BASE_IMAGE={BASE}", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/src/wheels"]
    _run(
        [buildah, *STORAGE, "bud", "--isolation", "chroot", "--format", "docker", "-q",
         *[x for arg in build_args for x in ("--build-arg", arg)], "-t", IMAGE, "."],
        900, cwd=context,
    )  # fmt: skip
    try:
        yield IMAGE
    finally:
        subprocess.run([buildah, *STORAGE, "rmi", "-f", IMAGE], capture_output=True)


def test_image_metadata(image: str) -> None:
    info = json.loads(_run(["buildah", *STORAGE, "inspect", "--type", "image", image], 60))
    config = info["Docker"]["config"]
    assert config["User"] == "10001"
    assert "9716/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["/opt/netprobe-exporter/bin/netprobe-exporter"]
    assert config["Cmd"] == ["--config.file=/etc/netprobe-exporter/config.yml"]
    assert "/-/healthy" in " ".join(config["Healthcheck"]["Test"])
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_image_runs_as_non_root_and_serves_metrics(image: str) -> None:
    ctr = _run(["buildah", *STORAGE, "from", "-q", image], 120).strip()
    port = free_port()
    proc = subprocess.Popen(
        ["buildah", *STORAGE, "run", "--isolation", "chroot", "--network", "host", ctr, "--",
         "/opt/netprobe-exporter/bin/netprobe-exporter",
         "--config.file=/etc/netprobe-exporter/config.yml",
         f"--web.listen-address=127.0.0.1:{port}", f"--target=127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def up() -> bool:
            try:
                text = http(f"http://127.0.0.1:{port}/metrics", timeout=2).body.decode()
            except OSError:
                return False
            return f'netprobe_up{{target="127.0.0.1:{port}",module="tcp_connect"}} 1' in text

        wait_for(up, 60, "the containerised exporter to probe itself")
        assert http(f"http://127.0.0.1:{port}/-/healthy", timeout=2).status == 200
        uid = _run(["buildah", *STORAGE, "run", "--isolation", "chroot", ctr, "--",
                    "/opt/netprobe-exporter/bin/python", "-c", "import os; print(os.getuid())"],
                   120).strip()  # fmt: skip
        assert uid == "10001"
    finally:
        subprocess.run(["pkill", "-f", f"web.listen-address=127.0.0.1:{port}"])
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        subprocess.run(["buildah", *STORAGE, "rm", ctr], capture_output=True)
        time.sleep(0.1)
