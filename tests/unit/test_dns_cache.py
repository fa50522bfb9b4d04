"""CachingResolver on a deterministic clock, over a fake query layer (no sockets).

``Upstream`` replaces the DNS query itself (``CachingResolver._ask``): each question asked is
recorded and stays pending until the test answers it, so what is cached, merged, timed out and
cancelled is seen exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.model import DNSCacheSettings
from netprobe_exporter.resolver import Answer, ResolveError, Server

HOST = "www.cache.test"
V4 = ("192.0.2.1", "192.0.2.2")
V6 = ("2001:db8::1",)


class Upstream(CachingResolver):
    """A CachingResolver whose DNS queries are answered by the test."""

    def __init__(self, clock: MemoryReactorClock, **settings: Any) -> None:
        super().__init__(
            clock,
            servers=[("127.0.0.1", 53)],
            hosts_path="/nonexistent/hosts",
            settings=DNSCacheSettings(**settings),
        )
        self.asked: list[tuple[str, int]] = []
        self.pending: dict[tuple[str, int], Deferred[Answer]] = {}
        self.cancelled: list[tuple[str, int]] = []

    def _ask(
        self, host: str, family: int, servers: Sequence[Server] | None, timeout: float
    ) -> Deferred[Answer]:
        key = (host.lower(), family)
        self.queries += 1
        self.asked.append(key)
        d: Deferred[Answer] = Deferred(lambda _: self.cancelled.append(key))
        self.pending[key] = d
        return d

    def answer(self, family: int, outcome: Answer | ResolveError, host: str = HOST) -> None:
        d = self.pending.pop((host, family))
        if isinstance(outcome, Answer):
            d.callback(outcome)
        else:
            d.errback(outcome)


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def cache(self, **settings: Any) -> Upstream:
        return Upstream(self.clock, **settings)

    def ask4(self, r: Upstream, host: str = HOST, timeout: float = 5.0) -> Deferred[str]:
        return r.resolve(host, "ip4", False, timeout)

    def prime(self, r: Upstream, ttl: float | None, addresses: tuple[str, ...] = V4) -> None:
        """One A lookup, answered with ``addresses`` and ``ttl``."""
        d = self.ask4(r)
        r.answer(4, Answer(addresses, ttl))
        if addresses:
            self.assertEqual(self.successResultOf(d), addresses[0])
        else:
            self.failureResultOf(d, ResolveError)

    def test_ttl_honoured(self) -> None:
        r = self.cache()
        self.prime(r, 10.0)
        self.clock.advance(9.9)
        d = self.ask4(r)
        # a hit is answered at once, without a timer or a query
        self.assertEqual(self.successResultOf(d), V4[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((r.hits, r.misses, r.queries), (1, 1, 1))
        self.clock.advance(0.2)
        d = self.ask4(r)
        self.assertNoResult(d)
        self.assertEqual(r.asked, [(HOST, 4), (HOST, 4)])
        r.answer(4, Answer(V4, 10.0))
        self.assertEqual(self.successResultOf(d), V4[0])

    def test_min_and_max_clamp(self) -> None:
        r = self.cache(min_ttl=5.0, max_ttl=60.0)
        self.prime(r, 1.0)
        self.clock.advance(4.9)
        self.successResultOf(self.ask4(r))
        self.assertEqual(r.queries, 1, "a TTL under min_ttl is kept min_ttl")
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 2)
        r.answer(4, Answer(V4, 3600.0))
        self.clock.advance(59.9)
        self.successResultOf(self.ask4(r))
        self.assertEqual(r.queries, 2)
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 3, "a TTL over max_ttl is kept max_ttl")

    def test_ttl_zero_is_kept_min_ttl(self) -> None:
        r = self.cache(min_ttl=1.0)
        self.prime(r, 0.0)
        self.clock.advance(0.9)
        self.successResultOf(self.ask4(r))
        self.assertEqual(r.queries, 1)
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 2)

    def test_nxdomain_kept_for_the_soa_ttl(self) -> None:
        r = self.cache(negative_ttl=30.0)
        d = self.ask4(r)
        r.answer(4, Answer((), 7.0, nxdomain=True))
        self.assertIn("no such host (NXDOMAIN)", str(self.failureResultOf(d, ResolveError).value))
        self.clock.advance(6.9)
        f = self.failureResultOf(self.ask4(r), ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: no such host (NXDOMAIN)")
        self.assertEqual(r.queries, 1)
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 2)

    def test_nxdomain_capped_by_negative_ttl_and_min_ttl_without_soa(self) -> None:
        r = self.cache(min_ttl=2.0, negative_ttl=30.0)
        d = self.ask4(r)
        r.answer(4, Answer((), 3600.0, nxdomain=True))
        self.failureResultOf(d, ResolveError)
        self.clock.advance(29.9)
        self.failureResultOf(self.ask4(r), ResolveError)
        self.assertEqual(r.queries, 1)
        self.clock.advance(0.2)
        d = self.ask4(r)
        self.assertEqual(r.queries, 2, "an SOA TTL over negative_ttl is kept negative_ttl")
        r.answer(4, Answer((), None, nxdomain=True))  # no SOA: min_ttl
        self.failureResultOf(d, ResolveError)
        self.clock.advance(1.9)
        self.failureResultOf(self.ask4(r), ResolveError)
        self.assertEqual(r.queries, 2)
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 3)

    def test_no_aaaa_is_cached(self) -> None:
        """A v4-only name probed with ip6 and fallback: the empty AAAA answer is kept, so
        later probes send no query at all."""
        r = self.cache()
        d = r.resolve(HOST, "ip6", True, 5.0)
        r.answer(6, Answer((), 20.0))
        r.answer(4, Answer(V4, 300.0))
        self.assertEqual(self.successResultOf(d), V4[0])
        self.clock.advance(19.0)
        self.assertEqual(self.successResultOf(r.resolve(HOST, "ip6", True, 5.0)), V4[0])
        f = self.failureResultOf(r.resolve(HOST, "ip6", False, 5.0), ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: no IPv6 address")
        self.assertEqual(r.asked, [(HOST, 6), (HOST, 4)])

    def test_servfail_kept_min_ttl(self) -> None:
        r = self.cache(min_ttl=2.0)
        d = self.ask4(r)
        r.answer(4, ResolveError(f"{HOST}: DNS error: DNSServerError", answered=True))
        self.failureResultOf(d, ResolveError)
        self.clock.advance(1.9)
        f = self.failureResultOf(self.ask4(r), ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: DNS error: DNSServerError")
        self.assertEqual(r.queries, 1)
        self.clock.advance(0.2)
        self.ask4(r)
        self.assertEqual(r.queries, 2)

    def test_timeout_and_socket_errors_are_not_cached(self) -> None:
        r = self.cache()
        d = self.ask4(r, timeout=1.0)
        self.clock.advance(1.0)
        f = self.failureResultOf(d, ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: DNS timeout")
        self.assertEqual(r.cancelled, [(HOST, 4)], "the query goes with its last waiter")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d = self.ask4(r)
        self.assertEqual(r.queries, 2, "a timeout is not kept")
        r.answer(4, ResolveError(f"{HOST}: DNS socket lost: gone"))
        self.failureResultOf(d, ResolveError)
        self.ask4(r)
        self.assertEqual(r.queries, 3, "a socket error is not kept")

    def test_concurrent_lookups_of_one_name_send_one_query(self) -> None:
        r = self.cache()
        waiting = [self.ask4(r) for _ in range(1000)]
        self.assertEqual(r.queries, 1)
        r.answer(4, Answer(V4, 60.0))
        self.assertEqual({self.successResultOf(d) for d in waiting}, {V4[0]})
        self.assertEqual(self.clock.getDelayedCalls(), [], "every waiter's timer disarmed")
        self.assertEqual((r.misses, r.queries), (1000, 1))

    def test_a_waiter_cancel_leaves_the_others_alone(self) -> None:
        r = self.cache()
        first, second = self.ask4(r), self.ask4(r)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(r.cancelled, [])
        r.answer(4, Answer(V4, 60.0))
        self.assertEqual(self.successResultOf(second), V4[0])

    def test_the_last_cancel_cancels_the_query(self) -> None:
        r = self.cache()
        waiting = [self.ask4(r) for _ in range(3)]
        for d in waiting:
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertEqual(r.cancelled, [(HOST, 4)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d = self.ask4(r)
        self.assertEqual(r.queries, 2, "a new lookup asks anew")
        r.answer(4, Answer(V4, 60.0))
        self.successResultOf(d)

    def test_each_waiter_has_its_own_deadline(self) -> None:
        r = self.cache()
        patient = self.ask4(r, timeout=10.0)
        hasty = self.ask4(r, timeout=1.0)
        self.clock.advance(1.0)
        f = self.failureResultOf(hasty, ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: DNS timeout")
        self.assertNoResult(patient)
        self.assertEqual(r.cancelled, [])
        # a later waiter with a short deadline is not held by the patient one's either
        late = self.ask4(r, timeout=0.5)
        self.clock.advance(0.5)
        self.failureResultOf(late, ResolveError)
        r.answer(4, Answer(V4, 60.0))
        self.assertEqual(self.successResultOf(patient), V4[0])

    def test_max_entries_bound(self) -> None:
        r = self.cache(max_entries=3)
        for i in range(5):
            d = self.ask4(r, f"n{i}.test")
            r.answer(4, Answer((f"192.0.2.{i}",), 60.0), host=f"n{i}.test")
            self.successResultOf(d)
            self.assertLessEqual(len(r), 3)
        self.assertEqual(len(r), 3)
        for i in (2, 3, 4):  # the newest are kept
            self.successResultOf(self.ask4(r, f"n{i}.test"))
        self.assertEqual(r.queries, 5)
        self.ask4(r, "n0.test")  # the oldest went
        self.assertEqual(r.queries, 6)

    def test_full_cache_drops_expired_entries_before_the_oldest(self) -> None:
        r = self.cache(max_entries=3, min_ttl=0.0)
        for host, ttl in (("old.test", 60.0), ("short.test", 1.0), ("mid.test", 60.0)):
            d = self.ask4(r, host)
            r.answer(4, Answer(("192.0.2.9",), ttl), host=host)
            self.successResultOf(d)
        self.clock.advance(2.0)
        d = self.ask4(r, "new.test")
        r.answer(4, Answer(("192.0.2.8",), 60.0), host="new.test")
        self.successResultOf(d)
        self.assertEqual(len(r), 3)
        for host in ("old.test", "mid.test", "new.test"):
            self.successResultOf(self.ask4(r, host))
        self.assertEqual(r.queries, 4, "the expired entry made room, not the oldest")

    def test_configure_max_ttl_zero_turns_the_cache_off(self) -> None:
        r = self.cache()
        self.prime(r, 300.0)
        r.configure(DNSCacheSettings(max_ttl=0.0, min_ttl=0.0))
        d = self.ask4(r)
        self.assertEqual(r.queries, 2, "configure emptied the cache")
        other = self.ask4(r)
        self.assertEqual(r.queries, 2, "lookups in flight are still merged")
        r.answer(4, Answer(V4, 300.0))
        self.successResultOf(d)
        self.successResultOf(other)
        self.ask4(r)
        self.assertEqual((r.queries, r.hits), (3, 0), "nothing kept")
        r.configure(DNSCacheSettings(max_ttl=0.0, min_ttl=0.0))  # unchanged: nothing happens
        self.assertEqual(len(r.pending), 1)

    def test_a_lost_reply_does_not_hold_overlapping_lookups_for_ever(self) -> None:
        # probes of one name overlap (a lookup every 0.1 s, each with 1 s): a query past half
        # its deadline is not joined, so a lost datagram costs at most that
        r = self.cache()
        timed_out: list[Failure] = []
        lookups = []
        for _ in range(50):
            lookups.append(r.resolve(HOST, "ip4", False, 1.0))
            self.clock.advance(0.1)
        last = lookups.pop()
        for d in lookups:
            d.addErrback(timed_out.append)
        self.assertTrue(9 <= r.queries <= 11, r.queries)  # one per 0.5 s, not one for all
        self.assertTrue(all(f.check(ResolveError) for f in timed_out))
        latest = r.pending.pop((HOST, 4))
        latest.callback(Answer(V4, 60.0))  # the newest query is answered
        self.assertEqual(self.successResultOf(last), V4[0])
        self.assertEqual(self.successResultOf(r.resolve(HOST, "ip4", False, 1.0)), V4[0])

    def test_resolve_all_merges_families(self) -> None:
        r = self.cache()
        d = r.resolve_all(HOST, (4, 6), 5.0)
        self.assertEqual(sorted(r.asked), [(HOST, 4), (HOST, 6)], "both families at once")
        r.answer(6, Answer(V6, 60.0))
        self.assertNoResult(d)
        r.answer(4, Answer(V4, 60.0))
        self.assertEqual(self.successResultOf(d), [*V4, *V6])
        self.assertEqual(self.successResultOf(r.resolve_all(HOST, (6, 4), 5.0)), [*V6, *V4])
        self.assertEqual(self.successResultOf(r.resolve(HOST, "ip6", False, 5.0)), V6[0])
        self.assertEqual((r.queries, r.hits), (2, 3))

    def test_resolve_all_fails_with_a_failed_family_and_names_families_when_none_answer(
        self,
    ) -> None:
        r = self.cache()
        d = r.resolve_all(HOST, (4, 6), 1.0)
        r.answer(4, Answer(V4, 60.0))
        self.clock.advance(1.0)  # AAAA never answers: its waiter times out
        # every address means every family's: IPv6's must not look gone for a timeout
        f = self.failureResultOf(d, ResolveError)
        self.assertEqual(str(f.value), f"{HOST}: DNS timeout")
        d = r.resolve_all("v6less.test", (6,), 1.0)
        r.answer(6, Answer((), 60.0), host="v6less.test")
        f = self.failureResultOf(d, ResolveError)
        self.assertEqual(str(f.value), "v6less.test: no IPv6 address")
        d = r.resolve_all("gone.test", (4, 6), 1.0)
        r.answer(4, Answer((), 60.0, nxdomain=True), host="gone.test")
        r.answer(6, Answer((), 60.0, nxdomain=True), host="gone.test")
        f = self.failureResultOf(d, ResolveError)
        self.assertEqual(str(f.value), "gone.test: no such host (NXDOMAIN)")
        d = r.resolve_all("empty.test", (4, 6), 1.0)
        r.answer(4, Answer((), 60.0), host="empty.test")
        r.answer(6, Answer((), 60.0), host="empty.test")
        f = self.failureResultOf(d, ResolveError)
        self.assertEqual(str(f.value), "empty.test: no IPv4 or IPv6 address")

    def test_resolve_all_of_an_address_is_that_address(self) -> None:
        r = self.cache()
        self.assertEqual(self.successResultOf(r.resolve_all("::1", (4, 6), 1.0)), ["::1"])
        f = self.failureResultOf(r.resolve_all("127.0.0.1", (6,), 1.0), ResolveError)
        self.assertIn("127.0.0.1", str(f.value))
        self.assertEqual(r.queries, 0)

    def test_cancelling_resolve_all_cancels_both_queries(self) -> None:
        r = self.cache()
        d = r.resolve_all(HOST, (4, 6), 5.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(sorted(r.cancelled), [(HOST, 4), (HOST, 6)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_name_case_shares_an_entry(self) -> None:
        r = self.cache()
        self.prime(r, 60.0)
        self.successResultOf(self.ask4(r, HOST.upper()))
        self.assertEqual(r.queries, 1)
