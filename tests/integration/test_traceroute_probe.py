"""The traceroute prober on real sockets over loopback (one hop: the target itself), and the
kernel behaviour its design rests on: an error-queue answer is EPOLLERR, never EPOLLIN."""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.blackbox import render
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probes import traceroute as tr
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import SilentDNSServer, leftover_timers, temp_path, write_file
from tests.support.probe_fixtures import needs_icmp
from tests.support.procutil import closed_port
from tests.support.reactor import reactor

MODULES = parse_config(
    """
modules:
  udp4: {prober: traceroute, traceroute: {preferred_ip_protocol: ip4, hop_timeout: 500ms}}
  udp6: {prober: traceroute, traceroute: {hop_timeout: 500ms}}
  icmp4: {prober: traceroute, traceroute: {protocol: icmp, preferred_ip_protocol: ip4}}
  icmp6: {prober: traceroute, traceroute: {protocol: icmp}}
  tcp4: {prober: traceroute, traceroute: {protocol: tcp, preferred_ip_protocol: ip4}}
  tcp6: {prober: traceroute, traceroute: {protocol: tcp}}
""",
    "traceroute.yml",
).modules


def test_an_error_queue_answer_is_epollerr_alone() -> None:
    """Why the sockets sit in an inner epoll set: registered with Twisted's epoll reactor,
    this event would be reported as a lost connection, never as a read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ep = select.epoll()
    try:
        sock.setsockopt(socket.IPPROTO_IP, tr.IP_RECVERR, 1)
        sock.setblocking(False)
        ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLERR)
        sock.sendto(b"x", ("127.0.0.1", closed_port()))
        deadline = time.monotonic() + 2.0
        events: list[tuple[int, int]] = []
        while not events and time.monotonic() < deadline:
            events = ep.poll(0.1)
        assert [ev for _, ev in events] == [select.EPOLLERR]
        outer = select.epoll()  # and an epoll set holding it turns readable
        try:
            outer.register(ep.fileno(), select.EPOLLIN)
            assert [ev for _, ev in outer.poll(1.0)] == [select.EPOLLIN]
        finally:
            outer.close()
        _, ancdata, _, _ = sock.recvmsg(512, 1024, tr.MSG_ERRQUEUE)
        assert tr.extended_error(ancdata, v6=False) == (3, 3, "127.0.0.1", None)
    finally:
        ep.close()
        sock.close()


class LoopbackTracerouteTests(TestCase):
    def setUp(self) -> None:
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n::1 localhost6\n")
        resolver = Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        self.ctx = ProbeContext(reactor, resolver, debug=True)

    def probe(self, target: str, module: str, timeout: float = 2.0) -> Any:
        return tr.probe(self.ctx, target, MODULES[module], timeout)

    def assert_clean(self) -> None:
        engine = tr.engine_of(self.ctx)
        self.assertEqual(engine.watched, 0)
        self.assertNotIn(engine, reactor.getReaders())
        self.assertEqual(leftover_timers(), [])

    @defer.inlineCallbacks
    def test_udp_and_tcp_reach_loopback_in_one_hop_without_privilege(self) -> Any:
        port = closed_port()
        cases = [("127.0.0.1", "udp4"), ("localhost", "udp4"), ("::1", "udp6"),
                 (f"127.0.0.1:{port}", "tcp4"), (f"[::1]:{port}", "tcp6")]  # fmt: skip
        for target, module in cases:
            r = yield self.probe(target, module)
            self.assertEqual((r.result, r.success), ("success", True), (target, r.detail))
            self.assertEqual(r.details.method, "errqueue")
            self.assertTrue(r.details.reached)
            self.assertEqual(len(r.details.hops), 1)
            hop = r.details.hops[0]
            self.assertEqual((hop.ttl, hop.address, hop.sent), (1, r.ip, 3))
            self.assertEqual(len(hop.rtts), 3)
            self.assertTrue(all(0 < rtt < 0.5 for rtt in hop.rtts), hop.rtts)
            text = render(r)
            self.assertIn("probe_traceroute_hops 1\n", text)
            self.assertIn(f'probe_traceroute_hop_info{{hop="1",ip="{r.ip}"}} 1\n', text)
            self.assertIn('probe_traceroute_hop_loss_ratio{hop="1"} 0\n', text)
        self.assert_clean()

    @defer.inlineCallbacks
    def test_icmp_reaches_loopback(self) -> Any:
        needs_icmp()
        for target, module in (("127.0.0.1", "icmp4"), ("::1", "icmp6")):
            r = yield self.probe(target, module)
            self.assertEqual(r.result, "success", r.detail)
            self.assertIn(r.details.method, ("errqueue", "raw"))
            self.assertEqual([h.address for h in r.details.hops], [target])
        self.assert_clean()

    @defer.inlineCallbacks
    def test_many_traceroutes_at_once_each_get_their_own_answers(self) -> Any:
        targets = [f"127.0.0.{1 + i}" for i in range(40)]
        results = yield defer.gatherResults([self.probe(t, "udp4") for t in targets])
        self.assertEqual({r.result for r in results}, {"success"})
        self.assertEqual([r.details.hops[0].address for r in results], targets)
        self.assert_clean()

    @defer.inlineCallbacks
    def test_a_cancelled_probe_closes_its_sockets(self) -> Any:
        d = self.probe("127.0.0.1", "udp4")
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            yield d
        self.assert_clean()

    @defer.inlineCallbacks
    def test_without_ping_sockets_or_raw_ones_the_error_says_what_to_allow(self) -> Any:
        real = socket.socket

        def refused(family: int = -1, kind: int = -1, proto: int = 0) -> socket.socket:
            if kind in (socket.SOCK_DGRAM, socket.SOCK_RAW) and proto in (
                socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6
            ):  # fmt: skip
                raise PermissionError(errno.EACCES, "Permission denied")
            return real(family, kind, proto)

        self.patch(tr.socket, "socket", refused)
        r = yield self.probe("127.0.0.1", "icmp4")
        self.assertEqual(r.result, "error")
        self.assertIn("net.ipv4.ping_group_range", r.detail)
        self.assertIn("CAP_NET_RAW", r.detail)
        self.assert_clean()

    @defer.inlineCallbacks
    def test_a_kernel_without_the_error_queue_is_named(self) -> Any:
        real = socket.socket.setsockopt

        def no_recverr(sock: socket.socket, level: int, option: int, value: Any) -> None:
            if (level, option) == (socket.IPPROTO_IP, tr.IP_RECVERR):
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            real(sock, level, option, value)

        self.patch(socket.socket, "setsockopt", no_recverr)
        r = yield self.probe("127.0.0.1", "udp4")
        self.assertEqual(r.result, "error")
        self.assertIn("IP_RECVERR", r.detail)
        self.assertIn("protocol: icmp with CAP_NET_RAW", r.detail)
        self.assert_clean()
