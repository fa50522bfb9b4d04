"""Slow and idle web clients: bounded in number and time, and never in the scheduler's way."""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import ssl
import time
from pathlib import Path

import bcrypt

from tests.support.procutil import Exporter, Processes, find, http, tcp_socket_states, wait_for
from tests.support.servers import make_certs

LIMITS = "limits:\n  web_request_timeout: 1s\n  web_idle_timeout: 2s\n  max_web_connections: 40\n"
PROBE_INTERVAL = 0.1


def start(procs: Processes, tmp_path: Path, listener: int) -> Exporter:
    config = tmp_path / "c.yml"
    config.write_text(
        LIMITS + f"targets:\n  - {{address: '127.0.0.1:{listener}', interval: 100ms}}\n"
    )
    ex = procs.start_exporter(f"--config.file={config}")
    wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
    return ex


def probes(ex: Exporter) -> float:
    """Probes run, whatever their result: the schedule is what is under test."""
    return sum(s.value for s in find(ex.metrics(), "netprobe_probes_total"))


def open_fds(ex: Exporter) -> int:
    return len(os.listdir(f"/proc/{ex.proc.pid}/fd"))


def served_connections(port: int) -> int:
    """Server-side TCP sockets on ``port`` but the listener and those in TIME_WAIT."""
    return sum(1 for state in tcp_socket_states(port, local=True) if state not in ("0A", "06"))


def established(port: int) -> int:
    """Server-side TCP connections on ``port`` that neither side has begun to close."""
    return sum(1 for state in tcp_socket_states(port, local=True) if state == "01")


def closed_by_peer(s: socket.socket, wait: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open after ``wait``."""
    s.settimeout(wait)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return data


def outcomes(socks: list[socket.socket], deadline: float) -> list[bytes | None]:
    """What each socket got before the server closed it, or None if still open at ``deadline``.

    One deadline for all of them, so a late answer on one does not eat another's wait."""
    got: dict[int, bytes] = {i: b"" for i in range(len(socks))}
    done: dict[int, bytes] = {}
    for s in socks:
        s.setblocking(False)
    while len(done) < len(socks) and (left := deadline - time.monotonic()) > 0:
        waiting = {s.fileno(): i for i, s in enumerate(socks) if i not in done}
        readable, _, _ = select.select(list(waiting), [], [], min(left, 0.2))
        for fd in readable:
            i = waiting[fd]
            try:
                chunk = socks[i].recv(4096)
            except (ConnectionResetError, BlockingIOError) as exc:
                if isinstance(exc, ConnectionResetError):
                    done[i] = got[i]
                continue
            if chunk:
                got[i] += chunk
            else:
                done[i] = got[i]
    return [done.get(i) for i in range(len(socks))]


def test_slowloris_is_cut_off_and_bounded_while_probes_keep_their_schedule(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    ex = start(procs, tmp_path, listener)
    baseline_fds = open_fds(ex)
    before, t0 = probes(ex), time.monotonic()
    attackers: list[socket.socket] = []
    reset_at_once = 0  # refused so fast that the reset beat our connect() or first send
    try:
        for _ in range(120):
            try:
                s = socket.create_connection(("127.0.0.1", ex.port), timeout=5)
            except ConnectionResetError:
                reset_at_once += 1
                continue
            attackers.append(s)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)
        held_fds = open_fds(ex)
        # trickle a header line now and then, as slowloris does, for longer than the limit;
        # stop writing to a socket once the server has answered or closed it
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            answered, _, _ = select.select(attackers, [], [], 0)
            for s in attackers:
                if s not in answered:
                    with contextlib.suppress(OSError):
                        s.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.25)
        final = outcomes(attackers, time.monotonic() + 10.0)
    finally:
        for s in attackers:
            s.close()
    elapsed = time.monotonic() - t0
    gained = probes(ex) - before
    refused = reset_at_once + sum(1 for got in final if got == b"")
    timed_out = sum(1 for got in final if got and got.startswith(b"HTTP/1.1 408 "))
    summary = f"{refused} refused, {timed_out} got a 408, of 120: {final}"
    assert refused + timed_out == 120, summary
    assert refused >= 120 - 40 - 5, summary
    assert timed_out >= 35, summary
    assert held_fds <= baseline_fds + 40 + 10, f"{held_fds} fds held (baseline {baseline_fds})"
    due = elapsed / PROBE_INTERVAL
    assert due * 0.85 - 2 <= gained <= due + 2, f"{gained} probes in {elapsed:.2f} s"
    wait_for(lambda: open_fds(ex) <= baseline_fds + 2, 5, "fds back to baseline")
    assert "limits.max_web_connections reached" in ex.stderr()


