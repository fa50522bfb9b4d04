"""/probe throughput: wrk against our /probe and blackbox_exporter's, alternating, same target.

Both exporters probe the same loopback listener with module tcp_connect. Rounds alternate
(ours, blackbox, ours, …) so that drift in the machine's load hits both alike. Reports
requests/s of each, the ratio ours/blackbox, and the exporter CPU per request.

    python bench/probe_throughput.py --rounds 3 --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_seconds, exporter, free_port, loopback_targets, table, write_json

CONFIG = "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n"
# probe_policy's defaults (20 requests at once per client) would answer wrk's 32 connections
# with 429s; blackbox has no such limit, so ours is lifted for a like-for-like comparison
OURS_CONFIG = CONFIG + "probe_policy:\n  max_concurrent: 10000\n  max_per_source: 10000\n"


def wrk(url: str, seconds: float, connections: int, threads: int) -> tuple[float, float, int]:
    """Run wrk; return (requests/s, p99 latency ms, non-2xx responses)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else 0.0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(bad.group(1)) if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="--probe.workers (default: its)")
    ap.add_argument("--history-limit", type=int, default=None,
                    help="--history.limit (default: its)")  # fmt: skip
    args = ap.parse_args()
    extra = [] if args.workers is None else [f"--probe.workers={args.workers}"]
    extra += [f"--history.limit={args.history_limit}"] if args.history_limit is not None else []
    for tool in ("wrk", "prometheus-blackbox-exporter"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install {tool}")
    budget = args.rounds * 2 * (args.seconds + 10) + 60
    with loopback_targets(1, budget) as ports, tempfile.TemporaryDirectory() as tmp:
        target = f"127.0.0.1:{ports[0]}"
        bb_config = Path(tmp) / "blackbox.yml"
        bb_config.write_text(CONFIG)
        bb_port = free_port()
        bb = subprocess.Popen(
            ["prometheus-blackbox-exporter", f"--config.file={bb_config}",
             f"--web.listen-address=127.0.0.1:{bb_port}", "--log.level=error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(1.0)
            with exporter(OURS_CONFIG, *extra) as ours:
                urls = {
                    "ours": f"{ours.base}/probe?module=tcp_connect&target={target}",
                    "blackbox": f"http://127.0.0.1:{bb_port}/probe?module=tcp_connect"
                    f"&target={target}",
                }
                # ours: the exporter and its probe workers together
                cpu_of = {"ours": ours.cpu_seconds, "blackbox": lambda: cpu_seconds(bb.pid)}
                runs: dict[str, list[dict[str, float]]] = {"ours": [], "blackbox": []}
                for _ in range(args.rounds):
                    for who in ("ours", "blackbox"):
                        cpu0 = cpu_of[who]()
                        rps, p99, bad = wrk(urls[who], args.seconds, args.connections,
                                            args.threads)  # fmt: skip
                        used = cpu_of[who]() - cpu0
                        runs[who].append({
                            "rps": rps, "p99_ms": p99, "non_2xx": bad,
                            "cpu_us_per_request": used / max(rps * args.seconds, 1) * 1e6,
                        })  # fmt: skip
        finally:
            bb.terminate()
            bb.wait(10)
    rows: list[list[object]] = [["exporter", "round", "req/s", "p99 ms", "non-2xx", "CPU µs/req"]]
    for who, rs in runs.items():
        for i, r in enumerate(rs):
            rows.append([who, i + 1, round(r["rps"]), r["p99_ms"], r["non_2xx"],
                         round(r["cpu_us_per_request"])])  # fmt: skip
    mean = {who: sum(r["rps"] for r in rs) / len(rs) for who, rs in runs.items()}
    cpu = {who: sum(r["cpu_us_per_request"] for r in rs) / len(rs) for who, rs in runs.items()}
    result = {
        "connections": args.connections, "seconds": args.seconds, "runs": runs,
        "mean_rps": mean, "ratio_ours_over_blackbox": round(mean["ours"] / mean["blackbox"], 3),
        "mean_cpu_us_per_request": {k: round(v, 1) for k, v in cpu.items()},
    }  # fmt: skip
    path = write_json("probe-throughput", result)
    if any(r["non_2xx"] for rs in runs.values() for r in rs):
        print("WARNING: non-2xx answers were counted as requests: the figures are not valid")
    print(table(rows))
    print(f"mean req/s: ours {mean['ours']:.0f}, blackbox {mean['blackbox']:.0f}, "
          f"ratio ours/blackbox {result['ratio_ours_over_blackbox']}")  # fmt: skip
    print(f"mean CPU per /probe request: ours {cpu['ours']:.0f} µs, "
          f"blackbox {cpu['blackbox']:.0f} µs; written: {path}")  # fmt: skip


if __name__ == "__main__":
    main()
