"""Continuous mode's resolver: DNS answers kept for their TTL, identical lookups merged.

Thousands of targets of one name would otherwise send a query per probe. ``CachingResolver``
answers ``Resolver.query`` (one name, one family, one set of nameservers) from a cache, so
``resolve`` and ``resolve_all`` both use it; the hosts file is still read first by those and
never cached here (it has its own mtime check).

- A positive answer is kept for its TTL, clamped to [min_ttl, max_ttl]; a negative one
  (NXDOMAIN, or no address of that family: a v4-only name must not cost an AAAA query per
  probe) for the SOA's negative TTL (min_ttl without an SOA), at least min_ttl and at most
  negative_ttl; a server's error (SERVFAIL, REFUSED) for min_ttl. Timeouts and socket errors
  are not kept: they say nothing about the name.
- A lookup of what is already being asked joins that query: one query, many waiters. Each
  waiter has its own deadline and its own cancel; when the last waiter leaves (its timeout, or
  a cancel) the query is cancelled. A query past half its deadline is not joined: a new one
  goes out, so a lost datagram costs a name at most that, even while probes of it overlap.
- A hit answers synchronously: no timer, no socket, a dict lookup.
- At most ``max_entries`` entries: when full, the expired ones go, then the oldest.

``/probe`` does not use this: blackbox resolves afresh per request, and ``/probe``'s DNS timing
must stay real.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from netprobe_exporter.model import DNSCacheSettings
from netprobe_exporter.resolver import Answer, ResolveError, Resolver, Server

__all__ = ["CachingResolver", "DNSCacheSettings"]

#: what one question is known by: name (lowercased), family, nameservers (None: resolv.conf's)
Key = tuple[str, int, tuple[Server, ...] | None]
Outcome = Answer | ResolveError


class _Entry:
    __slots__ = ("expires", "outcome")

    def __init__(self, outcome: Outcome, expires: float) -> None:
        self.outcome = outcome
        self.expires = expires


class _Waiter:
    """One lookup waiting for a shared query, under its own deadline."""

    __slots__ = ("flight", "host", "result", "timer")

    def __init__(self, flight: _Flight, host: str, timeout: float, clock: IReactorTime) -> None:
        self.flight = flight
        self.host = host
        self.result: Deferred[Answer] = Deferred(self._cancelled)
        self.timer: IDelayedCall | None = clock.callLater(max(timeout, 0.001), self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        self.flight.leave(self)
        self.result.errback(ResolveError(f"{self.host}: DNS timeout"))

    def _cancelled(self, _: Deferred[Answer]) -> None:
        self._disarm()
        self.flight.leave(self)

    def _disarm(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def deliver(self, outcome: Outcome) -> None:
        self._disarm()
        if self.result.called:  # cancelled by an earlier waiter's callback meanwhile
            return
        if isinstance(outcome, Answer):
            self.result.callback(outcome)
        else:
            self.result.errback(ResolveError(str(outcome), outcome.answered))


class _Flight:
    """One query in flight and the lookups waiting for it."""

    __slots__ = ("cache", "deadline", "done", "host", "key", "query", "timeout", "waiters")

    def __init__(self, cache: CachingResolver, key: Key, host: str, timeout: float) -> None:
        self.cache = cache
        self.key = key
        self.host = host
        #: the query's own deadline (its first waiter's): a lost reply is not waited for
        #: longer, and a lookup that would join too late starts a query of its own
        self.timeout = timeout
        self.deadline = cache.clock.seconds() + timeout
        #: insertion-ordered: answered in the order they came
        self.waiters: dict[_Waiter, None] = {}
        self.query: Deferred[Answer] | None = None
        self.done = False

    def join(self, host: str, timeout: float) -> _Waiter:
        waiter = _Waiter(self, host, timeout, self.cache.clock)
        self.waiters[waiter] = None
        return waiter

    def start(self, query: Deferred[Answer]) -> None:
        self.query = query
        query.addCallbacks(self._finished, self._failed)

    def leave(self, waiter: _Waiter) -> None:
        self.waiters.pop(waiter, None)
        if self.waiters or self.done:
            return
        self.done = True  # nobody waits any more: the query goes (and is not kept)
        self.cache._landed(self)
        if self.query is not None:
            self.query.cancel()

    def _finished(self, answer: Answer) -> None:
        self._settle(answer)

    def _failed(self, reason: Failure) -> None:
        if self.done:  # cancelled by ``leave``
            return
        value = reason.value
        if isinstance(value, ResolveError):
            self._settle(value)
        else:
            self._settle(ResolveError(f"{self.host}: {reason.getErrorMessage()}"))

    def _settle(self, outcome: Outcome) -> None:
        if self.done:
            return
        self.done = True
        self.cache._landed(self)
        self.cache._keep(self.key, outcome)  # before the waiters: their callbacks may ask again
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters:
            waiter.deliver(outcome)


class CachingResolver(Resolver):
    """A ``Resolver`` whose DNS answers are cached per (name, family, nameservers).

    ``hits``, ``misses`` and ``queries`` (DNS queries sent) count as they go, for tests and
    metrics.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        servers: Sequence[Server] | None = None,
        hosts_path: str = "/etc/hosts",
        resolv_conf: str = "/etc/resolv.conf",
        settings: DNSCacheSettings | None = None,
    ) -> None:
        super().__init__(reactor, servers, hosts_path, resolv_conf)
        self.settings = settings if settings is not None else DNSCacheSettings()
        #: lookups answered from the cache
        self.hits = 0
        #: lookups not in the cache (they joined a query in flight or started one)
        self.misses = 0
        #: insertion order is age: the first entry is the oldest
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        #: (expiry, sequence, key, entry), to drop expired entries without a scan
        self._expiry: list[tuple[float, int, Key, _Entry]] = []
        self._seq = itertools.count()
        self._flights: dict[Key, _Flight] = {}

    def counts(self) -> tuple[int, int, int]:
        """Hits, misses and queries sent so far (the exporter's own metrics)."""
        return self.hits, self.misses, self.queries

    def __len__(self) -> int:
        return len(self._entries)

    def configure(self, settings: DNSCacheSettings) -> None:
        """New bounds, from a config reload; a change empties the cache (queries in flight
        go on and are kept under the new bounds)."""
        if settings == self.settings:
            return
        self.settings = settings
        self._entries.clear()
        self._expiry.clear()

    def query(
        self,
        host: str,
        family: int,
        timeout: float,
        servers: Sequence[Server] | None = None,
    ) -> Deferred[Answer]:
        """``Resolver.query`` from the cache, else through the query in flight for the same
        question, else a new query; ``timeout`` bounds this lookup only."""
        key: Key = (host.lower(), family, tuple(servers) if servers else None)
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self.clock.seconds():
            self.hits += 1
            outcome = entry.outcome
            if isinstance(outcome, Answer):
                return defer.succeed(outcome)
            return defer.fail(ResolveError(str(outcome), outcome.answered))
        self.misses += 1
        flight = self._flights.get(key)
        if (
            flight is not None
            and flight.deadline - self.clock.seconds() >= min(timeout, flight.timeout) / 2
        ):
            return flight.join(host, timeout).result
        # none in flight, or one so old that its reply is likely lost (UDP is not resent):
        # a query of its own, which later lookups join (the old one keeps its waiters)
        flight = self._flights[key] = _Flight(self, key, host, timeout)
        waiter = flight.join(host, timeout)
        flight.start(self._ask(host, family, servers, timeout))
        return waiter.result

    def _ask(
        self, host: str, family: int, servers: Sequence[Server] | None, timeout: float
    ) -> Deferred[Answer]:
        """The DNS query itself, under its first waiter's deadline (later waiters keep their
        own; the last to leave cancels it sooner)."""
        return Resolver.query(self, host, family, timeout, servers)

    def _landed(self, flight: _Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def _keep(self, key: Key, outcome: Outcome) -> None:
        lifetime = self._lifetime(outcome)
        if lifetime <= 0:
            return
        now = self.clock.seconds()
        entries = self._entries
        self._drop_expired(now)
        if entries.pop(key, None) is None:
            while len(entries) >= self.settings.max_entries:
                entries.popitem(last=False)  # the oldest (a dict's first would skip holes)
        entry = entries[key] = _Entry(outcome, now + lifetime)
        heapq.heappush(self._expiry, (entry.expires, next(self._seq), key, entry))
        if len(self._expiry) > 2 * len(entries) + 1024:  # evicted entries' rows pile up
            self._expiry = [(e.expires, next(self._seq), k, e) for k, e in entries.items()]
            heapq.heapify(self._expiry)

    def _drop_expired(self, now: float) -> None:
        expiry, entries = self._expiry, self._entries
        while expiry and expiry[0][0] <= now:
            _, _, key, entry = heapq.heappop(expiry)
            if entries.get(key) is entry:
                del entries[key]

    def _lifetime(self, outcome: Outcome) -> float:
        s = self.settings
        if s.max_ttl <= 0:
            return 0.0
        if isinstance(outcome, ResolveError):  # a server's error, briefly; a timeout, never
            return s.min_ttl if outcome.answered else 0.0
        if outcome.addresses:
            ttl = outcome.ttl if outcome.ttl is not None else 0.0
            return max(s.min_ttl, min(ttl, s.max_ttl))
        ttl = outcome.ttl if outcome.ttl is not None else s.min_ttl
        return max(s.min_ttl, min(ttl, s.negative_ttl, s.max_ttl))
