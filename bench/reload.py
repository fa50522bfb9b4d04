"""Reload of a big config: how long it takes and whether probing and serving stay on time.

An exporter probes --live loopback targets every second; the config is then rewritten with
--targets more (127.1.x.y addresses, nobody listening, probed once an hour so that probing them
is cheap) and reloaded by POST /-/reload. Reports the reload's duration, the config's size,
scheduler lag p50/p99 and skipped probes over the window around the reload (from the
exporter's own metrics), and /-/healthy answer times polled every 20 ms meanwhile.

    python bench/reload.py --targets 50000
    python bench/reload.py --targets 200000   # over limits.max_targets: parsed, then rejected
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.error
import urllib.request

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


def config_text(live_ports: list[int], big: int) -> str:
    lines = ["defaults:\n  interval: 1s\ntargets:"]
    lines += [f"  - address: 127.0.0.1:{p}" for p in live_ports]
    lines += [
        f"  - address: 127.1.{i // 250}.{i % 250 + 1}:9\n    interval: 1h" for i in range(big)
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=50_000, help="targets the reload adds")
    ap.add_argument("--live", type=int, default=500, help="loopback targets probed every 1 s")
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--after", type=float, default=3.0, help="seconds measured after the reload")
    args = ap.parse_args()
    with loopback_targets(args.live, 300) as ports, exporter(config_text(ports, 0)) as ex:
        time.sleep(args.warmup)
        big = config_text(ports, args.targets)
        ex.config.write_text(big)
        healthy: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.02):
                healthy.append(ex.get("/-/healthy")[1])

        text0 = ex.get("/metrics")[0].decode()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        req = urllib.request.Request(ex.base + "/-/reload", data=b"", method="POST")
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                status = resp.status
        except urllib.error.HTTPError as refused:  # over limits.max_targets: rejected whole
            status = refused.code
        reload_s = time.perf_counter() - t0
        time.sleep(args.after)
        stop.set()
        poller.join()
        text1 = ex.get("/metrics")[0].decode()
    lag0 = histogram(text0, "netprobe_scheduler_lag_seconds")
    lag1 = histogram(text1, "netprobe_scheduler_lag_seconds")
    skipped = total(text1, "netprobe_scheduler_skipped_probes_total") - total(
        text0, "netprobe_scheduler_skipped_probes_total"
    )
    result = {
        "targets_after": args.targets + args.live,
        "config_mb": round(len(big.encode()) / 1e6, 2),
        "reload_status": status,
        "reload_s": round(reload_s, 2),
        "lag_p50_ms": round(quantile(0.5, lag0, lag1) * 1000, 2),
        "lag_p99_ms": round(quantile(0.99, lag0, lag1) * 1000, 2),
        "probes_started": total(text1, "netprobe_scheduler_lag_seconds_count")
        - total(text0, "netprobe_scheduler_lag_seconds_count"),
        "skipped": skipped,
        "healthy_p99_ms": round(percentile(healthy, 0.99) * 1000, 1),
        "healthy_max_ms": round(max(healthy, default=float("nan")) * 1000, 1),
        "reload_successful": total(text1, "netprobe_config_last_reload_successful"),
    }
    path = write_json(f"reload-{args.targets}", result)
    print(table([["metric", "value"], *[[k, v] for k, v in result.items()]]))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
