"""Bad input at /probe and a stop under load: clear 4xx answers, nothing else disturbed."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import RoutedNamespace, routed_namespace_or_skip
from tests.support.procutil import Exporter, Processes, find, value, wait_for


def raw_request(port: int, request: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        if half_close:  # for garbage that never ends a request line: the server sees the end
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    procs = Processes(tmp_path_factory.mktemp("robust"))
    try:
        ex = procs.start_exporter()
        wait_for(lambda: ex.get("/-/ready").status == 200, 5, "readiness")
        yield ex
    finally:
        procs.close()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (b"target=%ZZ%&module=tcp_connect", 400),  # percent-encoding garbage: no target
        (b"target=%ff%fe:80&module=tcp_connect", 400),  # not UTF-8
        (b"target=../&module=tcp_connect", 400),
        (b"target=http://[::1&module=http_2xx", 400),
        (b"target=1.2.3.4:99999&module=tcp_connect", 400),
        (b"target=127.0.0.1:1&module=nosuch", 400),
        (b"target=127.0.0.1:1&module=tcp_connect&module=tcp_connect", 200),
        (b"&&&==&", 400),
        (b"module=icmp&target=" + b"a" * 5000, 400),
    ],
)
def test_bad_probe_queries_get_a_clear_4xx(running: Exporter, query: bytes, code: int) -> None:
    reply = raw_request(
        running.port, b"GET /probe?" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status(reply) == code, reply[:300]
    if code == 400:
        body = reply.split(b"\r\n\r\n", 1)[1]
        assert body.strip(), "a 400 says what was wrong"


def test_huge_header_and_garbage_requests_do_not_disturb_probing(running: Exporter) -> None:
    before = value(running.metrics(), "netprobe_probes_total", result="success") or 0
    huge = (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
        + b"a" * 200_000
        + b"\r\n\r\n"
    )
    reply = raw_request(running.port, huge)  # refused: a 400, or the connection simply closed
    assert reply == b"" or status(reply) in (400, 431), reply[:200]
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 50
    garbage = raw_request(running.port, tls_hello, half_close=True)
    assert garbage == b"" or status(garbage) == 400
    assert status(raw_request(running.port, b"NOTHTTP\r\n\r\n")) == 400
    assert running.get("/-/healthy").status == 200
    after = value(running.metrics(), "netprobe_probes_total", result="success") or 0
    assert after >= before  # counters kept going


@pytest.fixture
def namespace() -> Iterator[RoutedNamespace]:
    ns = routed_namespace_or_skip()
    try:
        yield ns
    finally:
        ns.destroy()


def _blackholed(
    procs: Processes,
    tmp_path: Path,
    namespace: RoutedNamespace,
    count: int,
    timeout: str,
    interval: str,
    max_concurrent: int,
) -> Exporter:
    """An exporter probing ``count`` targets in the namespace's black hole (a /28 of addresses
    that never answer) with a tcp module of ``timeout`` every ``interval``."""
    base = namespace.blackhole_ip.rsplit(".", 1)[0]
    lines = [
        f"modules:\n  slow: {{prober: tcp, timeout: {timeout}}}\n"
        f"limits:\n  max_concurrent_probes: {max_concurrent}\n"
        f"defaults:\n  interval: {interval}\n  module: slow\ntargets:"
    ]
    lines += [f"  - address: {base}.{17 + i % 14}:{10000 + i}" for i in range(count)]
    config = tmp_path / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    return procs.start_exporter(f"--config.file={config}")


def test_sigterm_with_a_thousand_probes_in_flight_stops_within_two_seconds(
    procs: Processes, tmp_path: Path, namespace: RoutedNamespace
) -> None:
    # 1,100 targets whose probes time out just before they are due again: once the first
    # interval has passed, some 1,080 are in flight at every moment, not only at a peak
    ex = _blackholed(procs, tmp_path, namespace, 1100, "4900ms", "5s", max_concurrent=2000)

    def busy() -> float | None:
        inflight = value(ex.metrics(), "netprobe_inflight_probes") or 0
        return inflight if inflight >= 1000 else None

    wait_for(busy, 30, "1,000 probes in flight")
    t0 = time.monotonic()
    ex.proc.send_signal(signal.SIGTERM)
    code = ex.wait_exit(10)
    elapsed = time.monotonic() - t0
    assert code == 0
    assert elapsed < 2.0, f"stopped in {elapsed:.2f} s"


def test_max_concurrent_probes_bounds_the_probes_in_flight(
    procs: Processes, tmp_path: Path, namespace: RoutedNamespace
) -> None:
    ex = _blackholed(procs, tmp_path, namespace, 50, "1500ms", "2s", max_concurrent=10)
    wait_for(
        lambda: (value(ex.metrics(), "netprobe_inflight_probes") or 0) > 0,
        10,
        "the first probes in flight (once the probe workers are up)",
    )
    seen: list[float] = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        seen.append(value(ex.metrics(), "netprobe_inflight_probes") or 0)
        time.sleep(0.1)
    assert max(seen) == 10, seen  # reached, never passed
    # 50 probes of 1.5 s per 2 s cannot fit in 10 slots: the rest wait, which their lag shows,
    # and then get only what is left before their next slot
    samples = ex.metrics()
    starts = value(samples, "netprobe_scheduler_lag_seconds_count") or 0
    prompt = value(samples, "netprobe_scheduler_lag_seconds_bucket", le="0.25") or 0
    assert starts - prompt > 0, (starts, prompt)


def test_a_black_holed_target_gets_one_probe_per_interval(
    procs: Processes, tmp_path: Path, namespace: RoutedNamespace
) -> None:
    """interval 1 s with the 5 s timeout (capped to the interval): each probe times out before
    the next slot, so the count grows by one per second and no slot is skipped."""
    ex = _blackholed(procs, tmp_path, namespace, 1, "5s", "1s", max_concurrent=10)

    def probes() -> float:
        return sum(s.value for s in find(ex.metrics(), "netprobe_probes_total"))

    wait_for(lambda: probes() >= 1, 10, "the first timeout")
    t0, before = time.monotonic(), probes()
    time.sleep(8)
    t1, after = time.monotonic(), probes()
    expected = t1 - t0
    assert abs((after - before) - expected) <= 1.2, (after - before, expected)
    assert value(ex.metrics(), "netprobe_scheduler_skipped_probes_total") == 0
    assert value(ex.metrics(), "netprobe_probes_total", result="timeout") == after
