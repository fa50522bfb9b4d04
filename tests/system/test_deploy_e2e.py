"""deploy/ for real: exporter + Prometheus (shipped config and rules) + Alertmanager.

A target goes down and ``NetprobeTargetDown`` reaches Alertmanager; every PromQL expression of
the Grafana dashboard runs against that Prometheus and returns data. The test copies of the
shipped files differ only where a test must: addresses point at loopback, intervals are 1 s,
and the alerts' ``for:`` waits are 2 s instead of minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support import procutil
from tests.support.dns_zone import ZONE
from tests.support.probe_fixtures import needs_icmp
from tests.support.procutil import Processes, wait_for
from tests.support.servers import http_server, make_certs, tls_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _get(url: str) -> Any:
    return json.loads(procutil.http(url, timeout=5).body)


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    data = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", (expr, data)
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "netprobe.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def _grafana_to_promql(expr: str) -> str:
    """Expand the Grafana variables the dashboard uses, as Grafana would for 'All'."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", expr)
    if m:  # a variable query: the series it reads must exist
        expr = m.group(1)
    for var in ("$job", "$target", "$module"):
        expr = expr.replace(var, ".*")
    return expr.replace("$__rate_interval", "30s")


def test_deploy_stack_alerts_and_dashboard(procs: Processes, tmp_path: Path) -> None:
    needs_icmp()  # the dashboard's ICMP panel needs an ICMP target that answers
    alertmanager = procutil.require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    certs = make_certs(tmp_path / "certs")
    victim = socket.socket()
    victim.bind(("127.0.0.1", 0))
    victim.listen(64)
    victim_addr = f"127.0.0.1:{victim.getsockname()[1]}"
    with (
        http_server() as web,
        tls_server(certs.server_context("valid")) as tls,
        procutil.dns_zone_process(300) as (zone, _),
    ):
        # a target for each prober, so that every latency panel has data
        config = tmp_path / "netprobe.yml"
        config.write_text(
            "defaults:\n  interval: 1s\n"
            f"modules:\n  tls_ca:\n    prober: tcp\n    tcp:\n      tls: true\n"
            f"      tls_config: {{ca_file: {certs.ca_cert}}}\n"
            f"  zone:\n    prober: dns\n    dns: {{query_name: www.{ZONE}, query_type: A}}\n"
            f"targets:\n  - address: {victim_addr}\n"
            f"  - address: localhost:{tls.port}\n    module: tls_ca\n"
            f"  - address: {web.url('/ok')}\n    module: http_2xx\n"
            f"  - address: {zone}\n    module: zone\n"
            "  - address: 127.0.0.1\n    module: icmp\n"
        )
        exporter = procs.start_exporter(f"--config.file={config}")

        am_port = procutil.free_port()
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(
            (DEPLOY / "alertmanager" / "alertmanager.yml")
            .read_text()
            .replace("http://alert-receiver:5001", f"http://127.0.0.1:{procutil.free_port()}")
        )
        procs.spawn(
            [alertmanager, f"--config.file={am_config}", f"--storage.path={tmp_path / 'am'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            "alertmanager",
        )  # fmt: skip
        am = f"http://127.0.0.1:{am_port}"
        wait_for(lambda: _ready(am), 20, "alertmanager ready", interval=0.2)

        prom_dir = tmp_path / "prometheus"
        (prom_dir / "rules").mkdir(parents=True)
        rules = (DEPLOY / "prometheus" / "rules" / "netprobe.rules.yml").read_text()
        (prom_dir / "rules" / "netprobe.rules.yml").write_text(
            re.sub(r"for: \d+m", "for: 2s", rules)
        )
        prom_cfg = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
        prom_cfg = (
            prom_cfg.replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace("netprobe-exporter:9716", f"127.0.0.1:{exporter.port}")
            .replace("alertmanager:9093", f"127.0.0.1:{am_port}")
            .replace("https://prometheus.io", web.url("/ok"))
            .replace("https://grafana.com", web.url("/missing"))
        )
        assert "prometheus.io" not in prom_cfg and "grafana.com" not in prom_cfg
        (prom_dir / "prometheus.yml").write_text(prom_cfg)
        prom, _ = procutil.start_prometheus(procs, prom_dir / "prometheus.yml", prom_dir)
        # the same files with native histograms on, as docker-compose.yml runs it: Prometheus
        # 2.42 then keeps only the native form of each latency histogram (no *_bucket series)
        native_dir = tmp_path / "prometheus-native"
        shutil.copytree(prom_dir, native_dir)
        native, _ = procutil.start_prometheus(
            procs, native_dir / "prometheus.yml", native_dir, "--enable-feature=native-histograms"
        )

        # both jobs scraped: continuous mode and /probe through the canonical relabeling
        def scraped() -> bool:
            up = {r["metric"]["job"]: r["value"][1] for r in _query(prom, "up")}
            probed = _query(prom, "probe_success")
            return (
                up.get("netprobe") == "1" and up.get("netprobe-probe") == "1" and (len(probed) == 2)
            )

        wait_for(scraped, 30, "both jobs scraped")
        ok = _query(prom, f'probe_success{{instance="{web.url("/ok")}"}}')
        assert ok and ok[0]["value"][1] == "1"

        # the dashboard and the latency recording rules: every expression parses and returns
        # data, from classic buckets and from native histograms (the rates need a few scrapes)
        wait_for(lambda: _query(native, "netprobe_connect_duration_seconds"), 30, "native data")
        assert _query(prom, "netprobe_connect_duration_seconds_bucket")
        assert not _query(native, "netprobe_connect_duration_seconds_bucket")
        time.sleep(3)
        latency_rules = [
            "target:netprobe_connect_duration_seconds:p90_5m",
            "target:netprobe_probe_duration_seconds:p99_5m",
        ]
        for server in (prom, native):
            for expr in [*_dashboard_exprs(), *latency_rules]:
                promql = _grafana_to_promql(expr)
                wait_for(lambda q=promql, s=server: _query(s, q), 20, f"data for {promql}")

        # the victim goes away: its probes are refused, and the alert reaches Alertmanager
        victim.close()

        def alerted() -> list[dict[str, Any]]:
            alerts: list[dict[str, Any]] = _get(f"{am}/api/v2/alerts")
            return [
                a for a in alerts
                if a["labels"].get("alertname") == "NetprobeTargetDown"
                and a["labels"].get("target") == victim_addr
            ]  # fmt: skip

        fired = wait_for(alerted, 60, "NetprobeTargetDown in Alertmanager")
        assert fired[0]["labels"]["severity"] == "page"
        assert fired[0]["status"]["state"] == "active"
        # the TLS target is healthy and is not paged for (one slow probe on a loaded machine
        # could move its availability a little, so only the down alert is looked at)
        others = [
            a
            for a in _get(f"{am}/api/v2/alerts")
            if a["labels"].get("target") == f"localhost:{tls.port}"
            and a["labels"].get("alertname") == "NetprobeTargetDown"
        ]
        assert others == [], others
        expiry = _query(prom, "netprobe_tls_cert_expiry_timestamp_seconds - time()")
        assert expiry and float(expiry[0]["value"][1]) > 86400


def _ready(base: str) -> bool:
    try:
        return procutil.http(base + "/-/ready", timeout=1).status == 200
    except OSError:
        return False


pytestmark = pytest.mark.prometheus
