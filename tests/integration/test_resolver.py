"""The resolver: family preference and fallback, timeouts, DNS over real sockets.

Every DNS query goes to a twisted.names server these tests start on 127.0.0.1 (see
``tests/support/loopback.py``); the system's nameserver is never used (every Resolver gets explicit
``servers`` and a temporary hosts file).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.names import dns
from twisted.trial.unittest import TestCase

from netprobe_exporter.resolver import ResolveError, Resolver
from tests.support.loopback import (
    _LISTEN_TRIES,
    LocalDNSServer,
    SilentDNSServer,
    leftover_timers,
    sleep,
    temp_path,
    write_file,
)
from tests.support.reactor import reactor


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


class _Scripted(DatagramProtocol):
    """A UDP server on 127.0.0.1 that answers each query with what ``script`` makes of it."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.queries: list[dns.Message] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        query = dns.Message()
        query.fromStr(datagram)
        self.queries.append(query)
        for reply in self.script(query):
            assert self.transport is not None
            self.transport.write(reply, addr)


def _reply(
    query: dns.Message, ip: str | None, *, name: bytes | None = None, qid: int | None = None,
    answer: int = 1, trunc: int = 0,
) -> bytes:  # fmt: skip
    """A reply to ``query``, or to another id / name, optionally not flagged as a response."""
    q = query.queries[0]
    asked = name if name is not None else q.name.name
    m = dns.Message(id=query.id if qid is None else qid, answer=answer, recDes=1, trunc=trunc)
    m.queries = [dns.Query(asked, q.type, q.cls)]
    if ip is not None:
        m.answers = [dns.RRHeader(asked, dns.A, dns.IN, 60, dns.Record_A(ip, 60))]
    return m.toStr()


class ResolverOwnClientTests(TestCase):
    """The DNS client's own checks: what counts as the answer, TCP after truncation, send
    failures."""

    def setUp(self) -> None:
        hosts = temp_path(self)
        write_file(hosts, "")
        self.hosts = str(hosts)

    def scripted(self, script: Any) -> tuple[_Scripted, tuple[str, int]]:
        proto = _Scripted(script)
        port = reactor.listenUDP(0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return proto, ("127.0.0.1", port.getHost().port)

    @defer.inlineCallbacks
    def test_only_the_reply_to_the_question_asked_is_taken(self) -> Any:
        """Replies with the query's id but another question, another id, no response flag or
        no valid message at all are ignored; the real answer after them is taken."""

        def script(query: dns.Message) -> list[bytes]:
            return [
                _reply(query, "127.0.0.66", name=b"other.test"),
                _reply(query, "127.0.0.67", qid=(query.id + 1) % 65536),
                _reply(query, "127.0.0.68", answer=0),
                b"\x00" * 3,
                _reply(query, "127.0.0.11"),
            ]

        proto, address = self.scripted(script)
        resolver = Resolver(reactor, servers=[address], hosts_path=self.hosts)
        got = yield resolver.resolve("a-only.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.11")
        self.assertEqual(len(proto.queries), 1)

    @defer.inlineCallbacks
    def test_a_reply_from_another_port_is_ignored(self) -> Any:
        """A well-formed answer to the query coming from elsewhere than the nameserver is not
        the answer (an off-path spoofer that guessed the id)."""
        spoofer = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(spoofer.stopListening)
        real: list[Any] = []

        def script(query: dns.Message) -> list[bytes]:
            spoofer.write(_reply(query, "127.0.0.66"), real[0])
            return []

        class Recorder(_Scripted):
            def datagramReceived(self, datagram: bytes, addr: Any) -> None:
                real.append(addr)
                super().datagramReceived(datagram, addr)
                reactor.callLater(0.05, self.answer_late, addr)

            def answer_late(self, addr: Any) -> None:
                assert self.transport is not None
                self.transport.write(_reply(self.queries[-1], "127.0.0.11"), addr)

        proto = Recorder(script)
        port = reactor.listenUDP(0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = ("127.0.0.1", port.getHost().port)
        resolver = Resolver(reactor, servers=[address], hosts_path=self.hosts)
        got = yield resolver.resolve("a-only.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.11")

    @defer.inlineCallbacks
    def test_truncated_answer_is_asked_again_over_tcp(self) -> Any:
        dns_server = LocalDNSServer({"big.test": ["127.0.0.31"]})
        self.addCleanup(dns_server.stop)
        # UDP answers come back truncated, empty; TCP on the same port has the records
        dns_server._ports[0].stopListening()
        udp: list[Any] = []
        for _ in range(_LISTEN_TRIES):
            try:
                proto = _Scripted(lambda q: [_reply(q, None, trunc=1)])
                udp.append(reactor.listenUDP(dns_server.port, proto, interface="127.0.0.1"))
                break
            except CannotListenError:
                yield sleep(0.05)
        self.assertTrue(udp, "could not take the UDP port back")
        self.addCleanup(udp[0].stopListening)
        resolver = Resolver(reactor, servers=[dns_server.address], hosts_path=self.hosts)
        got = yield resolver.resolve("big.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.31")
        self.assertEqual(dns_server.queries, [("big.test", dns.A)])  # the TCP query

    @defer.inlineCallbacks
    def test_cancel_or_timeout_while_asking_over_tcp_leaves_nothing_behind(self) -> Any:
        """A TCP nameserver that accepts and never answers: the deadline still holds, and a
        cancel closes the connection and the timer."""
        from twisted.internet.protocol import Factory, Protocol

        tcp = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(tcp.stopListening)
        port = tcp.getHost().port
        udp = reactor.listenUDP(
            port, _Scripted(lambda q: [_reply(q, None, trunc=1)]), interface="127.0.0.1"
        )
        self.addCleanup(udp.stopListening)
        resolver = Resolver(reactor, servers=[("127.0.0.1", port)], hosts_path=self.hosts)
        t0 = time.perf_counter()
        f = yield self.assertFailure(resolver.resolve("big.test", "ip4", False, 0.3), ResolveError)
        self.assertIn("DNS timeout", str(f))
        self.assertLess(time.perf_counter() - t0, 1.3)
        d = resolver.resolve("big.test", "ip4", False, 5.0)
        yield sleep(0.1)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        yield sleep(0.01)  # the connection's close is delivered on the next turn
        self.assertEqual(leftover_timers(), [], "timers left after cancel")

    @defer.inlineCallbacks
    def test_a_nameserver_the_query_cannot_be_sent_to_hands_over_to_the_next(self) -> Any:
        dns_server = LocalDNSServer({"a-only.test": ["127.0.0.11"]})
        self.addCleanup(dns_server.stop)
        unsendable = ("127.0.0.1", 0)  # sendto fails at once (EINVAL)
        resolver = Resolver(
            reactor, servers=[unsendable, dns_server.address], hosts_path=self.hosts
        )
        got = yield resolver.resolve("a-only.test", "ip4", False, 2.0)
        self.assertEqual(got, "127.0.0.11")
        alone = Resolver(reactor, servers=[unsendable], hosts_path=self.hosts)
        f = yield self.assertFailure(alone.resolve("a-only.test", "ip4", False, 2.0), ResolveError)
        self.assertIn("a-only.test", str(f))
        self.assertIn("not sent", str(f))

    def test_a_name_that_cannot_be_encoded_is_a_resolve_error(self) -> Deferred[Any]:
        resolver = Resolver(reactor, servers=[("127.0.0.1", 9)], hosts_path=self.hosts)
        return self.assertFailure(
            resolver.resolve("x" * 64 + ".test", "ip4", False, 1.0), ResolveError
        )
