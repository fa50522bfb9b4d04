"""The tcp prober against addresses routed into a network namespace the test builds (root)."""

from __future__ import annotations

import errno
import time
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.probes import ProbeContext, tcp
from netprobe_exporter.probes.connect import engine_of
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import (
    LocalDNSServer,
    leftover_timers,
    sleep,
    temp_path,
    write_file,
)
from tests.support.netns import RoutedNamespace, routed_namespace_or_skip
from tests.support.probe_fixtures import tcp_module as module
from tests.support.reactor import reactor


class NamespaceTests(TestCase):
    """Paths that need a real router: a blackhole (SYN dropped) and ICMP host unreachable."""

    def setUp(self) -> None:
        self.ns: RoutedNamespace = routed_namespace_or_skip()
        self.addCleanup(self._destroy)
        hosts = temp_path(self)
        write_file(hosts, f"{self.ns.blackhole_ip} blackholed\n")
        self.dns = LocalDNSServer({})
        self.addCleanup(self.dns.stop)
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )

    def _destroy(self) -> None:
        self.ns.destroy()
        self.assertFalse(self.ns.exists(), f"namespace {self.ns.name} left behind")

    @defer.inlineCallbacks
    def test_timeout(self) -> Any:
        t0 = time.perf_counter()
        r = yield tcp.probe(self.ctx, f"{self.ns.blackhole_ip}:80", module(), 0.5)
        elapsed = time.perf_counter() - t0
        self.assertEqual((r.result, r.success), ("timeout", False), r.log)
        self.assertIsNone(r.connect_duration)
        self.assertEqual(r.ip, self.ns.blackhole_ip)
        self.assertGreaterEqual(r.duration, 0.45)
        self.assertLess(r.duration, 1.5)
        self.assertLess(elapsed, 1.5)
        self.assertEqual(reactor.getWriters(), [])
        self.assertEqual(engine_of(self.ctx).pending, 0)

    @defer.inlineCallbacks
    def test_unreachable(self) -> Any:
        t0 = time.perf_counter()
        r = yield tcp.probe(self.ctx, f"{self.ns.unreachable_ip}:80", module(), 0.5)
        elapsed = time.perf_counter() - t0
        self.assertEqual((r.result, r.success), ("unreachable", False), r.log)
        self.assertIn(errno.errorcode[errno.EHOSTUNREACH], r.detail)
        self.assertIsNone(r.connect_duration)
        self.assertLess(r.duration, 0.5)  # the ICMP error, not the 0.5 s timeout
        self.assertLess(elapsed, 1.0)

    @defer.inlineCallbacks
    def test_cancel_while_connecting(self) -> Any:
        d = tcp.probe(self.ctx, f"{self.ns.blackhole_ip}:80", module(), 5.0)
        yield sleep(0.05)
        engine = engine_of(self.ctx)
        self.assertEqual(engine.pending, 1)
        connector = next(iter(engine._pending.values()))
        self.assertIn(engine, reactor.getReaders())
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(engine.pending, 0)
        self.assertNotIn(engine, reactor.getReaders())
        self.assertIsNone(connector._sock)  # socket closed
        self.assertEqual(leftover_timers(), [])

    @defer.inlineCallbacks
    def test_cancel_while_connecting_to_resolved_name(self) -> Any:
        """The same through the name path (hosts file → blackholed address)."""
        d = tcp.probe(self.ctx, "blackholed:80", module(), 5.0)
        yield sleep(0.05)
        engine = engine_of(self.ctx)
        self.assertEqual(engine.pending, 1)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(engine.pending, 0)
        self.assertNotIn(engine, reactor.getReaders())
        self.assertEqual(leftover_timers(), [])
        self.assertEqual(self.dns.queries, [])
