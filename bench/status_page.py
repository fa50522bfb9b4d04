"""Status page cost: time to last byte of the page and its JSON at N targets, p50/p99.

N loopback targets (a fifth of them on closed ports, so the page has down rows to sort first)
are probed every --interval seconds; after every target has been probed, each request below
is made --requests times, one after another: the HTML shell, the JSON of the first page
(100 rows), a deep page, a search, a label and state filter, 500 rows, and one target's JSON.
Scheduler lag while they run, against lag over a quiet window just before, says whether
building the pages held the reactor.

    python bench/status_page.py --targets 10000
"""

from __future__ import annotations

import argparse
import json
import time

from common import (
    exporter,
    histogram,
    loopback_targets,
    percentile,
    quantile,
    table,
    write_json,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args()
    n = args.targets
    closed = n // 5
    rows: list[list[object]] = [["request", "p50 ms", "p99 ms", "max ms", "KB", "rows"]]
    result: dict[str, object] = {"targets": n, "interval_s": args.interval}
    with loopback_targets(n - closed, args.interval * 2 + args.requests * 6 + 180) as ports:
        lines = [f"defaults:\n  interval: {args.interval}s\ntargets:"]
        lines += [f"  - {{address: '127.0.0.1:{p}', labels: {{team: t{p % 7}}}}}" for p in ports]
        lines += [f"  - address: 127.0.0.2:{10000 + i}" for i in range(closed)]
        with exporter("\n".join(lines) + "\n") as ex:
            time.sleep(args.interval + 2)  # every target probed at least once
            first = json.loads(ex.get("/status.json")[0])
            some_id = first["rows"][0]["id"]
            deep = max(first["pages"] // 2, 1)
            requests = {
                "/ (HTML shell)": "/",
                "status.json first page": "/status.json",
                f"status.json page {deep}": f"/status.json?page={deep}",
                "status.json search": "/status.json?q=127.0.0.1%3A4",
                "status.json label+state": "/status.json?label=team%3Dt3&state=up",
                "status.json 500 rows": "/status.json?per_page=500&page=3",
                "target.json": f"/target.json?id={some_id}",
            }
            lag = "netprobe_scheduler_lag_seconds"
            quiet_before = histogram(ex.get("/metrics")[0].decode(), lag)
            started = time.monotonic()
            time.sleep(min(args.requests * 0.5, 30))  # the same exporter with nobody looking
            quiet_after = histogram(ex.get("/metrics")[0].decode(), lag)
            quiet_s = time.monotonic() - started
            lag_before = quiet_after
            started = time.monotonic()
            for name, path in requests.items():
                times, size, count = [], 0, 0
                for _ in range(args.requests):
                    body, seconds = ex.get(path)
                    times.append(seconds)
                    size = len(body)
                if path.startswith("/status.json"):
                    count = len(json.loads(body)["rows"])
                result[name] = {
                    "p50_ms": round(percentile(times, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(times, 0.99) * 1000, 1),
                    "max_ms": round(max(times) * 1000, 1),
                    "bytes": size,
                }
                stats = result[name]
                assert isinstance(stats, dict)
                rows.append([name, stats["p50_ms"], stats["p99_ms"], stats["max_ms"],
                             round(size / 1024, 1), count or ""])  # fmt: skip
            lag_after = histogram(ex.get("/metrics")[0].decode(), lag)
            busy_s = time.monotonic() - started
            result["quiet_lag_p50_ms"] = round(quantile(0.5, quiet_before, quiet_after) * 1000, 2)
            result["quiet_lag_p99_ms"] = round(quantile(0.99, quiet_before, quiet_after) * 1000, 2)
            result["quiet_s"], result["busy_s"] = round(quiet_s, 1), round(busy_s, 1)
            result["lag_p50_ms"] = round(quantile(0.5, lag_before, lag_after) * 1000, 2)
            result["lag_p99_ms"] = round(quantile(0.99, lag_before, lag_after) * 1000, 2)
            result["rss_mb"] = round(ex.rss_bytes() / 2**20, 1)
    path = write_json(f"status-page-{n}", result)
    print(f"status page, {n} targets ({closed} refused), {args.requests} requests each")
    print(table(rows))
    print(
        f"scheduler lag p50/p99: {result['lag_p50_ms']}/{result['lag_p99_ms']} ms while the pages"
        f" were requested ({result['busy_s']} s), {result['quiet_lag_p50_ms']}/"
        f"{result['quiet_lag_p99_ms']} ms with none ({result['quiet_s']} s just before)"
    )
    print(f"exporter RSS {result['rss_mb']} MB; written: {path}")


if __name__ == "__main__":
    main()
