"""Status page cost: time to last byte of the page and its JSON at N targets, p50/p99.

N loopback targets (a fifth of them on closed ports, so the page has down rows to sort first)
are probed every --interval seconds; after every target has been probed, each request below
is made --requests times, one after another: the HTML shell, the JSON of the first page
(100 rows), a deep page, a search, a label and state filter, 500 rows, and one target's JSON.
Before that, scheduler lag over a window with no page open and over one with the first page
asked every second (four browsers at the page's 5 s refresh) says whether building the pages
held the reactor.

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
    ap.add_argument("--window", type=float, default=30.0, help="seconds per lag window")
    args = ap.parse_args()
    n = args.targets
    closed = n // 5
    rows: list[list[object]] = [["request", "p50 ms", "p99 ms", "max ms", "KB", "rows"]]
    result: dict[str, object] = {"targets": n, "interval_s": args.interval}
    budget = args.interval * 2 + args.window * 2 + args.requests * 6 + 180
    with loopback_targets(n - closed, budget) as ports:
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
            window = args.window

            def lag_over(every: float | None) -> tuple[float, float]:
                """Lag p50/p99 (ms) over ``window`` s, the first page asked every ``every`` s."""
                before = histogram(ex.get("/metrics")[0].decode(), lag)
                end = time.monotonic() + window
                while time.monotonic() < end:
                    if every is None:
                        time.sleep(min(1.0, max(end - time.monotonic(), 0)))
                        continue
                    ex.get("/status.json")
                    time.sleep(every)
                after = histogram(ex.get("/metrics")[0].decode(), lag)
                return (round(quantile(0.5, before, after) * 1000, 2),
                        round(quantile(0.99, before, after) * 1000, 2))  # fmt: skip

            quiet, open_pages = lag_over(None), lag_over(1.0)
            result["lag_quiet_ms"], result["lag_open_pages_ms"] = quiet, open_pages
            cpu_before = ex.cpu_seconds()
            asked = 0
            for name, path in requests.items():
                times, size, count = [], 0, 0
                for _ in range(args.requests):
                    asked += 1
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
            result["cpu_ms_per_request"] = round((ex.cpu_seconds() - cpu_before) / asked * 1000, 1)
            result["rss_mb"] = round(ex.rss_bytes() / 2**20, 1)
    path = write_json(f"status-page-{n}", result)
    print(f"status page, {n} targets ({closed} refused), {args.requests} requests each")
    print(table(rows))
    print(
        f"scheduler lag p50/p99 over {args.window:g} s: {quiet[0]}/{quiet[1]} ms with no page"
        f" open, {open_pages[0]}/{open_pages[1]} ms with the first page asked every second;"
        f" exporter CPU per request above (probing included) {result['cpu_ms_per_request']} ms"
    )
    print(f"exporter RSS {result['rss_mb']} MB; written: {path}")


if __name__ == "__main__":
    main()
