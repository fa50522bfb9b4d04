"""The icmp prober on real ICMP: loopback, and a namespace with answering and black-holed hosts."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from netprobe_exporter.blackbox import render
from netprobe_exporter.probes import icmp as icmp_prober
from tests.support.probe_fixtures import ICMPTestBase
from tests.support.reactor import reactor


class LoopbackICMPTests(ICMPTestBase):
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
