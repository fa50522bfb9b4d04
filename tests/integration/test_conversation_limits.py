"""Peers that misbehave after connecting must not cost sockets, memory or reactor time."""

from __future__ import annotations

import dataclasses
import itertools
import resource
import time
import zlib
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, http, tcp
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.procutil import tcp_socket_states
from tests.support.reactor import reactor
from tests.support.servers import Conn, make_certs, tcp_server


def established_to(port: int) -> int:
    """Client-side TCP connections in ESTABLISHED state whose remote port is ``port``."""
    return tcp_socket_states(port, local=False).count("01")


class ConversationLimitTests(TestCase):
    def setUp(self) -> None:
        self.dns = SilentDNSServer()  # no name here needs DNS; nothing must leak to it
        self.addCleanup(self.dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )
        self.certs = make_certs(temp_path(self))

    def modules(self) -> Any:
        ca = self.certs.ca_cert
        return parse_config(
            f"""
modules:
  tls: {{prober: tcp, tcp: {{tls: true, tls_config: {{ca_file: {ca}}}}}}}
  expect: {{prober: tcp, tcp: {{query_response: [{{expect: "^never"}}]}}}}
  https: {{prober: http, http: {{tls_config: {{ca_file: {ca}}}}}}}
""",
            "t.yml",
        ).modules

    @defer.inlineCallbacks
    def test_tls_peer_that_never_closes_does_not_keep_our_socket(self) -> Any:
        ctx = self.certs.server_context("valid")

        def hold(conn: Conn) -> None:
            conn.start_tls(ctx)
            conn.stop.wait(3.0)  # never read, never close: no close_notify comes back

        with tcp_server(hold) as server:
            r = yield tcp.probe(self.ctx, f"localhost:{server.port}", self.modules()["tls"], 5)
            self.assertEqual(r.result, "success", r.detail)
            yield task_sleep(0.2)
            self.assertEqual(established_to(server.port), 0)

    @defer.inlineCallbacks
    def test_https_peer_that_never_closes_does_not_keep_our_socket(self) -> Any:
        ctx = self.certs.server_context("valid")

        def answer_and_hold(conn: Conn) -> None:
            conn.start_tls(ctx)
            conn.readline()
            while conn.readline():
                pass  # request headers up to the blank line
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.stop.wait(3.0)

        with tcp_server(answer_and_hold) as server:
            url = f"https://localhost:{server.port}/"
            r = yield http.probe(self.ctx, url, self.modules()["https"], 5)
            self.assertEqual(r.result, "success", r.detail)
            yield task_sleep(0.2)
            self.assertEqual(established_to(server.port), 0)

    @defer.inlineCallbacks
    def test_a_line_without_end_is_cut_off_quickly(self) -> Any:
        """blackbox's scanner gives up past 64 KiB on one line: a read error, not a regex one."""

        def endless_line(conn: Conn) -> None:
            deadline = time.monotonic() + 3.0
            try:
                while time.monotonic() < deadline and not conn.stop.is_set():
                    conn.send(b"x" * 65536)
            except OSError:
                pass  # we were cut off: the point of the test

        with tcp_server(endless_line) as server:
            t0 = time.perf_counter()
            r = yield tcp.probe(self.ctx, f"127.0.0.1:{server.port}", self.modules()["expect"], 5)
            self.assertEqual(r.result, "protocol_error", r.detail)
            self.assertIn("line too long", r.detail)
            self.assertFalse(r.details.failed_due_to_regex)
            self.assertLess(time.perf_counter() - t0, 1.5)

    @defer.inlineCallbacks
    def test_a_flood_of_lines_ends_at_the_timeout_without_stalling(self) -> Any:
        def flood(conn: Conn) -> None:
            deadline = time.monotonic() + 3.0
            try:
                while time.monotonic() < deadline and not conn.stop.is_set():
                    conn.send(b"\n" * 65536)
            except OSError:
                pass

        ticks: list[float] = []
        loop = task.LoopingCall(lambda: ticks.append(time.perf_counter()))
        loop.start(0.05)
        self.addCleanup(loop.stop)
        with tcp_server(flood) as server:
            t0 = time.perf_counter()
            r = yield tcp.probe(self.ctx, f"127.0.0.1:{server.port}", self.modules()["expect"], 0.5)
            self.assertEqual(r.result, "timeout", r.detail)
            self.assertLess(time.perf_counter() - t0, 2.0)  # the flood would last 3 s
        # a stall behind the flood would last seconds; a loaded machine adds tenths
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        self.assertLess(max(gaps), 0.75, "the reactor stalled while lines poured in")

    @defer.inlineCallbacks
    def test_an_http_body_that_outlives_the_timeout_is_abandoned(self) -> Any:
        def endless(conn: Conn) -> None:
            conn.readline()
            while conn.readline():
                pass
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            deadline = time.monotonic() + 4.0
            try:
                while time.monotonic() < deadline and not conn.stop.is_set():
                    conn.send(b"4\r\nabcd\r\n")
                    time.sleep(0.01)
            except OSError:
                pass

        with tcp_server(endless) as server:
            module = parse_config(
                "modules:\n  b:\n    prober: http\n    http:\n"
                "      fail_if_body_matches_regexp: [x]\n",
                "b.yml",
            ).modules["b"]
            r = yield http.probe(self.ctx, f"http://127.0.0.1:{server.port}/", module, 0.5)
            self.assertEqual(r.result, "timeout", r.detail)
            yield task_sleep(0.2)
            self.assertEqual(established_to(server.port), 0)

    @defer.inlineCallbacks
    def test_a_body_kept_for_regexes_is_capped_by_max_body_bytes(self) -> Any:
        body = b"a" * (3 << 20)

        def big(conn: Conn) -> None:
            while conn.readline():
                pass
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

        module = parse_config(
            "modules:\n  b:\n    prober: http\n    http:\n"
            "      fail_if_body_not_matches_regexp: [a]\n",
            "b.yml",
        ).modules["b"]
        with tcp_server(big) as server:
            url = f"http://127.0.0.1:{server.port}/"
            small = dataclasses.replace(self.ctx, max_body_bytes=1 << 20)
            r = yield http.probe(small, url, module, 5.0)
            self.assertFalse(r.success)
            self.assertIn("limits.max_body_bytes (1048576 bytes)", r.detail)
            roomy = dataclasses.replace(self.ctx, max_body_bytes=4 << 20)
            r = yield http.probe(roomy, url, module, 5.0)
            self.assertTrue(r.success, r.detail)

    @defer.inlineCallbacks
    def test_a_compression_bomb_stops_at_the_body_size_limit(self) -> Any:
        # 512 MiB of zeros is ~0.5 MiB gzipped: inflated whole it would take the memory with it
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        bomb = b"".join(packer.compress(zeros) for _ in range(512)) + packer.flush()

        def serve(conn: Conn) -> None:
            while conn.readline():
                pass
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            conn.send(head % len(bomb) + bomb)

        module = parse_config(
            "modules:\n  z:\n    prober: http\n    http:\n"
            "      compression: gzip\n      body_size_limit: 2MiB\n",
            "z.yml",
        ).modules["z"]
        with tcp_server(serve) as server:
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            r = yield http.probe(self.ctx, f"http://127.0.0.1:{server.port}/", module, 5.0)
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        self.assertEqual(r.detail, "http: response body too large")
        self.assertLess(grown_kib, 64 * 1024, "the bomb was inflated far past the limit")

    @defer.inlineCallbacks
    def test_a_compressed_body_cut_short_fails_the_probe(self) -> Any:
        whole = zlib.compress(b"hello " * 1000, 6)
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        gz = packer.compress(b"hello " * 1000) + packer.flush()
        bodies = {"deflate": whole, "gzip": gz}
        module_text = "modules:\n  {0}:\n    prober: http\n    http: {{compression: {0}}}\n"
        for name, body in bodies.items():
            for cut, ok in ((len(body), True), (len(body) - 4, False), (1, False)):
                part = body[:cut]

                def serve(conn: Conn, part: bytes = part, name: str = name) -> None:
                    while conn.readline():
                        pass
                    conn.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + name.encode()
                              + b"\r\nContent-Length: %d\r\n\r\n" % len(part) + part)  # fmt: skip

                module = parse_config(module_text.format(name), "m.yml").modules[name]
                with tcp_server(serve) as server:
                    url = f"http://127.0.0.1:{server.port}/"
                    r = yield http.probe(self.ctx, url, module, 5.0)
                self.assertEqual(r.success, ok, f"{name} cut at {cut}: {r.detail}")
                if not ok:
                    self.assertIn("failed to decompress response body", r.detail)


def task_sleep(seconds: float) -> Any:
    return task.deferLater(reactor, seconds, lambda: None)
