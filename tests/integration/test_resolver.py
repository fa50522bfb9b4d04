"""The resolver: family preference and fallback, timeouts, DNS over real sockets.

Every DNS query goes to a twisted.names server these tests start on 127.0.0.1 (see
``tests/support/loopback.py``); the system's nameserver is never used (every Resolver gets explicit
``servers`` and a temporary hosts file).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.names import dns
from twisted.trial.unittest import TestCase

from netprobe_exporter.resolver import ResolveError, Resolver
from tests.support.loopback import (
    LocalDNSServer,
    SilentDNSServer,
    leftover_timers,
    sleep,
    temp_path,
    write_file,
)

reactor: Any = _reactor


class ResolverTests(TestCase):
    """Resolver against a DNS server on 127.0.0.1 and a temporary hosts file."""

    def setUp(self) -> None:
        self.dns = LocalDNSServer(
            {
                "a-only.test": ["127.0.0.11"],
                "aaaa-only.test": ["::1"],
                "dual.test": ["127.0.0.12", "::1"],
                "empty.test": [],
                # also in the hosts file, with a different address
                "hosted.test": ["127.0.0.99"],
            }
        )
        self.addCleanup(self.dns.stop)
        self.hosts = temp_path(self)
        write_file(
            self.hosts,
            "127.0.0.21 hosted.test hosted4\n::1 hosted6\n127.0.0.22 hosteddual\n::1 hosteddual\n",
        )
        self.resolver = Resolver(reactor, servers=[self.dns.address], hosts_path=str(self.hosts))

    @defer.inlineCallbacks
    def test_hosts_file_never_reaches_dns(self) -> Any:
        for host, preferred, fallback, want in [
            ("hosted.test", "ip4", False, "127.0.0.21"),
            ("hosted.test", "ip6", True, "127.0.0.21"),
            ("hosted6", "ip6", False, "::1"),
            ("hosted6", "ip4", True, "::1"),
            ("hosteddual", "ip6", False, "::1"),
            ("hosteddual", "ip4", False, "127.0.0.22"),
        ]:
            got = yield self.resolver.resolve(host, preferred, fallback, 2.0)
            self.assertEqual(got, want, (host, preferred, fallback))
        # a hosts-file name without the wanted family is an error, still without a DNS query
        for host, preferred in [("hosted4", "ip6"), ("hosted6", "ip4")]:
            yield self.assertFailure(
                self.resolver.resolve(host, preferred, False, 2.0), ResolveError
            )
        self.assertEqual(self.dns.queries, [])
        # the counting server does count: a name absent from the hosts file is queried
        got = yield self.resolver.resolve("a-only.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.11")
        self.assertEqual(self.dns.queries, [("a-only.test", dns.A)])

    @defer.inlineCallbacks
    def test_dns_family_preference(self) -> Any:
        got = yield self.resolver.resolve("dual.test", "ip6", False, 2.0)
        self.assertEqual(got, "::1")
        got = yield self.resolver.resolve("dual.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.12")

    @defer.inlineCallbacks
    def test_dns_fallback(self) -> Any:
        got = yield self.resolver.resolve("a-only.test", "ip6", True, 2.0)
        self.assertEqual(got, "127.0.0.11")
        self.assertEqual(self.dns.queries, [("a-only.test", dns.AAAA), ("a-only.test", dns.A)])
        got = yield self.resolver.resolve("aaaa-only.test", "ip4", True, 2.0)
        self.assertEqual(got, "::1")

    @defer.inlineCallbacks
    def test_dns_no_fallback(self) -> Any:
        f = yield self.assertFailure(
            self.resolver.resolve("a-only.test", "ip6", False, 2.0), ResolveError
        )
        self.assertIn("a-only.test", str(f))
        self.assertEqual(self.dns.queries, [("a-only.test", dns.AAAA)])
        yield self.assertFailure(
            self.resolver.resolve("aaaa-only.test", "ip4", False, 2.0), ResolveError
        )

    @defer.inlineCallbacks
    def test_dns_no_address_at_all(self) -> Any:
        f = yield self.assertFailure(
            self.resolver.resolve("empty.test", "ip6", True, 2.0), ResolveError
        )
        self.assertIn("empty.test", str(f))

    @defer.inlineCallbacks
    def test_nxdomain(self) -> Any:
        f = yield self.assertFailure(
            self.resolver.resolve("missing.test", "ip4", True, 2.0), ResolveError
        )
        self.assertIn("missing.test", str(f))
        self.assertIn("NXDOMAIN", str(f))

    @defer.inlineCallbacks
    def test_hosts_file_edit_seen_by_resolver(self) -> Any:
        got = yield self.resolver.resolve("hosted4", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.21")
        st = self.hosts.stat()
        write_file(self.hosts, "127.0.0.23 hosted4\n", mtime=st.st_mtime + 5)
        got = yield self.resolver.resolve("hosted4", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.23")
        # hosted.test left the hosts file: now it goes to DNS
        got = yield self.resolver.resolve("hosted.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.99")


class ResolverTimeoutTests(TestCase):
    def setUp(self) -> None:
        self.silent = SilentDNSServer()
        self.addCleanup(self.silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "")
        self.resolver = Resolver(reactor, servers=[self.silent.address], hosts_path=str(hosts))

    @defer.inlineCallbacks
    def test_timeout_is_bounded(self) -> Any:
        t0 = time.perf_counter()
        f = yield self.assertFailure(
            self.resolver.resolve("slow.test", "ip4", True, 0.3), ResolveError
        )
        elapsed = time.perf_counter() - t0
        self.assertIn("slow.test", str(f))
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 1.3)  # the timeout, with room for a loaded machine
        self.assertGreaterEqual(self.silent.protocol.received, 1)

    @defer.inlineCallbacks
    def test_cancel_leaves_nothing_behind(self) -> Any:
        """Cancelling a resolution in flight errbacks with CancelledError and leaks no timer or
        socket (trial's dirty-reactor check would fail the test)."""
        d = self.resolver.resolve("slow.test", "ip4", True, 5.0)
        yield sleep(0.05)
        self.assertGreaterEqual(self.silent.protocol.received, 1)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertEqual(leftover_timers(), [], "timers left after cancel")


class ResolverRegressionTests(TestCase):
    @defer.inlineCallbacks
    def test_two_dead_nameservers_cost_one_timeout(self) -> Any:
        """The probe timeout bounds the whole resolution, not each nameserver in turn."""
        silent = [SilentDNSServer(), SilentDNSServer()]
        for s in silent:
            self.addCleanup(s.stop)
        hosts = temp_path(self)
        write_file(hosts, "")
        resolver = Resolver(reactor, servers=[s.address for s in silent], hosts_path=str(hosts))
        t0 = time.perf_counter()
        yield self.assertFailure(resolver.resolve("slow.test", "ip4", True, 1.0), ResolveError)
        self.assertLess(time.perf_counter() - t0, 1.6)  # one timeout, not two

    @defer.inlineCallbacks
    def test_cancelling_one_lookup_leaves_others_of_the_same_name_alone(self) -> Any:
        dns_server = LocalDNSServer({"shared.test": ["127.0.0.7"]})
        self.addCleanup(dns_server.stop)
        hosts = temp_path(self)
        write_file(hosts, "")
        resolver = Resolver(reactor, servers=[dns_server.address], hosts_path=str(hosts))
        first = resolver.resolve("shared.test", "ip4", True, 2.0)
        second = resolver.resolve("shared.test", "ip4", True, 2.0)
        first.cancel()
        yield self.assertFailure(first, defer.CancelledError)
        ip = yield second
        self.assertEqual(ip, "127.0.0.7")
