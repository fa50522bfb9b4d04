"""A probe worker SIGKILLed under load: how fast it is replaced and whether any series resets.

N loopback targets are probed every second by an exporter with its default worker processes.
After a warm-up the benchmark scrapes ``/metrics``, SIGKILLs one worker, and measures the time
until a new worker process exists, until ``netprobe_worker_restarts_total`` counts it, and
until every target has been probed again since the kill. It then compares each target's
``netprobe_probes_total`` before and after: a series that went down or went missing is a reset.
``/-/ready`` is polled every 50 ms meanwhile.

    python bench/worker_restart.py --targets 10000
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from common import exporter, loopback_targets, samples, table, write_json


def children(pid: int) -> set[int]:
    """The direct child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def probe_counts(text: str) -> dict[tuple[str, str], float]:
    """Probes per (target, module), summed over results."""
    counts: dict[tuple[str, str], float] = {}
    for name, labels, value in samples(text):
        if name == "netprobe_probes_total":
            key = (labels["target"], labels["module"])
            counts[key] = counts.get(key, 0.0) + value
    return counts


def restarts(text: str) -> float:
    return sum(v for n, _, v in samples(text) if n == "netprobe_worker_restarts_total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10000)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--extra", action="append", default=[], help="extra exporter flag")
    args = ap.parse_args()
    n = args.targets
    with loopback_targets(n, args.warmup + 120) as ports:
        lines = ["defaults:\n  interval: 1s\ntargets:"]
        lines += [f"  - address: 127.0.0.1:{p}" for p in ports]
        with exporter("\n".join(lines) + "\n", *args.extra) as ex:
            time.sleep(args.warmup)
            workers = children(ex.proc.pid)
            if not workers:
                raise SystemExit("the exporter has no worker processes (--probe.workers=0?)")
            before_text = ex.get("/metrics")[0].decode()
            before = probe_counts(before_text)
            restarts0 = restarts(before_text)

            not_ready: list[float] = []
            stop = threading.Event()

            def poll_ready() -> None:
                while not stop.wait(0.05):
                    try:
                        ex.get("/-/ready")
                    except OSError:
                        not_ready.append(time.monotonic())

            poller = threading.Thread(target=poll_ready, daemon=True)
            poller.start()
            victim = min(workers)
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            t_new = None
            deadline = t_kill + 30
            while time.monotonic() < deadline:
                new = children(ex.proc.pid) - workers
                if new:
                    t_new = time.monotonic()
                    break
                time.sleep(0.01)
            t_counted = t_resumed = None
            after: dict[tuple[str, str], float] = {}
            while time.monotonic() < deadline and (t_counted is None or t_resumed is None):
                text = ex.get("/metrics")[0].decode()
                now = time.monotonic()
                if t_counted is None and restarts(text) > restarts0:
                    t_counted = now
                after = probe_counts(text)
                if t_resumed is None and all(after.get(k, 0.0) > v for k, v in before.items()):
                    t_resumed = now
            stop.set()
            poller.join(1)

    reset = sum(1 for k, v in before.items() if after.get(k, -1.0) < v)
    missing = sum(1 for k in before if k not in after)

    def ms(t: float | None) -> str:
        return "never" if t is None else f"{(t - t_kill) * 1000:.0f}"

    rows: list[list[object]] = [
        ["figure", "value"],
        ["targets", n],
        ["workers before kill", len(workers)],
        ["new worker process after (ms)", ms(t_new)],
        ["restart counted by (ms, scrape end)", ms(t_counted)],
        ["every target probed again by (ms, scrape end)", ms(t_resumed)],
        ["series reset (went down)", reset],
        ["series missing", missing],
        ["/-/ready failures", len(not_ready)],
    ]
    print(table(rows))
    write_json(
        f"worker-restart-{n}",
        {
            "targets": n,
            "workers": len(workers),
            "new_worker_ms": None if t_new is None else (t_new - t_kill) * 1000,
            "restart_counted_ms": None if t_counted is None else (t_counted - t_kill) * 1000,
            "all_resumed_ms": None if t_resumed is None else (t_resumed - t_kill) * 1000,
            "series_reset": reset,
            "series_missing": missing,
            "ready_failures": len(not_ready),
        },
    )


if __name__ == "__main__":
    main()
