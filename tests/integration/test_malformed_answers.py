"""Peers that answer with endless HTTP headers or garbage DNS packets: a clear, bounded failure."""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, dns, http
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import POLL, Conn, tcp_server

HTTP_TIMEOUT = 5.0


def _endless_headers(line: bytes) -> Any:
    def serve(conn: Conn) -> None:
        while conn.readline():
            pass  # the request, up to its blank line
        conn.send(b"HTTP/1.1 200 OK\r\n")
        deadline = time.monotonic() + HTTP_TIMEOUT + 2
        try:
            while time.monotonic() < deadline and not conn.stop.is_set():
                conn.send(line * 64)
        except OSError:
            pass  # cut off: the point

    return serve


@contextlib.contextmanager
def udp_answers(answer: Any) -> Iterator[int]:
    """A loopback UDP "DNS server" replying ``answer(query)`` to every datagram."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(POLL)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(answer(query), peer)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


class MalformedAnswerTests(TestCase):
    def setUp(self) -> None:
        self.dns = SilentDNSServer()
        self.addCleanup(self.dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )
        self.modules = parse_config(
            "modules:\n"
            "  d: {prober: dns, dns: {query_name: example.test, transport_protocol: udp}}\n",
            "m.yml",
        ).modules

    @defer.inlineCallbacks
    def test_endless_response_headers_fail_at_the_header_limit(self) -> Any:
        long_line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        cases = [
            (long_line, f"exceeded {http.MAX_RESPONSE_HEADER_BYTES} bytes"),
            (b"X-A: b\r\n", f"exceeded {http.MAX_RESPONSE_HEADER_LINES} lines"),
        ]
        for line, reason in cases:
            with tcp_server(_endless_headers(line)) as server:
                peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                t0 = time.perf_counter()
                url = f"http://127.0.0.1:{server.port}/"
                r = yield http.probe(self.ctx, url, self.modules["http_2xx"], HTTP_TIMEOUT)
                took = time.perf_counter() - t0
                grown_mib = (
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
                ) / 1024
            self.assertEqual(r.result, "protocol_error", r.detail)
            self.assertIn(reason, r.detail)
            self.assertLess(took, HTTP_TIMEOUT, "the headers ran on to the timeout")
            self.assertLess(grown_mib, 64, "the headers were held far past the limit")

    @defer.inlineCallbacks
    def test_garbage_dns_answers_fail_with_a_reason(self) -> Any:
        header_only = struct.pack("!6H", 0, 0x8180, 1, 1, 0, 0)  # says 1 query, 1 answer
        garbage = [
            b"",
            b"\x07",
            b"\x01\x02\x03",
            b"\xff" * 9,
            header_only[2:],
            header_only[2:] + b"\x03ab",
        ]
        for tail in garbage:
            with udp_answers(lambda q, tail=tail: q[:2] + tail) as port:
                r = yield dns.probe(self.ctx, f"127.0.0.1:{port}", self.modules["d"], 2.0)
            size = 2 + len(tail)
            self.assertFalse(r.success)
            self.assertEqual(r.result, "protocol_error", r.detail)
            self.assertIn(f"malformed DNS response ({size} bytes)", r.detail)
            self.assertFalse(r.detail.endswith(": "), r.detail)
            self.assertFalse(r.details is not None and r.details.query_succeeded)
