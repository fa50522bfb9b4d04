"""The tcp prober on real sockets: loopback listeners, a local DNS server, network namespaces.

Traffic goes only to 127.0.0.0/8, ::1 and addresses routed into a namespace the test builds
(see tests/support/netns.py); DNS only to a twisted.names server on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netprobe_exporter.modules import Module, TCPProbe, TLSConfig
from netprobe_exporter.probes import ProbeContext, ProbeResult, tcp
from netprobe_exporter.probes.connect import engine_of
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import (
    LocalDNSServer,
    SilentDNSServer,
    leftover_timers,
    sleep,
    temp_path,
    write_file,
)
from tests.support.probe_fixtures import tcp_module as module
from tests.support.reactor import reactor


def listener(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket nobody accepts on: the kernel completes handshakes by itself."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(512)
    s.setblocking(False)
    return s


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _ProbeTestCase(TestCase):
    """Each test gets a DNS server on 127.0.0.1 and an empty temp hosts file."""

    hosts_text = ""
    records: dict[str, list[str]] = {}  # noqa: RUF012 (read-only)

    def setUp(self) -> None:
        self.dns = LocalDNSServer(self.records)
        self.addCleanup(self.dns.stop)
        self.hosts = temp_path(self)
        write_file(self.hosts, self.hosts_text)
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(self.hosts))
        )

    def listen(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
        s = listener(family, host)
        self.addCleanup(s.close)
        return s

    def probe(
        self, address: str, mod: Module | None = None, timeout: float = 2.0
    ) -> Deferred[ProbeResult]:
        return tcp.probe(self.ctx, address, mod or module(), timeout)

    def assertSuccess(self, r: ProbeResult, ip: str) -> None:
        self.assertEqual((r.result, r.success, r.detail), ("success", True, ""), r.log)
        self.assertEqual(r.ip, ip)
        assert r.connect_duration is not None
        self.assertGreater(r.connect_duration, 0)
        self.assertLess(r.connect_duration, 1.0)  # loopback; room for a loaded machine
        self.assertGreaterEqual(r.duration, r.connect_duration)
        if sys.platform == "linux":
            assert isinstance(r.details, tcp.TCPDetails)
            rtt = r.details.connect.handshake_rtt
            self.assertIsNotNone(rtt)
            assert rtt is not None
            self.assertGreaterEqual(rtt, 0)
            self.assertLess(rtt, 0.1)


class LoopbackTests(_ProbeTestCase):
    @defer.inlineCallbacks
    def test_success_ipv4(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}")
        self.assertSuccess(r, "127.0.0.1")
        self.assertLess(r.resolve_duration or 0.0, 0.01)  # an IP literal: checked, not looked up
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_success_ipv6(self) -> Any:
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback")
        port = self.listen(socket.AF_INET6, "::1").getsockname()[1]
        r = yield self.probe(f"[::1]:{port}")
        self.assertSuccess(r, "::1")

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        # bound but not listening: the port stays ours, and a SYN to it is answered with RST
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}")
        self.assertEqual((r.result, r.success), ("refused", False))
        self.assertIsNone(r.connect_duration)
        assert isinstance(r.details, tcp.TCPDetails)
        self.assertIsNone(r.details.connect.handshake_rtt)
        self.assertEqual(r.ip, "127.0.0.1")
        self.assertIn("ECONNREFUSED", r.detail)
        self.assertGreater(r.duration, 0)
        self.assertLess(r.duration, 0.5)

    @defer.inlineCallbacks
    def test_invalid_addresses(self) -> Any:
        for address in ["nohost", "1.2.3.4:99999", "::1:80", "", "[::1]", "host:port", "-x:80"]:
            r = yield self.probe(address)
            self.assertEqual((r.result, r.success), ("error", False), address)
            self.assertNotEqual(r.detail, "", address)
            self.assertIsNone(r.ip, address)
            self.assertIsNone(r.connect_duration, address)
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_source_ip_address(self) -> Any:
        server = self.listen()
        port = server.getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}", module(source="127.0.0.2"))
        self.assertSuccess(r, "127.0.0.1")
        # the handshake completed, so the connection sits in the accept queue even though the
        # prober has closed its end; bounded wait in case the accept queue is not yet visible
        deadline = time.monotonic() + 1.0
        while True:
            try:
                conn, peer = server.accept()
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                yield sleep(0.01)
        conn.close()
        self.assertEqual(peer[0], "127.0.0.2")

    @defer.inlineCallbacks
    def test_a_tls_file_that_cannot_be_read_fails_the_probe_naming_it(self) -> Any:
        """Such a file is only a warning at load (blackbox reads it per probe, too)."""
        port = self.listen(socket.AF_INET, "127.0.0.1").getsockname()[1]
        tls = TCPProbe(tls=True, tls_config=TLSConfig(ca_file="/nonexistent/ca.pem"))
        r = yield self.probe(f"127.0.0.1:{port}", Module(name="t", prober="tcp", options=tls))
        self.assertEqual((r.result, r.success), ("error", False))
        self.assertIn("tls_config", r.detail)
        self.assertIn("/nonexistent/ca.pem", r.detail)

    @defer.inlineCallbacks
    def test_source_ip_address_family_mismatch(self) -> Any:
        """An IPv4 source for an IPv6 target is a failed probe, not an exception."""
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback")
        port = self.listen(socket.AF_INET6, "::1").getsockname()[1]
        r = yield self.probe(f"[::1]:{port}", module(source="127.0.0.2"))
        self.assertFalse(r.success)
        self.assertEqual(r.result, "error")
        self.assertIn("bind 127.0.0.2", r.detail)

    @defer.inlineCallbacks
    def test_source_ip_address_not_on_this_host_is_a_local_error(self) -> Any:
        """bind() fails before any packet leaves: "error", not "unreachable"."""
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}", module(source="192.0.2.77"))
        self.assertEqual(r.result, "error")
        self.assertIn("bind 192.0.2.77", r.detail)
        self.assertIsNone(r.connect_duration)

    @defer.inlineCallbacks
    def test_200_concurrent(self) -> Any:
        port = self.listen().getsockname()[1]
        t0 = time.perf_counter()
        results = yield defer.gatherResults(
            [self.probe(f"127.0.0.1:{port}") for _ in range(200)], consumeErrors=True
        )
        elapsed = time.perf_counter() - t0
        self.assertEqual(len(results), 200)
        bad = [(r.result, r.detail) for r in results if not r.success]
        self.assertEqual(bad, [])
        self.assertLess(elapsed, 5.0)
        self.assertEqual(reactor.getWriters(), [])
        self.assertEqual(engine_of(self.ctx).pending, 0)


class HostsFileProbeTests(_ProbeTestCase):
    hosts_text = "# test hosts\n127.0.0.1 myhost\n::1 myhost6\n"
    records = {"myhost": ["127.0.0.50"]}  # noqa: RUF012

    @defer.inlineCallbacks
    def test_hosts_name(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"myhost:{port}", module(preferred="ip4"))
        self.assertSuccess(r, "127.0.0.1")
        assert r.resolve_duration is not None
        self.assertGreaterEqual(r.resolve_duration, 0)
        self.assertLessEqual(r.resolve_duration, r.duration)
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_preferred_ip6_falls_back_to_ip4(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"myhost:{port}", module(preferred="ip6", fallback=True))
        self.assertSuccess(r, "127.0.0.1")
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_preferred_ip6_without_fallback(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"myhost:{port}", module(preferred="ip6", fallback=False))
        self.assertEqual((r.result, r.success), ("dns_error", False))
        self.assertIn("myhost", r.detail)
        self.assertIsNone(r.connect_duration)
        self.assertIsNone(r.ip)
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_hosts_ipv6_name(self) -> Any:
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback")
        port = self.listen(socket.AF_INET6, "::1").getsockname()[1]
        r = yield self.probe(f"myhost6:{port}", module(preferred="ip6"))
        self.assertSuccess(r, "::1")


class DNSProbeTests(_ProbeTestCase):
    records = {"dnshost.test": ["127.0.0.1"], "dual.test": ["127.0.0.1", "::1"]}  # noqa: RUF012

    @defer.inlineCallbacks
    def test_a_record(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"dnshost.test:{port}", module(preferred="ip4"))
        self.assertSuccess(r, "127.0.0.1")
        assert r.resolve_duration is not None
        self.assertGreater(r.resolve_duration, 0)
        self.assertLess(r.resolve_duration, 0.5)
        self.assertEqual(self.dns.queries, [("dnshost.test", 1)])

    @defer.inlineCallbacks
    def test_a_record_default_module_falls_back(self) -> Any:
        port = self.listen().getsockname()[1]
        r = yield self.probe(f"dnshost.test:{port}")  # ip6 preferred, fallback on
        self.assertSuccess(r, "127.0.0.1")
        self.assertEqual([t for _, t in self.dns.queries], [28, 1])  # AAAA, then A

    @defer.inlineCallbacks
    def test_aaaa_preferred(self) -> Any:
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback")
        port = self.listen(socket.AF_INET6, "::1").getsockname()[1]
        r = yield self.probe(f"dual.test:{port}")
        self.assertSuccess(r, "::1")

    @defer.inlineCallbacks
    def test_nxdomain(self) -> Any:
        r = yield self.probe("missing.test:80")
        self.assertEqual((r.result, r.success), ("dns_error", False))
        self.assertIn("missing.test", r.detail)
        self.assertIsNone(r.ip)
        self.assertIsNone(r.connect_duration)
        self.assertLess(r.duration, 0.5)


class SilentDNSProbeTests(TestCase):
    def setUp(self) -> None:
        self.silent = SilentDNSServer()
        self.addCleanup(self.silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.silent.address], hosts_path=str(hosts))
        )

    @defer.inlineCallbacks
    def test_dns_timeout(self) -> Any:
        t0 = time.perf_counter()
        r = yield tcp.probe(self.ctx, "slow.test:80", module(), 0.5)
        elapsed = time.perf_counter() - t0
        self.assertIn(r.result, ("dns_error", "timeout"))
        self.assertFalse(r.success)
        self.assertIn("slow.test", r.detail)
        # bounded by the timeout (upper bounds leave room for a loaded machine)
        self.assertLess(elapsed, 1.5)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertGreaterEqual(r.duration, 0.45)
        self.assertLess(r.duration, 1.5)
        self.assertGreaterEqual(self.silent.protocol.received, 1)

    @defer.inlineCallbacks
    def test_cancel_while_resolving(self) -> Any:
        d = tcp.probe(self.ctx, "slow.test:80", module(), 5.0)
        yield sleep(0.05)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(leftover_timers(), [], "timers left after cancel")
