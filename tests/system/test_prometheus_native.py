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
from netprobe_exporter.nhist import upper_bound
from tests.support import procutil
from tests.support.procutil import Processes, wait_for
from tests.support.protobuf import native_counts, read_families

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


def _quantile_bucket(first: Any, last: Any, q: float) -> int:
    """The native bucket index holding the ``q`` quantile of what ``last`` added to ``first``
    (two snapshots of one histogram at the same schema)."""
    assert first.schema == last.schema
    before = native_counts(first)
    added = {k: n - before.get(k, 0) for k, n in native_counts(last).items()}
    rank = q * sum(added.values())
    seen = 0
    for index in sorted(added):
        seen += added[index]
        if seen >= rank:
            return index
    raise AssertionError("nothing observed between the snapshots")


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
    first = _exporter_histogram(exporter.port, target)  # about when Prometheus' first scrape was
    assert float(sample["histogram"][1]["count"]) > 0, sample
    assert sample["histogram"][1]["buckets"], sample  # native buckets, not just count and sum
    # classic series are not stored beside a native histogram by 2.42
    classic = _api(base, "/api/v1/query", query=f"{selector.replace('{', '_count{')}")
    assert classic["result"] == [], classic

    query = f"histogram_quantile(0.9, rate({selector}[1m]))"

    def estimate() -> float | None:
        result = _api(base, "/api/v1/query", query=query)["result"]
        if not result:
            return None  # until two scrapes are in the window
        value = float(result[0]["value"][1])
        return None if value != value else value

    def settled() -> bool:  # some scrapes in the window (each adds about 10 connects)
        got = _api(base, "/api/v1/query", query=f"count_over_time({selector}[1m])")["result"]
        return bool(got) and float(got[0]["value"][1]) >= 6

    wait_for(settled, 20, "six scrapes of the native histogram", interval=0.5)
    got = wait_for(estimate, 10, "histogram_quantile over the native histogram", interval=0.5)
    last = _exporter_histogram(exporter.port, target)
    index, schema = _quantile_bucket(first, last, 0.9), last.schema
    # the 0.9 quantile of the connects the exporter saw over (about) Prometheus' window lies in
    # bucket ``index``; Prometheus' estimate, from its scrapes' slightly different window, in
    # that bucket or the next either side
    low, high = upper_bound(index - 2, schema), upper_bound(index + 1, schema)
    assert low < got <= high, (got, low, high, log.read_text()[-2000:])
    assert time.monotonic() - started < 60
