"""Scrape cost: /metrics render time at N targets, text, OpenMetrics and protobuf, plain and gzip.

Targets are probed every --interval seconds; after a warm-up in which every target has been
probed, the benchmark scrapes --scrapes times per format, one after another, and reports the
time to the last byte (p50/p99) and the size.

    python bench/scrape.py --targets 1000
    python bench/scrape.py --targets 10000
"""

from __future__ import annotations

import argparse
import gzip
import time
import urllib.request

from common import exporter, loopback_targets, percentile, table, write_json

FORMATS = {
    "text": "text/plain;version=0.0.4",
    "openmetrics": "application/openmetrics-text;version=1.0.0",
    # what Prometheus sends with native histograms enabled
    "protobuf": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited;q=0.8,text/plain;version=0.0.4;q=0.2",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    n = args.targets
    rows: list[list[object]] = [
        ["format", "gzip", "p50 ms", "p99 ms", "max ms", "exporter CPU ms/scrape", "MB"]
    ]
    result: dict[str, object] = {"targets": n, "interval_s": args.interval}
    with loopback_targets(n, args.interval * 2 + args.scrapes * 8 + 120) as ports:
        lines = [f"defaults:\n  interval: {args.interval}s\ntargets:"]
        lines += [f"  - address: 127.0.0.1:{p}" for p in ports]
        with exporter("\n".join(lines) + "\n") as ex:
            time.sleep(args.interval + 1)  # every target probed at least once
            result["rss_before_scrapes_mb"] = round(ex.rss_bytes() / 2**20, 1)
            for fmt, accept in FORMATS.items():
                for gz in (False, True):
                    times, size = [], 0
                    cpu0 = ex.cpu_seconds()
                    for _ in range(args.scrapes):
                        req = urllib.request.Request(ex.base + "/metrics")
                        req.add_header("Accept", accept)
                        if gz:
                            req.add_header("Accept-Encoding", "gzip")
                        t0 = time.perf_counter()
                        with urllib.request.urlopen(req, timeout=60) as resp:
                            body = resp.read()
                            kind = resp.headers.get("Content-Type", "")
                        if fmt == "protobuf" and not kind.startswith("application/vnd.google"):
                            raise RuntimeError(f"asked for protobuf, got {kind}")
                        times.append(time.perf_counter() - t0)
                        size = len(body)
                        if gz:
                            gzip.decompress(body)  # must be valid gzip
                    # everything the exporter did meanwhile, its probing too
                    cpu_ms = (ex.cpu_seconds() - cpu0) / args.scrapes * 1000
                    key = f"{fmt}{'-gzip' if gz else ''}"
                    result[key] = {
                        "p50_ms": round(percentile(times, 0.5) * 1000, 1),
                        "p99_ms": round(percentile(times, 0.99) * 1000, 1),
                        "max_ms": round(max(times) * 1000, 1),
                        "exporter_cpu_ms": round(cpu_ms, 1),
                        "bytes": size,
                    }
                    rows.append([fmt, "yes" if gz else "no", *[
                        result[key][k]  # type: ignore[index]
                        for k in ("p50_ms", "p99_ms", "max_ms", "exporter_cpu_ms")
                    ], round(size / 1e6, 2)])  # fmt: skip
            result["rss_mb"] = round(ex.rss_bytes() / 2**20, 1)
    path = write_json(f"scrape-{n}", result)
    print(f"/metrics render, {n} targets (every target probed), {args.scrapes} scrapes each")
    print(table(rows))
    print(f"exporter RSS {result['rss_before_scrapes_mb']} MB before the scrapes, "
          f"{result['rss_mb']} MB after; written: {path}")  # fmt: skip


if __name__ == "__main__":
    main()
