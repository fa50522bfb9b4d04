"""A real Prometheus (2.42, ``--enable-feature=native-histograms``) scrapes the exporter over
the protobuf format: the connect histogram arrives native, and ``histogram_quantile`` over it
agrees with the exporter's own observations within the bucket resolution."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from netprobe_exporter import exposition
from tests.support import procutil
from tests.support.procutil import Processes, wait_for
from tests.support.protobuf import read_families

pytestmark = pytest.mark.prometheus


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?" + urllib.parse.urlencode(params)
    resp = procutil.http(url, timeout=5)
    assert resp.status == 200, resp
    doc = json.loads(resp.body)
    assert doc["status"] == "success", doc
    return doc["data"]


def _exporter_histogram(port: int, target: str) -> Any:
    resp = procutil.http(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": exposition.PROTOBUF.content_type},
    )
    assert resp.status == 200, resp
    for fam in read_families(resp.body):
        if fam.name == "netprobe_connect_duration_seconds":
            for m in fam.metric:
                if ("target", target) in {(p.name, p.value) for p in m.label}:
                    return m.histogram
    raise AssertionError(f"no connect histogram for {target}")


def _quantile_bounds(first: Any, last: Any, q: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the native bucket holding the ``q`` quantile of what the
    histogram ``last`` added to ``first`` (two samples as Prometheus' query API writes them:
    buckets as [boundary rule, lower, upper, count])."""

    def counts(h: Any) -> dict[tuple[float, float], float]:
        return {(float(lo), float(hi)): float(n) for _, lo, hi, n in h.get("buckets", [])}

    before = counts(first)
    added = {k: n - before.get(k, 0.0) for k, n in counts(last).items()}
    rank = q * sum(added.values())
    seen = 0.0
    for bounds in sorted(added, key=lambda b: b[1]):
        seen += added[bounds]
        if seen >= rank:
            return bounds
    raise AssertionError("nothing observed between the scrapes")


def test_prometheus_reads_native_histograms_over_protobuf(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    procutil.require_binary("prometheus")
    started = time.monotonic()
    target = f"127.0.0.1:{listener}"
    config = tmp_path / "netprobe.yml"
    config.write_text(f"defaults:\n  interval: 100ms\ntargets:\n  - address: {target}\n")
    exporter = procs.start_exporter(f"--config.file={config}")
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: netprobe\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    base, log = procutil.start_prometheus(
        procs, prom_config, tmp_path, "--enable-feature=native-histograms"
    )
    selector = f'netprobe_connect_duration_seconds{{target="{target}"}}'

    def native() -> Any:
        result = _api(base, "/api/v1/query", query=selector)["result"]
        return result[0] if result and "histogram" in result[0] else None

    sample = wait_for(native, 30, "a native histogram sample in prometheus", interval=0.5)
    assert float(sample["histogram"][1]["count"]) > 0, sample
    assert sample["histogram"][1]["buckets"], sample  # native buckets, not just count and sum
    # classic series are not stored beside a native histogram by 2.42
    classic = _api(base, "/api/v1/query", query=f"{selector.replace('{', '_count{')}")
    assert classic["result"] == [], classic

    query = f"histogram_quantile(0.9, rate({selector}[1m]))"

    def estimate(at: str) -> float | None:
        result = _api(base, "/api/v1/query", query=query, time=at)["result"]
        if not result:
            return None  # until two scrapes are in the window
        value = float(result[0]["value"][1])
        return None if value != value else value

    def settled() -> bool:  # some scrapes in the window (each adds about 10 connects)
        got = _api(base, "/api/v1/query", query=f"count_over_time({selector}[1m])")["result"]
        return bool(got) and float(got[0]["value"][1]) >= 6

    wait_for(settled, 20, "six scrapes of the native histogram", interval=0.5)
    # one evaluation time for both queries, so the estimate and the stored samples it is made
    # from cover exactly the same scrapes
    at = str(time.time())
    got = wait_for(lambda: estimate(at), 10, "histogram_quantile over the native histogram",
                   interval=0.5)  # fmt: skip
    stored = _api(base, "/api/v1/query", query=f"{selector}[1m]", time=at)["result"]
    scraped = [h for _, h in stored[0]["histograms"]]
    # what the exporter sent at the window's first and last scrape: their difference is what
    # it observed of the target between them, and rate() is made of exactly that
    low, high = _quantile_bounds(scraped[0], scraped[-1], 0.9)
    # Prometheus interpolates in float64 as we do, but not in the same order: allow an ulp
    slack = 1e-12 * high
    assert low - slack < got <= high + slack, (got, low, high, log.read_text()[-2000:])
    # and the scrapes are the exporter's own observations: it has seen at least as many since
    last = _exporter_histogram(exporter.port, target)
    assert last.sample_count >= float(scraped[-1]["count"]) > float(scraped[0]["count"])
    assert time.monotonic() - started < 60
