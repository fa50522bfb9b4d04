"""The Python version the exporter reports: one helper behind --version and build_info."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from netprobe_exporter import cli, python_version
from netprobe_exporter.metrics import ExporterStats
from tests.support.procutil import Processes, run_exporter


def test_version_flag_and_build_info_come_from_one_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", (9, 8, 7, "final", 0))
    assert python_version() == "9.8.7"
    assert "(python 9.8.7," in cli.version_text()
    assert 'python="9.8.7"' in ExporterStats().build_labels


def test_running_exporter_shows_the_same_python_in_both(procs: Processes, tmp_path: Path) -> None:
    shown = run_exporter("--version")
    assert shown.returncode == 0, shown.stderr
    flag = re.search(r"\(python (\S+), twisted (\S+)\)", shown.stdout)
    assert flag is not None, shown.stdout
    config = tmp_path / "config.yml"
    config.write_text("targets: []\n")
    exporter = procs.start_exporter(f"--config.file={config}")
    families = {f.name: f for f in parse_text(exporter.get("/metrics").text)}
    (info,) = families["netprobe_build_info"].samples
    assert (info.labels["python"], info.labels["twisted"]) == (flag[1], flag[2])
    assert info.labels["python"] == python_version()
