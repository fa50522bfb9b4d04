"""Continuous ICMP at scale: N targets pinged every I seconds, some of them never answering.

Runs inside the namespace of a ``tundelay`` rig: the answering targets are loopback addresses
(127.0.X.Y, all of which answer inside the namespace), the silent ones are 198.18.6.X, which the
rig's TUN device swallows. Reports probes/s achieved vs scheduled, loss per class of target
(from ``netprobe_probes_total{result="timeout"}``), RTT p50/p99 (from
``netprobe_icmp_rtt_seconds``), scheduler lag p50/p99, CPU and RSS. Needs root.

With ``--packets P`` each probe sends P echoes ``--packet-interval`` apart: loss per class is
then packet loss (``netprobe_packets_{sent,lost}_total``), every reply is in the RTT
histogram, and packets/s and CPU per 1,000 packets are shown beside the probe figures.

    python bench/icmp.py --targets 1000 --silent 50 --interval 1 --seconds 20
    python bench/icmp.py --targets 1000 --silent 50 --interval 1 --seconds 20 --packets 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    free_port,
    histogram,
    quantile,
    samples,
    table,
    tree_cpu_seconds,
    tree_rss_bytes,
    write_json,
)
from tundelay import DelayRig

BUCKETS = [0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1]


def merged_histogram(text: str, name: str, prefix: str) -> list[tuple[float, float]]:
    """Sum a labelled histogram's buckets over the series whose target starts with ``prefix``."""
    sums: dict[float, float] = {}
    for n, labels, v in samples(text):
        if n == f"{name}_bucket" and labels.get("target", "").startswith(prefix):
            le = float(labels["le"])  # "+Inf" reads as inf
            sums[le] = sums.get(le, 0.0) + v
    return sorted(sums.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--silent", type=int, default=50, help="targets that never answer")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--packets", type=int, default=1, help="echo requests per probe")
    ap.add_argument("--packet-interval", type=float, default=0.1, help="seconds between them")
    args = ap.parse_args()
    answering = args.targets - args.silent
    addresses = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(answering)]
    silent = [f"198.18.6.{10 + i}" for i in range(args.silent)]
    buckets = "[" + ", ".join(str(b) for b in BUCKETS) + "]"
    packets = ""
    if args.packets > 1:
        packets = f", packets: {args.packets}, packet_interval: {args.packet_interval}s"
    lines = [
        f"modules:\n  ping:\n    prober: icmp\n    icmp: {{preferred_ip_protocol: ip4{packets}}}",
        f"defaults:\n  interval: {args.interval}s\n  module: ping\n  buckets: {buckets}",
        "targets:",
    ] + [f"  - address: {a}" for a in addresses + silent]
    with DelayRig({}, max_seconds=args.warmup + args.seconds + 120) as rig, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        config = Path(tmp) / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        port = free_port()
        proc = subprocess.Popen(
            [*rig.exec_prefix(), sys.executable, "-m", "netprobe_exporter",
             f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
        )  # fmt: skip
        try:

            def scrape() -> str:
                with (
                    rig.entered(),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp,
                ):
                    return str(resp.read().decode())

            deadline = time.monotonic() + 20
            while True:
                try:
                    scrape()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit("exporter did not start")
                    time.sleep(0.2)
            pid = int(subprocess.run(
                ["pgrep", "-f", f"web.listen-address=127.0.0.1:{port}"],
                capture_output=True, text=True, check=True,
            ).stdout.split()[-1])  # fmt: skip
            time.sleep(args.warmup)
            text0, cpu0, t0 = scrape(), tree_cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            text1, cpu1, t1 = scrape(), tree_cpu_seconds(pid), time.monotonic()
            rss = tree_rss_bytes(pid)
        finally:
            proc.terminate()
            proc.wait(10)

    parsed0, parsed1 = samples(text0), samples(text1)  # parsed once: 1,000 targets is slow

    def delta(name: str, **labels: str) -> float:
        def tot(parsed: list[tuple[str, dict[str, str], float]]) -> float:
            return sum(
                v for n, lbl, v in parsed
                if n == name and all(lbl.get(k) == want for k, want in labels.items())
            )  # fmt: skip

        return tot(parsed1) - tot(parsed0)

    elapsed = t1 - t0
    probes = delta("netprobe_probes_total")
    lag0 = histogram(text0, "netprobe_scheduler_lag_seconds")
    lag1 = histogram(text1, "netprobe_scheduler_lag_seconds")
    rtt0 = merged_histogram(text0, "netprobe_icmp_rtt_seconds", "127.")
    rtt1 = merged_histogram(text1, "netprobe_icmp_rtt_seconds", "127.")
    if args.packets > 1:  # packet loss, from the packet counters
        sent_all = delta("netprobe_packets_sent_total")
        sent_silent = sum(delta("netprobe_packets_sent_total", target=s) for s in silent)
        lost_silent = sum(delta("netprobe_packets_lost_total", target=s) for s in silent)
        lost_answering = delta("netprobe_packets_lost_total") - lost_silent
        sent_answering = sent_all - sent_silent
    else:  # probe loss: one echo per probe
        lost_answering = delta("netprobe_probes_total", result="timeout") - sum(
            delta("netprobe_probes_total", target=s, module="ping", result="timeout")
            for s in silent
        )
        lost_silent = sum(
            delta("netprobe_probes_total", target=s, module="ping", result="timeout")
            for s in silent
        )
        sent_silent = sum(delta("netprobe_probes_total", target=s) for s in silent)
        sent_all, sent_answering = probes, probes - sent_silent
    result = {
        "targets": args.targets, "silent_targets": args.silent, "interval_s": args.interval,
        "window_s": round(elapsed, 2),
        "scheduled_per_s": round(args.targets / args.interval, 1),
        "achieved_per_s": round(probes / elapsed, 1),
        "packets_per_probe": args.packets,
        "packets_per_s": round(sent_all / elapsed, 1),
        "loss_answering": round(lost_answering / max(sent_answering, 1), 5),
        "loss_silent": round(lost_silent / max(sent_silent, 1), 5),
        "rtt_p50_us": round(quantile(0.5, rtt0, rtt1) * 1e6, 1),
        "rtt_p99_us": round(quantile(0.99, rtt0, rtt1) * 1e6, 1),
        "lag_p50_ms": round(quantile(0.5, lag0, lag1) * 1000, 3),
        "lag_p99_ms": round(quantile(0.99, lag0, lag1) * 1000, 3),
        "cpu_s_per_1000_probes": round((cpu1 - cpu0) / max(probes, 1) * 1000, 4),
        "cpu_s_per_1000_packets": round((cpu1 - cpu0) / max(sent_all, 1) * 1000, 4),
        "rss_mb": round(rss / 2**20, 1),
    }  # fmt: skip
    name = f"icmp-{args.targets}" + (f"-packets{args.packets}" if args.packets > 1 else "")
    path = write_json(name, result)
    print(table([["metric", "value"], *[[k, v] for k, v in result.items()]]))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
