"""A probe worker SIGKILLed under load: how soon it is back and whether any series reset.

N loopback targets every I seconds with --probe.workers; after a warm-up, one worker is killed.
Reports the time until a new worker process exists, the time until every target of the killed
worker counts again, how many target series reset (a counter went down) or vanished, and the
restarts counter.

    python bench/worker_restart.py --targets 10000 --interval 1
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import time

from common import child_pids, exporter, loopback_targets, table, write_json

#: a probe counter's line (loopback targets need no unescaping); a regex, as the full parser
#: takes a minute over 10,000 targets' exposition and the polling below must be quick
_COUNTER = re.compile(r'^netprobe_probes_total\{target="([^"]*)",[^}]*\} (\S+)$', re.M)


def counts(text: str) -> dict[str, float]:
    """Probes per target (all results together)."""
    out: dict[str, float] = {}
    for m in _COUNTER.finditer(text):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=8.0)
    args = ap.parse_args()
    with loopback_targets(args.targets, args.warmup + 120) as ports:
        lines = [f"defaults:\n  interval: {args.interval}s\ntargets:"]
        lines += [f"  - address: 127.0.0.1:{p}" for p in ports]
        text = "\n".join(lines) + "\n"
        with exporter(text, f"--probe.workers={args.workers}") as ex:
            time.sleep(args.warmup)
            before = counts(ex.get("/metrics")[0].decode())
            victim = child_pids(ex.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            restarted = None
            while time.monotonic() - killed < 30:
                pids = child_pids(ex.proc.pid)
                if len(pids) == args.workers and victim not in pids:
                    restarted = time.monotonic() - killed
                    break
                time.sleep(0.01)
            resumed = None
            after: dict[str, float] = {}
            while time.monotonic() - killed < 60:
                after = counts(ex.get("/metrics")[0].decode())
                if all(after.get(t, 0) > before[t] + 1 for t in before):
                    resumed = time.monotonic() - killed
                    break
                time.sleep(0.2)
            final = ex.get("/metrics")[0].decode()
    reset = sum(1 for t, n in before.items() if after.get(t, -1) < n)
    found = re.search(r"^netprobe_worker_restarts_total (\S+)$", final, re.M)
    restarts = [float(found.group(1))] if found else []
    result = {
        "targets": args.targets,
        "interval_s": args.interval,
        "workers": args.workers,
        "new_worker_after_s": None if restarted is None else round(restarted, 3),
        "all_targets_counting_again_after_s": None if resumed is None else round(resumed, 2),
        "series_reset": reset,
        "series_missing": sum(1 for t in before if t not in after),
        "worker_restarts_total": restarts[0] if restarts else None,
    }
    path = write_json(f"worker-restart-{args.targets}", result)
    print(table([["metric", "value"], *[[k, v] for k, v in result.items()]]))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
