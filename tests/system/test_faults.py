"""Faulty targets in continuous mode: each is classified, none leaks, none slows the others.

One exporter probes, side by side, a healthy listener and targets that accept and never answer,
send endless data, reset in the middle of the TLS handshake, answer HTTP with garbage, and a DNS
server that never replies. Every fault must land in its own result class, the healthy target
must keep its schedule, and the exporter's file descriptors must not grow while it goes on.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.procutil import Exporter, Processes, find, value, wait_for
from tests.support.servers import Conn, holding_server, tcp_server

INTERVAL = 2.0  # fault targets: probe every 2 s with a 1 s timeout
HEALTHY_INTERVAL = 0.2
RUN = 7.0


def _read_head(conn: Conn) -> None:
    while conn.readline():
        pass


def endless_http_body(conn: Conn) -> None:
    _read_head(conn)
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not conn.stop.is_set():
            conn.send(chunk)
            time.sleep(0.001)
    except OSError:
        pass  # the prober gave up and closed: what we expect


def endless_lines(conn: Conn) -> None:
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not conn.stop.is_set():
            conn.send(b"still not what you expect\r\n" * 100)
            time.sleep(0.002)
    except OSError:
        pass


def reset_mid_tls(conn: Conn) -> None:
    conn.sock.settimeout(5)
    hello = conn.sock.recv(5)  # the ClientHello's record header: the handshake has begun
    assert hello[:1] == b"\x16", hello
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()  # linger 0: an RST, not a FIN


def http_garbage(conn: Conn) -> None:
    _read_head(conn)
    conn.send(b"\x00\xffTHIS IS NOT HTTP\r\n\x01\x02\r\n\r\n")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that takes queries and never answers them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_faulty_targets_are_classified_and_leak_nothing(
    procs: Processes, tmp_path: Path, listener: int, silent_dns: int
) -> None:
    with ExitStack() as stack:
        silent = stack.enter_context(holding_server())
        body = stack.enter_context(tcp_server(endless_http_body))
        lines = stack.enter_context(tcp_server(endless_lines))
        reset = stack.enter_context(tcp_server(reset_mid_tls))
        garbage = stack.enter_context(tcp_server(http_garbage))
        targets = {
            # target -> (module, expected result)
            f"127.0.0.1:{listener}": ("tcp_connect", "success"),
            f"http://127.0.0.1:{silent.port}/": ("web", "timeout"),
            f"http://127.0.0.1:{body.port}/": ("web", "timeout"),
            f"127.0.0.1:{lines.port}": ("expect", "timeout"),
            f"127.0.0.1:{reset.port}": ("tls", "tls_error"),
            f"http://127.0.0.1:{garbage.port}/": ("web", "protocol_error"),
            f"127.0.0.1:{silent_dns}": ("dns", "timeout"),
        }
        config = tmp_path / "faults.yml"
        entries = "".join(
            f"  - {{address: '{t}', module: {m}, interval: "
            f"{HEALTHY_INTERVAL if m == 'tcp_connect' else INTERVAL}s}}\n"
            for t, (m, _) in targets.items()
        )
        config.write_text(
            "modules:\n"
            "  web: {prober: http, timeout: 1s}\n"
            "  expect: {prober: tcp, timeout: 1s, tcp: {query_response: [{expect: '^never'}]}}\n"
            "  tls: {prober: tcp, timeout: 1s, tcp: {tls: true}}\n"
            "  dns: {prober: dns, timeout: 1s, dns: {query_name: probe.example, "
            "transport_protocol: udp}}\n"
            "targets:\n" + entries
        )
        ex = procs.start_exporter(f"--config.file={config}")
        wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
        time.sleep(2.5)  # every fault target has run at least once
        pid = ex.proc.pid
        first = ex.metrics()
        t0 = time.monotonic()
        fds: list[tuple[float, int]] = []
        while time.monotonic() - t0 < RUN:
            fds.append((time.monotonic() - t0, open_fds(pid)))
            time.sleep(0.05)
        last = ex.metrics()
        elapsed = time.monotonic() - t0

    for target, (module, expected) in targets.items():
        counts = {
            s.labels["result"]: s.value
            for s in find(last, "netprobe_probes_total", target=target, module=module)
        }
        assert counts, f"no series for {target}"
        others = {r: n for r, n in counts.items() if r != expected and n}
        assert counts[expected] >= 2 and not others, f"{target} ({module}): {counts}"
    healthy = f"127.0.0.1:{listener}"
    gained = _probes(last, healthy) - _probes(first, healthy)
    due = elapsed / HEALTHY_INTERVAL
    # a machine too loaded to run the reactor for a whole interval drops a slot or two; the
    # faults themselves must not cost the healthy target more than that
    skipped = sum(
        (value(snapshot, "netprobe_scheduler_skipped_probes_total") or 0) * sign
        for snapshot, sign in ((last, 1), (first, -1))
    )
    assert skipped <= 2, f"{skipped} probe slots skipped during the run"
    assert due * 0.9 - 3 <= gained <= due + 3, f"healthy target: {gained} probes in {elapsed:.1f} s"
    # Sockets of probes in flight come and go; the fewest open over a stretch is the baseline.
    # A leak would lift it by one per fault probe: about 17 over this run.
    early = min(n for t, n in fds if t < 2.0)
    late = min(n for t, n in fds if t > RUN - 2.0)
    assert late <= early + 2, f"the fd baseline rose from {early} to {late}"
    assert ex.proc.poll() is None


def _probes(samples: list, target: str) -> float:  # type: ignore[type-arg]
    return sum(s.value for s in find(samples, "netprobe_probes_total", target=target))


def test_exporter_answers_while_faults_run(procs: Processes, tmp_path: Path) -> None:
    """The web side stays prompt while a target pours data at a probe."""
    with tcp_server(endless_http_body) as body:
        config = tmp_path / "c.yml"
        config.write_text(
            "modules:\n  web: {prober: http, timeout: 1s}\n"
            f"targets:\n  - {{address: 'http://127.0.0.1:{body.port}/', module: web, "
            "interval: 1s}\n"
        )
        ex: Exporter = procs.start_exporter(f"--config.file={config}")
        wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
        took: list[float] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            t = time.monotonic()
            assert ex.get("/-/healthy").status == 200
            took.append(time.monotonic() - t)
            time.sleep(0.05)
    # a reactor held by the body would answer late all the time, for the probe's whole second;
    # a loaded machine delays one answer now and then
    took.sort()
    median, worst = took[len(took) // 2], took[-1]
    assert median < 0.1 and worst < 1.0, f"/-/healthy took {median:.3f} s (median), {worst:.3f} s"
