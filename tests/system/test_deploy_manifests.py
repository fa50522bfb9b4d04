"""Kubernetes manifests and the compose file: validated offline, since no cluster or Docker
engine runs here. Core kinds against Kubernetes' own JSON schemas (kubernetes-validate, strict);
the Prometheus Operator resources by their content (the rules through promtool)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.procutil import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE = DEPLOY / "kubernetes"
CORE = ["configmap.yaml", "deployment.yaml", "service.yaml", "statefulset-sharded.yaml"]


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_core_manifests_match_the_kubernetes_schemas() -> None:
    done = validate(*(KUBE / name for name in CORE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == 5


def test_the_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    broken.write_text((KUBE / "deployment.yaml").read_text().replace("containerPort", "contPort"))
    assert validate(broken).returncode != 0


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]


def test_sharded_statefulset_shards_by_pod_ordinal() -> None:
    sts = next(d for d in _docs("statefulset-sharded.yaml") if d["kind"] == "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    replicas = sts["spec"]["replicas"]
    assert f"--shard=$(POD_INDEX)/{replicas}" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    path = env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert path == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_service_monitor_selects_both_services() -> None:
    (sm,) = _docs("servicemonitor.yaml")
    assert sm["kind"] == "ServiceMonitor"
    names = set(sm["spec"]["selector"]["matchExpressions"][0]["values"])
    services = [d for f in ("service.yaml", "statefulset-sharded.yaml") for d in _docs(f)
                if d["kind"] == "Service"]  # fmt: skip
    assert {s["metadata"]["labels"]["app.kubernetes.io/name"] for s in services} == names
    assert all(s["spec"]["ports"][0]["name"] == sm["spec"]["endpoints"][0]["port"]
               for s in services)  # fmt: skip


def test_prometheus_rule_is_the_rule_file_and_valid(tmp_path: Path) -> None:
    (rule,) = _docs("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "netprobe.rules.yml").read_text())
    for group in shipped["groups"]:
        for r in group["rules"]:
            r["expr"] = r["expr"].replace('job="netprobe"', 'job=~"netprobe-exporter.*"')
    assert rule["spec"]["groups"] == shipped["groups"]
    out = tmp_path / "rules.yml"
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([require_binary("promtool"), "check", "rules", str(out)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_wires_the_services_to_shipped_files() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"netprobe-exporter", "prometheus", "alertmanager", "grafana"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"{source} does not exist"
    prometheus_yml = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "netprobe-exporter:9716" in prometheus_yml and "alertmanager:9093" in prometheus_yml
    datasource = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "http://prometheus:9090" in datasource
    # the list form, which docker compose and podman-compose both read (podman-compose drops
    # the value of the mapping form)
    sysctls = services["netprobe-exporter"]["sysctls"]
    assert isinstance(sysctls, list), sysctls
    assert "net.ipv4.ping_group_range=0 2147483647" in sysctls


def test_the_dashboard_json_is_what_its_builder_makes() -> None:
    """deploy/grafana/dashboard.py (grafana-foundation-sdk) is the source; the JSON its output."""
    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (DEPLOY / "grafana" / "dashboards" / "netprobe.json").read_text()
    assert module.build() == committed, "run python deploy/grafana/dashboard.py"


def test_every_latency_panel_reads_classic_or_native_and_groups_by_le() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "netprobe.json").read_text())
    quantiles = [
        t["expr"] for p in dash["panels"] for t in p.get("targets", [])
        if "histogram_quantile" in t["expr"]
    ]  # fmt: skip
    families = {re.search(r"rate\((\w+)_bucket", e).group(1) for e in quantiles}  # type: ignore[union-attr]
    assert {
        "netprobe_connect_duration_seconds", "netprobe_tcp_handshake_rtt_seconds",
        "netprobe_icmp_rtt_seconds", "netprobe_http_duration_seconds",
        "netprobe_dns_lookup_duration_seconds", "netprobe_probe_duration_seconds",
    } <= families  # fmt: skip
    for expr in quantiles:
        classic, _, native = expr.partition(" or ")
        assert "le)" in classic and "_bucket{" in classic, expr
        assert native.startswith("histogram_quantile(") and "_bucket" not in native, expr
        if "scheduler_lag" not in expr:
            assert "(target, module" in classic and 'job=~"$job"' in classic, expr
