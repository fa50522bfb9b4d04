"""The icmp prober on real ICMP: loopback, and a namespace with answering and black-holed hosts."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.blackbox import render
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probes import icmp as icmp_prober
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor

MODULES = parse_config(
    """
modules:
  v4: {prober: icmp, icmp: {preferred_ip_protocol: ip4}}
  v6: {prober: icmp}
  ttl: {prober: icmp, icmp: {preferred_ip_protocol: ip4, ttl: 7, payload_size: 600,
                             dont_fragment: true}}
""",
    "icmp.yml",
).modules


def needs_icmp() -> None:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("ICMP sockets need root here (or a ping_group_range that covers us)")


class _Base(TestCase):
    def setUp(self) -> None:
        needs_icmp()
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n::1 localhost6\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        )

    def probe(self, target: str, module: str = "v4", timeout: float = 1.0) -> Any:
        return icmp_prober.probe(self.ctx, target, MODULES[module], timeout)


class LoopbackICMPTests(_Base):
    @defer.inlineCallbacks
    def test_ipv4_and_ipv6_loopback(self) -> Any:
        for target, module in (("127.0.0.1", "v4"), ("localhost", "v4"), ("::1", "v6")):
            r = yield self.probe(target, module)
            self.assertEqual((r.result, r.success), ("success", True), r.detail)
            self.assertGreater(r.details.phases.rtt, 0)
            self.assertLess(r.details.phases.rtt, 0.05)
            self.assertEqual(r.details.hop_limit, 64)
            text = render(r)
            self.assertIn("probe_icmp_reply_hop_limit 64\n", text)
            self.assertIn('probe_icmp_duration_seconds{phase="setup"}', text)

    @defer.inlineCallbacks
    def test_ttl_payload_and_dont_fragment_are_sent(self) -> Any:
        r = yield self.probe("127.0.0.3", "ttl")
        self.assertEqual(r.result, "success", r.detail)

    @defer.inlineCallbacks
    def test_many_probes_share_one_socket_and_all_match(self) -> Any:
        results = yield defer.gatherResults(
            [self.probe(f"127.0.0.{1 + i % 50}") for i in range(200)]
        )
        self.assertEqual({r.result for r in results}, {"success"})
        self.assertEqual(len(icmp_prober.engine_of(self.ctx)._sockets), 1)
        sock = next(iter(icmp_prober.engine_of(self.ctx)._sockets.values()))
        self.assertEqual(sock.pending, {})
        self.assertNotIn(sock, reactor.getReaders())

    @defer.inlineCallbacks
    def test_bad_target_is_an_error(self) -> Any:
        r = yield self.probe("not a host")
        self.assertEqual(r.result, "error")
