"""deploy/ as shipped, checked by the real tools: promtool, amtool, systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procutil import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_prometheus_config_is_valid() -> None:
    done = run([require_binary("promtool"), "check", "config", "prometheus.yml"],
               DEPLOY / "prometheus")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    rules = DEPLOY / "prometheus" / "rules"
    promtool = require_binary("promtool")
    done = run([promtool, "check", "rules", "netprobe.rules.yml"], rules)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run([promtool, "test", "rules", "netprobe.rules.test.yml"], rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests are real: a wrong expectation makes promtool fail."""
    rules = DEPLOY / "prometheus" / "rules"
    shutil.copy(rules / "netprobe.rules.yml", tmp_path)
    text = (rules / "netprobe.rules.test.yml").read_text()
    (tmp_path / "t.yml").write_text(text.replace("is 991ms", "is 990ms"))
    done = run([require_binary("promtool"), "test", "rules", "t.yml"], tmp_path)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


def test_alertmanager_config_is_valid() -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    done = run([amtool, "check-config", "alertmanager.yml"], DEPLOY / "alertmanager")
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    exporter = Path(sys.executable).with_name("netprobe-exporter")
    unit = (DEPLOY / "systemd" / "netprobe-exporter.service").read_text()
    assert "/usr/local/bin/netprobe-exporter" in unit
    copy = tmp_path / "netprobe-exporter.service"  # the binary where this test installed it
    copy.write_text(unit.replace("/usr/local/bin/netprobe-exporter", str(exporter)))
    done = run([analyze, "verify", str(copy)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
