"""The icmp prober against hosts routed into a network namespace the test builds (root)."""

from __future__ import annotations

import os
import time
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
from tests.support.netns import RoutedNamespace, routed_namespace_or_skip
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


class NamespaceICMPTests(_Base):
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
