"""The icmp prober against hosts routed into a network namespace the test builds (root)."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer

from netprobe_exporter.blackbox import render
from netprobe_exporter.probes import icmp as icmp_prober
from tests.support.netns import RoutedNamespace, routed_namespace_or_skip
from tests.support.probe_fixtures import ICMPTestBase


class NamespaceICMPTests(ICMPTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.ns: RoutedNamespace = routed_namespace_or_skip()
        self.addCleanup(self.ns.destroy)

    @defer.inlineCallbacks
    def test_answering_host(self) -> Any:
        r = yield self.probe(self.ns.ns_ip)
        self.assertEqual(r.result, "success", r.detail)

    @defer.inlineCallbacks
    def test_blackholed_host_is_a_timeout_and_leaves_nothing_pending(self) -> Any:
        t0 = time.perf_counter()
        r = yield self.probe(self.ns.blackhole_ip, timeout=0.4)
        self.assertEqual(r.result, "timeout")
        self.assertLess(time.perf_counter() - t0, 1.5)
        self.assertNotIn("probe_icmp_reply_hop_limit", render(r))
        sock = next(iter(icmp_prober.engine_of(self.ctx)._sockets.values()))
        self.assertEqual(sock.pending, {})
