"""Continuous traceroute at scale: N targets traced every I seconds over a real routed path.

    python bench/traceroute.py                       # 100 targets every 10 s, 60 s measured
    python bench/traceroute.py --targets 100 --interval 10 --seconds 60 --protocol udp

Builds the namespaces of tests/support/netns.RouterChain (client - r1 - r2 - r3 - target, r2
silent: it drops its time-exceeded messages, so every probe waits a hop timeout for hop 2), puts
N addresses on the target namespace's loopback (half IPv4, half IPv6 by default) and runs one
exporter inside the client namespace with the default traceroute options (max_hops 30, 3
packets per hop, 1 s hop timeout). All traffic stays in those namespaces, which are deleted at
the end. Over the measured window it reports probes/s achieved vs scheduled, results, probe
duration p50/p99, scheduler lag p50/p99 (``netprobe_scheduler_lag_seconds``), exporter CPU (%
of one core and seconds per 1,000 probes), RSS, and the /metrics series per target. Needs root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    free_port,
    histogram,
    quantile,
    table,
    total,
    tree_cpu_seconds,
    tree_rss_bytes,
    write_json,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.netns import RouterChain

#: the whole run's bound on top of warmup and window: setup, start, scrapes, teardown
SLACK_SECONDS = 120


def _addresses(count: int, v6_share: float) -> list[str]:
    v6 = round(count * v6_share)
    return [f"10.201.100.{1 + i}" for i in range(count - v6)] + [
        f"fd00:201:100::{1 + i:x}" for i in range(v6)
    ]


def _place(chain: RouterChain, addresses: list[str]) -> None:
    """The target namespace answers on every address; r3 routes them to it."""
    lines = [f"addr add {a}/{128 if ':' in a else 32} dev lo" for a in addresses]
    subprocess.run(["ip", "-n", chain.ns("target"), "-batch", "-"], input="\n".join(lines),
                   text=True, check=True, timeout=30)  # fmt: skip
    for prefix, via in (("10.201.100.0/24", chain.ip(4, 2)),
                        ("fd00:201:100::/64", chain.ip(4, 2, v6=True))):  # fmt: skip
        subprocess.run(["ip", "-n", chain.ns("r3"), "route", "add", prefix, "via", via],
                       check=True, timeout=10)  # fmt: skip


def _config(addresses: list[str], interval: float, protocol: str) -> str:
    lines = [
        "modules:",
        "  trace:",
        "    prober: traceroute",
        f"    timeout: {max(interval - 1, 1):g}s",
        f"    traceroute: {{protocol: {protocol}, preferred_ip_protocol: ip4}}",
        f"defaults:\n  interval: {interval:g}s\n  module: trace",
        "targets:",
    ]
    return "\n".join(lines + [f'  - address: "{a}"' for a in addresses]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--protocol", choices=("udp", "icmp", "tcp"), default="udp")
    ap.add_argument("--v6-share", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=None,
                    help="--probe.workers (default: the exporter's, one per CPU)")  # fmt: skip
    args = ap.parse_args()
    if not 1 <= args.targets <= 250 or args.seconds > 1800:
        sys.exit("--targets must be 1-250 and --seconds at most 1800")
    started = time.monotonic()
    bound = args.warmup + args.seconds + SLACK_SECONDS
    addresses = _addresses(args.targets, args.v6_share)
    chain = RouterChain.create()
    try:
        _place(chain, addresses)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yml"
            config.write_text(_config(addresses, args.interval, args.protocol))
            port = free_port()
            log = (Path(tmp) / "exporter.log").open("wb")
            # ip netns exec execs the command: the exporter keeps this pid
            proc = subprocess.Popen(
                ["ip", "netns", "exec", chain.ns("client"), sys.executable, "-m",
                 "netprobe_exporter", f"--config.file={config}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                 *([] if args.workers is None else [f"--probe.workers={args.workers}"])],
                stdout=log, stderr=log,
            )  # fmt: skip
            try:
                result = _measure(chain, proc, port, args, started + bound)
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                log.close()
    finally:
        chain.destroy()
    path = write_json(f"traceroute-{args.targets}-{args.protocol}", result)
    print(table([["metric", "value"], *[[k, v] for k, v in result.items()]]))
    print(f"written: {path}")


def _measure(
    chain: RouterChain, proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace,
    deadline: float,
) -> dict[str, object]:  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> tuple[str, float]:
        t0 = time.monotonic()
        status, body = chain.fetch(url, timeout=30.0)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body, time.monotonic() - t0

    start_by = time.monotonic() + 30
    while True:
        try:
            scrape()
            break
        except (AssertionError, RuntimeError):
            if time.monotonic() > start_by or proc.poll() is not None:
                sys.exit("exporter did not start")
            time.sleep(0.5)
    time.sleep(args.warmup)
    text0, _ = scrape()
    cpu0, t0 = tree_cpu_seconds(proc.pid), time.monotonic()
    time.sleep(min(args.seconds, max(deadline - time.monotonic() - 30, 1)))
    cpu1, t1 = tree_cpu_seconds(proc.pid), time.monotonic()
    text1, scrape_s = scrape()
    rss = tree_rss_bytes(proc.pid)

    def delta(name: str, **labels: str) -> float:
        return total(text1, name, **labels) - total(text0, name, **labels)

    elapsed = t1 - t0
    probes = delta("netprobe_probes_total")
    lag0, lag1 = (histogram(t, "netprobe_scheduler_lag_seconds") for t in (text0, text1))
    dur0, dur1 = (histogram(t, "netprobe_probe_duration_seconds") for t in (text0, text1))
    lines = [x for x in text1.splitlines() if x and not x.startswith("#")]
    per_target = sum(1 for x in lines if 'module="trace"' in x) / args.targets
    return {
        "targets": args.targets, "interval_s": args.interval, "protocol": args.protocol,
        "workers": "default" if args.workers is None else args.workers,
        "window_s": round(elapsed, 1),
        "scheduled_per_s": round(args.targets / args.interval, 2),
        "achieved_per_s": round(probes / elapsed, 2),
        "success_ratio": round(delta("netprobe_probes_total", result="success") / max(probes, 1),
                               4),
        "probe_duration_mean_s": round(
            delta("netprobe_probe_duration_seconds_sum") / max(probes, 1), 3
        ),
        "probe_duration_p50_s": round(quantile(0.5, dur0, dur1), 3),
        "probe_duration_p99_s": round(quantile(0.99, dur0, dur1), 3),
        "lag_p50_ms": round(quantile(0.5, lag0, lag1) * 1000, 3),
        "lag_p99_ms": round(quantile(0.99, lag0, lag1) * 1000, 3),
        "cpu_pct_of_one_core": round((cpu1 - cpu0) / elapsed * 100, 2),
        "cpu_s_per_1000_probes": round((cpu1 - cpu0) / max(probes, 1) * 1000, 3),
        "rss_mb": round(rss / 2**20, 1),
        "series_per_target": round(per_target, 1),
        "scrape_s": round(scrape_s, 3),
    }  # fmt: skip


if __name__ == "__main__":
    main()
