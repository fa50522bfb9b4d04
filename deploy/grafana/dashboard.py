"""Builds deploy/grafana/dashboards/netprobe.json with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py            # rewrites the JSON
    python deploy/grafana/dashboard.py --check    # exit 1 if the committed JSON differs

The JSON is committed (Grafana provisioning reads it); tests/system/test_deploy_manifests.py
checks it is this script's output, and the end-to-end test runs every expression against a real
Prometheus, with and without native histograms.

Every latency quantile reads the classic buckets or the native histogram, whichever Prometheus
kept (with native histograms on, Prometheus before 2.45 keeps only the native form).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.heatmap import Panel as Heatmap
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUT = Path(__file__).parent / "dashboards" / "netprobe.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: the selector every target series is filtered by
SEL = 'job=~"$job", target=~"$target", module=~"$module"'
RATE = "[$__rate_interval]"


def quantile(q: float, metric: str, by: str, sel: str = SEL) -> str:
    """``histogram_quantile`` over classic buckets, or else over the native histogram."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}{RATE}))) or "
        f"histogram_quantile({q}, sum by ({by}) (rate({metric}{{{sel}}}{RATE})))"
    )


def query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def quantiles(metric: str, by: str, legend: str, qs: tuple[float, ...]) -> list[Dataquery]:
    return [
        query(quantile(q, metric, by), f"p{q * 100:g} {legend}", chr(ord("A") + i))
        for i, q in enumerate(qs)
    ]


def timeseries(title: str, unit: str, targets: list[Dataquery], desc: str = "") -> Timeseries:
    panel = Timeseries().title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
    if desc:
        panel = panel.description(desc)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def variables(dash: Dashboard) -> Dashboard:
    dash = dash.with_variable(
        DatasourceVariable("datasource").label("datasource").type("prometheus")
    )
    for name, source in (
        ("job", "label_values(netprobe_up, job)"),
        ("target", 'label_values(netprobe_up{job=~"$job"}, target)'),
        ("module", 'label_values(netprobe_up{job=~"$job", target=~"$target"}, module)'),
    ):
        dash = dash.with_variable(
            QueryVariable(name)
            .label(name)
            .datasource(DATASOURCE)
            .query(source)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .multi(True)
            .all_value(".*")
        )
    return dash


def panels(dash: Dashboard) -> Dashboard:
    probes = f"netprobe_probes_total{{{SEL}}}"
    success = f'netprobe_probes_total{{{SEL}, result="success"}}'
    out: list[Builder[object]] = [
        Row("Availability"),
        timeseries(
            "Availability (success ratio)", "percentunit",
            [query(f"sum by (target, module) (rate({success}{RATE})) / "
                   f"sum by (target, module) (rate({probes}{RATE}))", "{{target}} {{module}}")],
        ),
        Stat().title("Up now").datasource(DATASOURCE).height(8).span(12)
        .with_target(query(f"netprobe_up{{{SEL}}}", "{{target}} {{module}}")),
        timeseries(
            "Probe results by reason", "ops",
            [query(f"sum by (result) (rate({probes}{RATE}))", "{{result}}")],
        ),
        Table().title("TLS certificate expiry (seconds left)").unit("s").datasource(DATASOURCE)
        .height(8).span(12)
        .with_target(query(f"netprobe_tls_cert_expiry_timestamp_seconds{{{SEL}}} - time()",
                           "{{target}} {{module}}")),
        Row("Latency, every prober"),
        Heatmap().title("Connect latency heatmap").unit("s").datasource(DATASOURCE).height(8)
        .span(12)
        .with_target(
            query(f"sum by (le) (rate(netprobe_connect_duration_seconds_bucket{{{SEL}}}{RATE}))"
                  f" or sum(rate(netprobe_connect_duration_seconds{{{SEL}}}{RATE}))", "{{le}}")
            .format("heatmap")
        ),
        timeseries(
            "Connect latency p50 / p90 / p99 (tcp, http, dns over TCP)", "s",
            quantiles("netprobe_connect_duration_seconds", "target, module",
                      "{{target}} {{module}}", (0.5, 0.9, 0.99)),
        ),
        timeseries(
            "Kernel handshake RTT p50 / p99 (TCP_INFO)", "s",
            quantiles("netprobe_tcp_handshake_rtt_seconds", "target, module",
                      "{{target}} {{module}}", (0.5, 0.99)),
            "The kernel's smoothed RTT right after the handshake: immune to exporter delays.",
        ),
        timeseries(
            "ICMP RTT p50 / p99", "s",
            quantiles("netprobe_icmp_rtt_seconds", "target, module", "{{target}} {{module}}",
                      (0.5, 0.99)),
        ),
        timeseries(
            "HTTP phases p99", "s",
            [query(quantile(0.99, "netprobe_http_duration_seconds", "target, module, phase"),
                   "{{target}} {{phase}}")],
            "resolve, connect, tls, processing (time to first byte), transfer",
        ),
        timeseries(
            "DNS lookup p50 / p99 (dns prober)", "s",
            quantiles("netprobe_dns_lookup_duration_seconds", "target, module",
                      "{{target}} {{module}}", (0.5, 0.99)),
        ),
        timeseries(
            "Whole probe p99", "s",
            quantiles("netprobe_probe_duration_seconds", "target, module",
                      "{{target}} {{module}}", (0.99,)),
        ),
        Row("Exporter"),
        timeseries(
            "Scheduler lag p99", "s",
            [query(quantile(0.99, "netprobe_scheduler_lag_seconds", "instance",
                            'job=~"$job"'), "{{instance}}")],
            "How late probes start: every latency figure is only as good as this.",
        ),
        timeseries(
            "Probes in flight and skipped", "short",
            [query('sum by (instance) (netprobe_inflight_probes{job=~"$job"})',
                   "in flight {{instance}}"),
             query('sum by (instance) (rate(netprobe_scheduler_skipped_probes_total'
                   f'{{job=~"$job"}}{RATE}))', "skipped/s {{instance}}", "B")],
        ),
        Stat().title("Config loaded and scrape health").datasource(DATASOURCE).height(8)
        .span(12)
        .with_target(query('min by (instance) (netprobe_config_last_reload_successful'
                           '{job=~"$job"})', "config {{instance}}"))
        .with_target(query('min by (instance) (up{job=~"$job"})', "up {{instance}}", "B")),
    ]  # fmt: skip
    for panel in out:
        dash = dash.with_row(panel) if isinstance(panel, Row) else dash.with_panel(panel)
    return dash


def build() -> str:
    dash = (
        Dashboard("netprobe-exporter")
        .uid("netprobe")
        .tags(["netprobe", "blackbox"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    built = panels(variables(dash)).build()
    return json.dumps(json.loads(JSONEncoder(sort_keys=True, indent=2).encode(built)),
                      indent=2, sort_keys=True) + "\n"  # fmt: skip


def main() -> int:
    text = build()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            print(f"{OUT} is not this script's output: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
