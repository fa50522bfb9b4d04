"""The grpc prober in-process: probes/s, CPU per probe, and the longest reactor stall.

A grpcio health server runs in a process of its own on 127.0.0.1 (so the CPU counted here is
the prober's: reactor, relay and grpcio's threads together). Each round runs --probes health
checks, --concurrency at a time, while a 5 ms LoopingCall records how late the reactor gets to
it: the stall column is the worst lateness, what every other probe and scrape would have
waited. Plain and TLS (a test CA) in turn, then the tcp prober's TLS handshake to the same
server for reference.

    python bench/grpc_probe.py --probes 500 --concurrency 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import table, write_json
from twisted.internet import defer, reactor, task

from netprobe_exporter.model import Module
from netprobe_exporter.probes import ProbeContext, grpc
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.probes.tcp import TCPProbe
from netprobe_exporter.probes.tls import TLSConfig
from netprobe_exporter.resolver import Resolver

ROOT = Path(__file__).resolve().parents[1]
SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.support.servers import grpc_health_server
tls = (Path(sys.argv[2]), Path(sys.argv[3])) if len(sys.argv) > 3 else None
with grpc_health_server(tls) as s:
    print(s.port, flush=True)
    sys.stdin.read()
"""


def start_server(*tls: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), *tls],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


async def run(ctx: ProbeContext, address: str, mod: Module, n: int, conc: int) -> dict[str, Any]:
    prober = PROBERS[mod.prober].probe
    assert prober is not None
    lateness: list[float] = []
    last = [reactor.seconds()]

    def tick() -> None:
        now = reactor.seconds()
        lateness.append(now - last[0] - 0.005)
        last[0] = now

    loop = task.LoopingCall(tick)
    loop.start(0.005)
    sem = defer.DeferredSemaphore(conc)
    cpu0, t0 = time.process_time(), time.monotonic()
    results = await defer.gatherResults([sem.run(prober, ctx, address, mod, 5.0) for _ in range(n)])
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    loop.stop()
    ok = sum(r.success for r in results)
    return {"probes": n, "ok": ok, "per_s": n / wall, "cpu_ms_per_probe": 1000 * cpu / n,
            "max_stall_ms": 1000 * max(lateness, default=0.0)}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import make_certs

    certs = make_certs(Path(tempfile.mkdtemp(prefix="grpc-bench-")))
    ctx = ProbeContext(reactor, Resolver(reactor, servers=["127.0.0.1:9"], hosts_path=os.devnull))
    plain, plain_port = start_server()
    tls, tls_port = start_server(str(certs.leaf_chain), str(certs.leaf_key))
    head = ["case", "probes", "ok", "probes/s", "CPU ms/probe", "max stall ms"]
    rows: list[list[object]] = [head]
    out: dict[str, Any] = {}
    try:
        cases = [
            ("plain", f"127.0.0.1:{plain_port}", grpc.GRPCProbe()),
            ("tls", f"127.0.0.1:{tls_port}",
             grpc.GRPCProbe(tls=True, tls_config=TLSConfig(ca_file=str(certs.ca_cert)))),
            # the same handshake by the tcp prober: what of the stall is TLS's, not grpcio's
            ("tcp tls (reference)", f"127.0.0.1:{tls_port}",
             TCPProbe(tls=True, tls_config=TLSConfig(ca_file=str(certs.ca_cert)))),
        ]  # fmt: skip
        for name, address, opts in cases:
            kind = "grpc" if isinstance(opts, grpc.GRPCProbe) else "tcp"
            mod = Module("bench", kind, 5.0, opts)
            await run(ctx, address, mod, 20, 4)  # warm up grpcio's threads
            got = out[name] = await run(ctx, address, mod, args.probes, args.concurrency)
            cpu, stall = got["cpu_ms_per_probe"], got["max_stall_ms"]
            rows.append([name, got["probes"], got["ok"], f"{got['per_s']:.0f}",
                         f"{cpu:.2f}", f"{stall:.1f}"])  # fmt: skip
    finally:
        for proc in (plain, tls):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
    print(table(rows))
    write_json("grpc_probe", {"concurrency": args.concurrency, **out})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    ns = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(ns)))
