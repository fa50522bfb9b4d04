"""Soak: many continuous targets, half black-holed, for minutes; nothing may leak or be lost.

    python bench/soak.py                       # 10,000 targets every 10 s for 10 minutes
    python bench/soak.py --targets 2000 --minutes 1

Half the targets are loopback listeners (connects succeed); the other half are addresses routed
into a network namespace this benchmark creates and removes again, where a blackhole route drops
every SYN, so their connects time out. A scraper reads ``/metrics`` every --scrape seconds as
Prometheus would, and every sample records the exporter's open file descriptors and RSS.

After --warmup, over the measured window it reports:
- file descriptors and RSS: first, last, min, max, and the RSS slope (least squares, MB/minute);
- probes: each target is due once per interval, so over a window W every target must gain
  W/I probes, give or take one (its slot may fall either side of a window edge, and the
  counters are read while the scrape renders). The check is per target: min and max gain,
  targets outside [W/I - 1, W/I + 1], skipped slots, and results by class for each half.
Needs root (network namespace) and iproute2.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import exporter, loopback_targets, rss_bytes, samples, total, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.netns import RoutedNamespace


def per_target(text: str) -> tuple[dict[str, float], dict[str, Counter[str]]]:
    """Probes per target, and per target the counts by result."""
    counts: dict[str, float] = defaultdict(float)
    by_result: dict[str, Counter[str]] = defaultdict(Counter)
    for name, labels, value in samples(text):
        if name != "netprobe_probes_total":
            continue
        target, result = labels.get("target"), labels.get("result")
        if target is not None and result is not None:
            counts[target] += value
            by_result[target][result] += int(value)
    return counts, by_result


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (v - my) for t, v in points) / var if var else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10_000, help="total; half are black-holed")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=2.0, help="the module's connect timeout")
    ap.add_argument("--minutes", type=float, default=10.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the window")
    ap.add_argument("--scrape", type=float, default=15.0, help="scrape every this many seconds")
    ap.add_argument("--sample", type=float, default=5.0, help="fd/RSS sample period")
    args = ap.parse_args()
    live_n = args.targets // 2
    dead_n = args.targets - live_n
    window = args.minutes * 60
    ns = RoutedNamespace.create()
    try:
        first = int(ns.blackhole_ip.rsplit(".", 1)[1])
        prefix = ns.blackhole_ip.rsplit(".", 1)[0]
        ips = [f"{prefix}.{first + i}" for i in range(14)]  # .17 to .30 of the /28
        dead = [f"{ips[i % len(ips)]}:{20000 + i // len(ips)}" for i in range(dead_n)]
        budget = args.warmup + window + 120
        with loopback_targets(live_n, budget) as ports:
            live = [f"127.0.0.1:{p}" for p in ports]
            config = (
                f"defaults:\n  interval: {args.interval:g}s\n  module: soak\n"
                f"modules:\n  soak:\n    prober: tcp\n    timeout: {args.timeout:g}s\n"
                f"limits:\n  max_concurrent_probes: 4096\ntargets:\n"
                + "".join(f"  - address: {a}\n" for a in live + dead)
            )
            with exporter(config) as ex:
                pid = ex.proc.pid
                stop = threading.Event()
                scrapes: list[tuple[float, str]] = []
                resources: list[tuple[float, int, int]] = []
                start = time.monotonic()
                window_start = start + args.warmup
                window_end = window_start + window

                def scraper() -> None:
                    while not stop.is_set():
                        t_begin = time.monotonic()
                        text = ex.get("/metrics")[0].decode()
                        scrapes.append((t_begin, text))
                        stop.wait(max(0.0, args.scrape - (time.monotonic() - t_begin)))

                thread = threading.Thread(target=scraper, daemon=True)
                thread.start()
                while time.monotonic() < window_end:
                    resources.append((time.monotonic(), open_fds(pid), rss_bytes(pid)))
                    if ex.proc.poll() is not None:
                        raise RuntimeError("the exporter died during the soak")
                    time.sleep(args.sample)
                stop.set()
                thread.join(120)
                # the last scrape that began after the window's end... or the newest one
                final_t = time.monotonic()
                final = ex.get("/metrics")[0].decode()
                scrapes.append((final_t, final))
                exited = ex.proc.poll()
    finally:
        ns.destroy()
    if exited is not None:
        raise RuntimeError(f"the exporter exited with {exited}")

    begin = min(scrapes, key=lambda s: abs(s[0] - window_start))
    end = scrapes[-1]
    measured = end[0] - begin[0]
    due = measured / args.interval
    c0, _ = per_target(begin[1])
    c1, results = per_target(end[1])
    gains = {t: c1[t] - c0.get(t, 0.0) for t in c1}
    outside = [t for t, g in gains.items() if not (due - 1 - 1e-9 <= g <= due + 1 + 1e-9)]
    live_set = set(live)
    live_results: Counter[str] = Counter()
    dead_results: Counter[str] = Counter()
    for t, r in results.items():
        (live_results if t in live_set else dead_results).update(r)
    skipped = total(end[1], "netprobe_scheduler_skipped_probes_total") - total(
        begin[1], "netprobe_scheduler_skipped_probes_total"
    )
    in_window = [r for r in resources if r[0] >= window_start]
    fds = [f for _, f, _ in in_window]
    rss = [m for _, _, m in in_window]
    rss_slope = slope_per_minute([(t, m / 2**20) for t, _, m in in_window])
    fd_slope = slope_per_minute([(t, float(f)) for t, f, _ in in_window])
    summary = {
        "targets": args.targets,
        "black_holed": dead_n,
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "window_s": round(measured, 1),
        "scrapes": len(scrapes),
        "fds_first_last_min_max": [fds[0], fds[-1], min(fds), max(fds)],
        "fd_slope_per_min": round(fd_slope, 2),
        "rss_mb_first_last_min_max": [
            round(x / 2**20, 1) for x in (rss[0], rss[-1], min(rss), max(rss))
        ],
        "rss_slope_mb_per_min": round(rss_slope, 3),
        "probes_scheduled_in_window": round(due * len(gains)),
        "probes_counted_in_window": int(sum(gains.values())),
        "per_target_gain_min_max": [min(gains.values()), max(gains.values())],
        "per_target_expected": round(due, 2),
        "targets_outside_expected": len(outside),
        "targets_seen": len(gains),
        "skipped_slots": skipped,
        "live_results_since_start": {k: v for k, v in live_results.items() if v},
        "black_holed_results_since_start": {k: v for k, v in dead_results.items() if v},
    }
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key.rjust(width)}  {value}")
    path = write_json(f"soak-{args.targets}", summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
