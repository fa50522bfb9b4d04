"""Shared pieces of the benchmarks: loopback targets, an exporter process, reading its figures.

Everything talks to 127.0.0.0/8 only. Target listeners live in a separate drain process, so
accepting the probes' connections does not count against the exporter's CPU.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

RESULTS = Path(__file__).parent / "results"


def _drain(ports_out: Connection, count: int, stop_at: float) -> None:
    """Listen on ``count`` loopback ports; accept and close every connection until stop_at."""
    socks = []
    # ports below the ephemeral range: a benchmark just before leaves tens of thousands of
    # ephemeral ports in TIME_WAIT, and bind(0) then fails with EADDRINUSE
    port = 12000
    while len(socks) < count and port < 32768:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            port += 1
            continue
        port += 1
        s.listen(4096)
        s.setblocking(False)
        socks.append(s)
    if len(socks) < count:
        raise SystemExit(f"only {len(socks)} of {count} loopback ports could be bound")
    ports_out.send([s.getsockname()[1] for s in socks])
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    while time.monotonic() < stop_at:
        for fd, _ in ep.poll(0.5):
            s = by_fd[fd]
            with contextlib.suppress(BlockingIOError, OSError):
                while True:
                    conn, _ = s.accept()
                    conn.close()


@contextlib.contextmanager
def loopback_targets(count: int, max_seconds: float) -> Iterator[list[int]]:
    """``count`` listening ports on 127.0.0.1, drained by a child process."""
    parent, child = mp.Pipe()
    proc = mp.Process(target=_drain, args=(child, count, time.monotonic() + max_seconds))
    proc.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the target listeners did not start (see the error above)")
        ports: list[int] = parent.recv()
        yield ports
    finally:
        proc.terminate()
        proc.join(5)


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, accept: str | None = None) -> tuple[bytes, float]:
        req = urllib.request.Request(self.base + path)
        if accept:
            req.add_header("Accept", accept)
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as resp:
            body: bytes = resp.read()
        return body, time.perf_counter() - t0

    def pids(self) -> list[int]:
        """The exporter and its probe workers."""
        return [self.proc.pid, *child_pids(self.proc.pid)]

    def cpu_seconds(self) -> float:
        """CPU of the exporter and its probe workers together."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        """Resident memory of the exporter and its probe workers together."""
        return sum(rss_bytes(pid) for pid in self.pids())

    def pss_bytes(self) -> int:
        """Their proportional set size: pages shared between them (libraries) counted once."""
        return sum(pss_bytes(pid) for pid in self.pids())


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (an exporter and its probe workers)."""
    return sum(cpu_seconds(p) for p in [pid, *child_pids(pid)])


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    return sum(rss_bytes(p) for p in [pid, *child_pids(pid)])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def exporter(config_text: str, *extra: str) -> Iterator[Exporter]:
    """Run the exporter on a free loopback port with ``config_text``; stop it on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(config_text)
        port = free_port()
        log = open(Path(tmp) / "exporter.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "netprobe_exporter", f"--config.file={config}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *extra],
            stdout=log, stderr=log,
        )  # fmt: skip
        ex = Exporter(proc, port, config)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    ex.get("/-/ready")
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("exporter did not start") from None
                    time.sleep(0.1)
            yield ex
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every ``(name, labels, value)`` of a text exposition, read by prometheus_client's parser
    (the one the tests use too, through tests/support/metrics.py)."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _matches(labels: dict[str, str], want: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lbl, v in samples(text) if n == name and _matches(lbl, labels))


def histogram(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram, summed over the series with ``labels``."""
    sums: dict[float, float] = {}
    for n, lbl, v in samples(text):
        if n == f"{name}_bucket" and _matches(lbl, labels):
            le = float(lbl["le"])  # "+Inf" reads as inf
            sums[le] = sums.get(le, 0.0) + v
    return sorted(sums.items())


def quantile(q: float, before: Sequence[tuple[float, float]],
             after: Sequence[tuple[float, float]]) -> float:  # fmt: skip
    """Prometheus' histogram_quantile over the increase between two scrapes."""
    prev = dict(before)
    buckets = [(le, c - prev.get(le, 0.0)) for le, c in after]
    count = buckets[-1][1] if buckets else 0
    if count <= 0:
        return float("nan")
    rank = q * count
    lower_le, lower_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return lower_le
            return lower_le + (le - lower_le) * (rank - lower_c) / max(c - lower_c, 1e-12)
        lower_le, lower_c = le, c
    return buckets[-2][0]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_json(name: str, data: object) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )


_ROOT = Path(__file__).resolve().parent.parent


def start_zone() -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """The test DNS zone (tests/support/dns_zone_server.py) in a process of its own."""
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(_ROOT / "tests" / "support" / "dns_zone_server.py"), "600"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    host, port = proc.stdout.readline().strip().rsplit(":", 1)
    return proc, (host, int(port))


async def cpu_rounds(
    candidates: dict[str, Callable[[], defer.Deferred[Any]]], count: int, rounds: int
) -> dict[str, Any]:
    """Each candidate's CPU µs per call (``cpu_per_lookup``), the candidates taken in turn in
    each of ``rounds`` rounds so that a change of load hits them alike: median and rounds."""
    figures: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for label, lookup in candidates.items():
            figures[label].append(await cpu_per_lookup(lookup, count))
    return {k: {"median_us": statistics.median(v), "rounds_us": v} for k, v in figures.items()}


async def cpu_per_lookup(lookup: Callable[[], defer.Deferred[Any]], count: int) -> float:
    """CPU µs per call of ``lookup``, after 50 calls of warm-up (which fill a cache)."""
    for _ in range(50):  # warm up (and fill the cache)
        await lookup()
    t0 = time.process_time()
    for _ in range(count):
        await lookup()
    return (time.process_time() - t0) / count * 1e6
