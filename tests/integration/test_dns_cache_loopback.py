"""CachingResolver against a real DNS server on 127.0.0.1 (tests/support/dns_zone.py's zone,
which records every question it is asked).

Each test gets its own server and an empty hosts file; the system's nameserver is never used.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from twisted.internet import defer
from twisted.names import dns
from twisted.trial.unittest import TestCase

from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.model import DNSCacheSettings
from netprobe_exporter.resolver import Answer, ResolveError, Resolver
from tests.support.dns_zone import (
    ALIAS,
    GONE,
    MULTI,
    MULTI_A,
    MULTI_AAAA,
    MULTI_TTL,
    V4_ONLY,
    _ZoneServer,
)
from tests.support.loopback import leftover_timers, sleep, temp_path, write_file
from tests.support.reactor import reactor

LOOKUPS = 10_000


class CacheLoopbackTests(TestCase):
    def setUp(self) -> None:
        self.server = _ZoneServer()
        self.addCleanup(self.server.stop)
        host, port = self.server.address.rsplit(":", 1)
        self.servers = [(host, int(port))]
        hosts = temp_path(self)
        write_file(hosts, "")
        self.hosts = str(hosts)
        self.cache = CachingResolver(
            reactor,
            servers=self.servers,
            hosts_path=self.hosts,
            settings=DNSCacheSettings(min_ttl=0.0),
        )

    def asked(self, name: str) -> Counter[int]:
        return Counter(t for n, t in self.server.zone.asked if n == name)

    @defer.inlineCallbacks
    def test_many_resolves_send_one_query_per_family_per_ttl(self) -> Any:
        started = time.monotonic()
        # half at once (merged into the query in flight), half after (answered from the cache)
        burst = [self.cache.resolve_all(MULTI, (4, 6), 5.0) for _ in range(LOOKUPS // 2)]
        found = yield defer.gatherResults(burst)
        later = [self.cache.resolve_all(MULTI, (4, 6), 5.0) for _ in range(LOOKUPS // 2)]
        found += yield defer.gatherResults(later)
        elapsed = time.monotonic() - started
        self.assertEqual({tuple(f) for f in found}, {(*MULTI_A, *MULTI_AAAA)})
        # one query per family per TTL: a slow machine may have crossed a TTL or two
        windows = int(elapsed // MULTI_TTL) + 1
        asked = self.asked(MULTI)
        self.assertEqual(set(asked), {dns.A, dns.AAAA})
        for qtype, count in asked.items():
            self.assertLessEqual(count, windows, (qtype, count, elapsed))
        self.assertEqual(self.cache.queries, sum(asked.values()))
        self.assertEqual(self.cache.hits + self.cache.misses, LOOKUPS * 2)  # two families each
        self.assertGreater(self.cache.hits, 0)
        self.assertEqual(leftover_timers(), [], "every waiter's timer disarmed")

    @defer.inlineCallbacks
    def test_a_new_query_after_the_ttl(self) -> Any:
        ip = yield self.cache.resolve(MULTI, "ip4", False, 2.0)
        self.assertEqual(ip, MULTI_A[0])
        ip = yield self.cache.resolve(MULTI, "ip4", False, 2.0)
        self.assertEqual(self.asked(MULTI)[dns.A], 1, "the second one a hit, within the TTL")
        yield sleep(MULTI_TTL + 0.3)
        ip = yield self.cache.resolve(MULTI, "ip4", False, 2.0)
        self.assertEqual(ip, MULTI_A[0])
        self.assertEqual(self.asked(MULTI)[dns.A], 2)

    @defer.inlineCallbacks
    def test_answers_read_as_sent(self) -> Any:
        """The plain resolver's Answer: every address once in answer order, the smallest TTL
        (a CNAME's too), RFC 2308's negative TTL from the SOA."""
        plain = Resolver(reactor, servers=self.servers, hosts_path=self.hosts)
        answer = yield plain.query(MULTI, 4, 2.0)
        self.assertEqual(answer, Answer(MULTI_A, float(MULTI_TTL)))
        answer = yield plain.query(ALIAS, 4, 2.0)
        self.assertEqual(answer, Answer(MULTI_A, 1.0))
        answer = yield plain.query(V4_ONLY, 6, 2.0)
        self.assertEqual(answer, Answer((), 5.0))
        answer = yield plain.query(GONE, 4, 2.0)
        self.assertEqual(answer, Answer((), 3.0, nxdomain=True))
        self.assertEqual(plain.queries, 4)
        ips = yield plain.resolve_all(MULTI, (6, 4), 2.0)
        self.assertEqual(ips, [*MULTI_AAAA, *MULTI_A])

    @defer.inlineCallbacks
    def test_negative_answers_are_kept(self) -> Any:
        for _ in range(3):
            f = yield self.assertFailure(self.cache.resolve(GONE, "ip4", True, 2.0), ResolveError)
            self.assertEqual(str(f), f"{GONE}: no such host (NXDOMAIN)")
            ips = yield self.cache.resolve_all(V4_ONLY, (4, 6), 2.0)
            self.assertEqual(ips, ["127.0.0.5"])
            ip = yield self.cache.resolve(V4_ONLY, "ip6", True, 2.0)
            self.assertEqual(ip, "127.0.0.5")
        self.assertEqual(self.asked(GONE), Counter({dns.A: 1}))
        self.assertEqual(self.asked(V4_ONLY), Counter({dns.A: 1, dns.AAAA: 1}))