def test_a_request_sent_slowly_but_within_the_limit_is_served(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    ex = start(procs, tmp_path, listener)
    with socket.create_connection(("127.0.0.1", ex.port), timeout=5) as s:
        for part in (b"GET /-/healthy HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
            s.sendall(part)
            time.sleep(0.1)  # 0.3 s in all, well inside web_request_timeout's 1 s
        reply = closed_by_peer(s, 3.0)
    assert reply is not None and reply.startswith(b"HTTP/1.1 200"), reply


def test_an_idle_connection_is_closed_after_web_idle_timeout(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    ex = start(procs, tmp_path, listener)
    # a keep-alive connection, idle between requests
    with socket.create_connection(("127.0.0.1", ex.port), timeout=5) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(3)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        closed_by_peer(s, 6.0)
        waited = time.monotonic() - t0
    assert 1.5 <= waited <= 5.0, f"kept-alive connection closed after {waited:.2f} s"


def _silent_exporter(procs: Processes, tmp_path: Path, limits: str) -> Exporter:
    config = tmp_path / "c.yml"
    config.write_text(f"limits:\n{limits}")
    ex = procs.start_exporter(f"--config.file={config}")
    wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
    wait_for(lambda: served_connections(ex.port) == 0, 5, "no other connection")
    return ex


def test_a_connection_that_never_sends_is_closed_after_web_request_timeout(
    procs: Processes, tmp_path: Path
) -> None:
    """The request deadline runs from the accept, not from a first byte that never comes."""
    ex = _silent_exporter(procs, tmp_path, "  web_request_timeout: 1s\n  web_idle_timeout: 30s\n")
    socks = [socket.create_connection(("127.0.0.1", ex.port), timeout=5) for _ in range(3)]
    try:
        t0 = time.monotonic()
        final = outcomes(socks, t0 + 6.0)
        waited = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    assert final == [b"", b"", b""], f"{final} (None: still open after 6 s)"
    assert 0.7 <= waited <= 4.0, f"closed after {waited:.2f} s (web_request_timeout 1s)"


def test_silent_connections_at_the_limit_give_way_to_a_new_client(
    procs: Processes, tmp_path: Path
) -> None:
    """max_web_connections silent sockets: the oldest idle one is closed for a newcomer."""
    ex = _silent_exporter(procs, tmp_path, "  max_web_connections: 4\n"
                          "  web_request_timeout: 20s\n  web_idle_timeout: 30s\n")  # fmt: skip
    silent = [socket.create_connection(("127.0.0.1", ex.port), timeout=5) for _ in range(4)]
    try:
        wait_for(lambda: established(ex.port) == 4, 5, "4 connections held")
        for i in range(3):  # each newcomer takes an idle one's place, again and again
            t0 = time.monotonic()
            reply = http(ex.url + "/-/healthy", timeout=3.0)
            assert reply.status == 200, reply
            assert time.monotonic() - t0 < 2.0, f"answered after {time.monotonic() - t0:.2f} s"
            silent.append(socket.create_connection(("127.0.0.1", ex.port), timeout=5))
            wait_for(lambda: established(ex.port) == 4, 5, f"4 held again ({i})")
        closed = outcomes(silent, time.monotonic() + 1.0)
    finally:
        for s in silent:
            s.close()
    # oldest first: the three first silent ones went, the others are still open (None)
    assert closed == [b"", b"", b"", None, None, None, None], closed


def test_at_the_limit_a_newcomer_is_refused_only_when_every_connection_is_busy(
    procs: Processes, tmp_path: Path
) -> None:
    ex = _silent_exporter(procs, tmp_path, "  max_web_connections: 4\n"
                          "  web_request_timeout: 20s\n  web_idle_timeout: 30s\n")  # fmt: skip
    busy = [socket.create_connection(("127.0.0.1", ex.port), timeout=5) for _ in range(4)]
    try:
        for s in busy:  # half a request each: in a request, so not to be evicted
            s.sendall(b"GET /-/healthy HTTP/1.1\r\n")
        wait_for(lambda: served_connections(ex.port) == 4, 5, "4 connections held")
        time.sleep(0.3)  # the server has read the partial requests
        try:
            with socket.create_connection(("127.0.0.1", ex.port), timeout=5) as s:
                with contextlib.suppress(OSError):
                    s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                got = closed_by_peer(s, 3.0)
        except ConnectionResetError:  # aborted before connect() even returned
            got = b""
        assert got == b"", f"a newcomer over the limit got {got!r}, not a close"
        assert outcomes(busy, time.monotonic() + 0.5) == [None] * 4  # all still open
    finally:
        for s in busy:
            s.close()
    assert "limits.max_web_connections reached" in ex.stderr()


def test_an_oversized_request_body_is_refused_without_spooling_it(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    ex = start(procs, tmp_path, listener)
    size = 64 << 20
    with socket.create_connection(("127.0.0.1", ex.port), timeout=5) as s:
        s.sendall(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):  # the server closes long before the end
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
        reply = closed_by_peer(s, 3.0) or b""
    assert sent < size, "the whole body was taken"
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert ex.get("/-/healthy").status == 200
    assert "config reloaded" not in ex.stderr()


def _big_metrics_exporter(procs: Processes, tmp_path: Path) -> Exporter:
    config = tmp_path / "c.yml"
    # 2,000 targets: a /metrics of some 13 MB, far more than the socket buffers hold
    config.write_text(
        LIMITS
        + "defaults: {interval: 1h}\ntargets:\n"
        + "".join(f"  - address: 127.0.0.1:{p}\n" for p in range(1, 2001))
    )
    ex = procs.start_exporter(f"--config.file={config}")
    wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
    return ex


def _stalled_client(ex: Exporter, flood: int) -> float:
    """Ask for /metrics, read nothing, send ``flood`` padded requests; seconds until cut off."""
    # earlier requests' connections may take a moment to finish closing
    wait_for(lambda: served_connections(ex.port) == 0, 5, "no other connection")
    s = socket.create_connection(("127.0.0.1", ex.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        pad = b"X-Pad: " + b"p" * 8000 + b"\r\n"
        time.sleep(0.3)  # the response fills the send buffer: Twisted now reads without bound
        with contextlib.suppress(OSError):  # the server may hang up mid-flood
            for _ in range(flood):
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + pad * 3 + b"\r\n")
        wait_for(lambda: served_connections(ex.port) == 0, 8, "the stalled connection closed")
        return time.monotonic() - t0
    finally:
        s.close()


def test_a_client_that_stops_reading_is_cut_off(procs: Processes, tmp_path: Path) -> None:
    ex = _big_metrics_exporter(procs, tmp_path)
    waited = _stalled_client(ex, flood=0)
    assert 1.5 <= waited <= 5.0, f"cut off after {waited:.2f} s (web_idle_timeout 2s)"
    # pipelined requests piling up behind the stalled response: cut off at 1 MiB, at once
    # (before the stalled-reader limit of 2 s would end it)
    assert _stalled_client(ex, flood=60) < 1.8
    assert ex.get("/-/healthy").status == 200


def test_connections_over_the_limit_are_closed_under_tls_too(
    procs: Processes, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs.leaf_chain}\n"
                   f"  key_file: {certs.leaf_key}\n")  # fmt: skip
    config = tmp_path / "c.yml"
    config.write_text("limits:\n  max_web_connections: 5\n  web_idle_timeout: 30s\n")
    ex = procs.start_exporter(f"--config.file={config}", f"--web.config.file={web}")
    trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
    held: list[socket.socket] = []
    try:
        for _ in range(5):  # each in a request (half sent), so none is idle to make room
            raw = socket.create_connection(("127.0.0.1", ex.port), timeout=5)
            held.append(trusting.wrap_socket(raw, server_hostname="localhost"))
            held[-1].sendall(b"GET /-/healthy HTTP/1.1\r\n")
        time.sleep(0.3)
        closed: list[bytes | None] = []
        for _ in range(5):
            try:
                s = socket.create_connection(("127.0.0.1", ex.port), timeout=5)
            except ConnectionResetError:  # aborted before connect() even returned
                closed.append(b"")
                continue
            with s:
                closed.append(closed_by_peer(s, 2.0))
    finally:
        for s in held:
            s.close()
    assert all(c is not None for c in closed), "connections over the limit were left open"
    assert "Traceback" not in ex.stderr()


def test_an_over_long_password_is_a_401_not_a_hang(procs: Processes, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    ex = procs.start_exporter(f"--web.config.file={web}")
    token = base64.b64encode(b"prom:" + b"x" * 100).decode()
    reply = ex.get("/metrics", headers={"Authorization": f"Basic {token}"})
    assert reply.status == 401
