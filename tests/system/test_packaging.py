"""The wheel and the sdist, as a user installing from the clone or from a built file gets them.

Built from a copy of the source tree (so the build leaves nothing in the checkout) with the
test environment's setuptools, checked with ``twine check --strict`` (what an index would
refuse), then installed on their own and run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEEP_OUT = {".venv", ".git", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}


def _copy_tree(dest: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in KEEP_OUT or n.endswith(".egg-info")}

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _build(tmp_path: Path) -> tuple[Path, Path]:
    src = _copy_tree(tmp_path / "src")
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_wheel_and_sdist_build_pass_twine_check_and_the_wheel_runs(tmp_path: Path) -> None:
    wheel, sdist = _build(tmp_path)
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "netprobe_exporter/cli.py",
        "netprobe_exporter/probes/tcp.py",
        "netprobe_exporter/promproto/metrics.proto",
        "netprobe_exporter/promproto/NOTICE",
        "netprobe_exporter/promproto/metrics_pb2.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "netprobe-exporter = netprobe_exporter.cli:main" in text

    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for needed in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml",
                   "src/netprobe_exporter/promproto/metrics.proto"):  # fmt: skip
        assert needed in members, needed

    # the wheel alone (its dependencies come from this environment): it runs from where it
    # was installed, and finds its generated protobuf module
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import netprobe_exporter, netprobe_exporter.promproto.metrics_pb2 as pb;"
        "print(netprobe_exporter.__file__); print(pb.MetricFamily.DESCRIPTOR.full_name)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    where, family = ran.stdout.split()
    assert Path(where).is_relative_to(target)
    assert family == "io.prometheus.client.MetricFamily"
    version = subprocess.run(
        [sys.executable, "-m", "netprobe_exporter", "--version"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.returncode == 0 and "netprobe-exporter" in version.stdout + version.stderr
