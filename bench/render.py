"""Render cost in process: a store of N TCP targets built in memory, rendered in each format.

No sockets: the store is filled with synthetic TCP results (successes with connect and kernel
RTT, a few refusals and timeouts), then each format is rendered whole, as ``/metrics`` streams
it, plain and through gzip level 1 as the web layer compresses it. Also reports the cost of one
``TargetSeries.observe`` of a TCP result, and the memory the store takes per target.

    python bench/render.py --targets 10000
    python bench/render.py --targets 10000 --profile protobuf
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

from common import percentile, table, write_json

from netprobe_exporter import exposition, protobuf_exposition
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import ProbeResult, Target
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.tcp import TCPDetails

FORMATS = ("text", "openmetrics", "protobuf")


def tcp_result(rng: random.Random) -> ProbeResult:
    """One TCP probe's result as the prober makes it: mostly successes on a ~ms path."""
    roll = rng.random()
    if roll < 0.02:
        return ProbeResult(False, "refused", rng.uniform(1e-4, 5e-4), ip="127.0.0.1")
    if roll < 0.03:
        return ProbeResult(False, "timeout", 5.0 + rng.random() * 1e-3, ip="127.0.0.1")
    connect = rng.lognormvariate(-7.0, 0.6)
    details = TCPDetails(connect=ConnectInfo(handshake_rtt=connect * rng.uniform(0.5, 1.0)))
    return ProbeResult(True, "success", connect * 1.3, connect, "127.0.0.1", details=details)


def build(n: int, probes: int, seed: int = 1) -> MetricsStore:
    """A store of ``n`` TCP targets, each observed ``probes`` times."""
    rng = random.Random(seed)
    targets = [Target(f"127.0.0.1:{20000 + i}", "tcp_connect", 10.0) for i in range(n)]
    store = MetricsStore()
    store.sync(targets)
    now = 1.8e9
    for t in targets:
        for _ in range(probes):
            now += 0.001
            store.observe(t, tcp_result(rng), now)
    return store


def renderer(store: MetricsStore, fmt: str) -> Callable[[], Iterator[bytes | str]]:
    if fmt == "protobuf":
        return lambda: protobuf_exposition.render(store, None)
    f = exposition.OPENMETRICS if fmt == "openmetrics" else exposition.TEXT
    return lambda: exposition.render(store, f, None)


def render_once(
    make: Callable[[], Iterator[bytes | str]], gz: bool
) -> tuple[float, int, float, float]:
    """Seconds to render (and compress) it all, the bytes sent, the longest chunk (s), and the
    CPU seconds it took (what a loaded machine changes least)."""
    size, longest = 0, 0.0
    comp = zlib.compressobj(1, zlib.DEFLATED, 31) if gz else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    last = t0
    for chunk in make():
        data = chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")
        if comp is not None:
            data = comp.compress(data)
        size += len(data)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    if comp is not None:
        size += len(comp.flush())
    return time.perf_counter() - t0, size, longest, time.process_time() - cpu0


def observe_cost(count: int) -> float:
    """µs per ``MetricsStore.observe`` of a TCP result on a warmed-up target."""
    rng = random.Random(2)
    target = Target("127.0.0.1:9", "tcp_connect", 1.0)
    store = MetricsStore()
    store.sync([target])
    results = [tcp_result(rng) for _ in range(1000)]
    series = store.series[next(iter(store.series))]
    for r in results:
        series.observe(r, 1.0)
    t0 = time.perf_counter()
    for i in range(count):
        series.observe(results[i % 1000], 1.0)
    return (time.perf_counter() - t0) / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10000)
    ap.add_argument("--probes", type=int, default=20, help="results observed per target")
    ap.add_argument("--renders", type=int, default=10)
    ap.add_argument("--profile", choices=FORMATS)
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = ap.parse_args()
    n = args.targets
    gc.collect()
    tracemalloc.start()
    store = build(n, args.probes)
    gc.collect()
    store_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if args.profile:
        make = renderer(store, args.profile)
        render_once(make, False)
        prof = cProfile.Profile()
        prof.enable()
        render_once(make, False)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return
    rows: list[list[object]] = [
        ["format", "gzip", "p50 ms", "p99 ms", "max ms", "CPU p50 ms", "chunk max ms", "MB"]
    ]
    result: dict[str, object] = {"targets": n, "probes_per_target": args.probes}
    for fmt in args.formats:
        make = renderer(store, fmt)
        for gz in (False, True):
            render_once(make, gz)  # warm caches, as every scrape after the first finds them
            runs = [render_once(make, gz) for _ in range(args.renders)]
            times = [r[0] for r in runs]
            key = f"{fmt}{'-gzip' if gz else ''}"
            result[key] = {
                "p50_ms": round(percentile(times, 0.5) * 1000, 1),
                "p99_ms": round(percentile(times, 0.99) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
                "cpu_p50_ms": round(percentile([r[3] for r in runs], 0.5) * 1000, 1),
                "chunk_max_ms": round(max(r[2] for r in runs) * 1000, 2),
                "bytes": runs[-1][1],
            }
            entry: dict[str, float] = result[key]  # type: ignore[assignment]
            rows.append([fmt, "yes" if gz else "no", entry["p50_ms"], entry["p99_ms"],
                         entry["max_ms"], entry["cpu_p50_ms"], entry["chunk_max_ms"],
                         round(entry["bytes"] / 1e6, 2)])  # fmt: skip
    result["store_bytes_per_target"] = round(store_bytes / n)
    result["observe_us"] = round(observe_cost(200_000), 3)
    path = write_json(f"render-{n}", result)
    print(f"in-process render, {n} TCP targets, {args.probes} results each, {args.renders} renders")
    print(table(rows))
    print(f"store: {result['store_bytes_per_target']} B per target (tracemalloc)")
    print(f"TargetSeries.observe of a TCP result: {result['observe_us']} µs")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
