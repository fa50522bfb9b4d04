"""Continuous capacity: N loopback targets probed every I seconds by one exporter.

Reports probes/s achieved vs scheduled, exporter CPU seconds per 1,000 probes, scheduler lag
p50/p99 (from netprobe_scheduler_lag_seconds over the measured window), RSS (CPU and RSS of
the exporter and its probe workers together; ``--workers N`` sets --probe.workers), and, with
--scrape-every, the /metrics render time while Prometheus-sized scrapes run.

    python bench/continuous.py --targets 1000 --interval 1 --seconds 20
    python bench/continuous.py --targets 10000 --interval 1 --seconds 30 --scrape-every 1
"""

from __future__ import annotations

import argparse
import threading
import time

from common import (
    exporter,
    histogram,
    loopback_targets,
    percentile,
    quantile,
    table,
    total,
    write_json,
)

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--scrape-every", type=float, default=0.0, help="0: no background scrapes")
    ap.add_argument("--extra", action="append", default=[], help="extra exporter flag")
    ap.add_argument("--workers", type=int, default=None, help="--probe.workers (default: its)")
    args = ap.parse_args()
    if args.workers is not None:
        args.extra.append(f"--probe.workers={args.workers}")
    n, interval = args.targets, args.interval
    budget = args.warmup + args.seconds + 60
    with loopback_targets(n, budget) as ports:
        lines = [f"defaults:\n  interval: {interval}s\ntargets:"]
        lines += [f"  - address: 127.0.0.1:{p}" for p in ports]
        with exporter("\n".join(lines) + "\n", *args.extra) as ex:
            time.sleep(args.warmup)
            renders: list[float] = []
            stop = threading.Event()

            def scrape() -> None:
                while not stop.wait(args.scrape_every):
                    renders.append(ex.get("/metrics", OPENMETRICS)[1])

            scraper = threading.Thread(target=scrape, daemon=True)
            # The window runs from the end of one scrape to the end of another, so counters
            # and CPU are read at the same instants even when a scrape is slow.
            text0, _ = ex.get("/metrics")
            cpu0, t0 = ex.cpu_seconds(), time.monotonic()
            if args.scrape_every:
                scraper.start()
            time.sleep(args.seconds)
            stop.set()
            if args.scrape_every:
                scraper.join(120)
            text1, render_once = ex.get("/metrics")
            cpu1, t1 = ex.cpu_seconds(), time.monotonic()
            rss, pss = ex.rss_bytes(), ex.pss_bytes()
            processes = len(ex.pids())
    t0_text, t1_text = text0.decode(), text1.decode()
    probes = total(t1_text, "netprobe_probes_total") - total(t0_text, "netprobe_probes_total")
    ok = total(t1_text, "netprobe_probes_total", result="success") - total(
        t0_text, "netprobe_probes_total", result="success"
    )
    skipped = total(t1_text, "netprobe_scheduler_skipped_probes_total") - total(
        t0_text, "netprobe_scheduler_skipped_probes_total"
    )
    lag0 = histogram(t0_text, "netprobe_scheduler_lag_seconds")
    lag1 = histogram(t1_text, "netprobe_scheduler_lag_seconds")
    elapsed = t1 - t0
    result = {
        "targets": n,
        "interval_s": interval,
        "window_s": round(elapsed, 2),
        "scheduled_per_s": round(n / interval, 1),
        "achieved_per_s": round(probes / elapsed, 1),
        "success_ratio": round(ok / probes, 4) if probes else 0,
        "skipped": skipped,
        "cpu_s_per_1000_probes": round((cpu1 - cpu0) / probes * 1000, 4) if probes else None,
        "cpu_percent": round((cpu1 - cpu0) / elapsed * 100, 1),
        "lag_p50_ms": round(quantile(0.5, lag0, lag1) * 1000, 3),
        "lag_p99_ms": round(quantile(0.99, lag0, lag1) * 1000, 3),
        "rss_mb": round(rss / 2**20, 1),
        "pss_mb": round(pss / 2**20, 1),
        "processes": processes,
        "scrape_every_s": args.scrape_every,
        "scrapes": len(renders),
        "render_p50_ms": round(percentile(renders, 0.5) * 1000, 1) if renders else None,
        "render_p99_ms": round(percentile(renders, 0.99) * 1000, 1) if renders else None,
        "render_final_ms": round(render_once * 1000, 1),
        "exposition_bytes": len(text1),
    }
    name = f"continuous-{n}-{interval:g}s" + ("-scraped" if args.scrape_every else "")
    path = write_json(name, result)
    print(table([["metric", "value"], *[[k, v] for k, v in result.items()]]))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
