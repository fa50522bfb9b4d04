"""The test DNS zone ``example.test``: records for the dns prober's tests, served on 127.0.0.1.

``_ZoneServer`` serves it over UDP (truncating big answers, as a real server would) and TCP on
the same port; dns_zone_server.py runs one in a process of its own for the differential tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase

from tests.support.reactor import reactor

ZONE = "example.test"
#: resolves to 127.0.0.1 (A only), so a probe of a name from this zone stays on loopback
LOOPBACK = "loopback." + ZONE


def _rr(name: str, type_: int, payload: Any, ttl: int = 300) -> dns.RRHeader:
    return dns.RRHeader(name=name, type=type_, cls=dns.IN, ttl=ttl, payload=payload, auth=True)


class _Zone(ResolverBase):
    """A tiny authoritative zone: A, AAAA, MX, SOA, a big TXT set, NXDOMAIN and SERVFAIL, and
    ``LOOPBACK``'s A record."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def _lookup(self, name: bytes, cls: int, type_: int, timeout: Any) -> Any:
        self.queries += 1
        host = name.decode().lower().rstrip(".")
        soa = _rr(ZONE, dns.SOA, dns.Record_SOA(mname="ns1." + ZONE, rname="admin." + ZONE,
                                                serial=2026112501, ttl=300))  # fmt: skip
        if host == "servfail." + ZONE:  # not a DomainError: the server answers SERVFAIL
            return defer.fail(RuntimeError("broken on purpose"))
        records = {
            ("www." + ZONE, dns.A): [_rr(host, dns.A, dns.Record_A("192.0.2.10"))],
            ("www." + ZONE, dns.AAAA): [_rr(host, dns.AAAA, dns.Record_AAAA("2001:db8::10"))],
            # a name only this zone knows, for targets resolved through it (``dns_server``)
            (LOOPBACK, dns.A): [_rr(host, dns.A, dns.Record_A("127.0.0.1"))],
            (ZONE, dns.MX): [_rr(host, dns.MX, dns.Record_MX(10, "mail." + ZONE))],
            (ZONE, dns.SOA): [soa],
            ("big." + ZONE, dns.TXT): [
                _rr(host, dns.TXT, dns.Record_TXT(b"x" * 200)) for _ in range(10)
            ],
        }
        answers = records.get((host, type_))
        if answers is None:
            if any(h == host for h, _ in records):
                return defer.succeed(([], [soa], []))  # the name exists, not this type
            return defer.fail(error.DomainError(name))
        return defer.succeed((answers, [], []))


class _TruncatingUDP(dns.DNSDatagramProtocol):
    """Classic DNS over UDP: answers past 512 bytes are cut and flagged truncated (TC)."""

    def writeMessage(self, message: dns.Message, address: Any) -> None:
        if len(message.toStr()) > 512:
            message.trunc = 1
            while message.answers and len(message.toStr()) > 512:
                message.answers.pop()
        super().writeMessage(message, address)


class _ZoneServer:
    def __init__(self) -> None:
        self.zone = _Zone()
        factory = server.DNSServerFactory(authorities=[self.zone])
        factory.noisy = False
        for _ in range(20):
            udp = reactor.listenUDP(0, _TruncatingUDP(factory), interface="127.0.0.1")
            port = udp.getHost().port
            try:
                tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
            except CannotListenError:
                udp.stopListening()
                continue
            self._ports = [udp, tcp]
            self.address = f"127.0.0.1:{port}"
            return
        raise RuntimeError("no port for the DNS server")

    def stop(self) -> Any:
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self._ports])
