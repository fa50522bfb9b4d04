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
#: the resolver cache's names: several A (one listed twice) and an AAAA, with a short TTL ...
MULTI = "multi.cache." + ZONE
MULTI_TTL = 2
MULTI_A = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MULTI_AAAA = ("::1",)
#: ... a CNAME (TTL 1) to MULTI (its A records TTL 300) ...
ALIAS = "alias.cache." + ZONE
#: ... an A only (its AAAA answer: no data, SOA TTL 60 minimum 5) ...
V4_ONLY = "v4.cache." + ZONE
#: ... and NXDOMAIN with an SOA in the authority section (TTL 60, minimum 3)
GONE = "gone.cache." + ZONE


def _rr(name: str, type_: int, payload: Any, ttl: int = 300) -> dns.RRHeader:
    return dns.RRHeader(name=name, type=type_, cls=dns.IN, ttl=ttl, payload=payload, auth=True)


class NXDomain(error.DomainError):
    """NXDOMAIN with these authority records (RFC 2308: the SOA a negative cache reads)."""

    def __init__(self, name: bytes, authority: list[dns.RRHeader]) -> None:
        super().__init__(name)
        self.authority = authority


def _negative_soa(ttl: int, minimum: int) -> dns.RRHeader:
    payload = dns.Record_SOA(mname="ns1." + ZONE, rname="admin." + ZONE, serial=1,
                             minimum=minimum, ttl=ttl)  # fmt: skip
    return _rr(ZONE, dns.SOA, payload, ttl=ttl)


def _cache_names(host: str, type_: int) -> Any:
    """The resolver cache's names (``MULTI`` and the others), or None for another name."""
    multi_a = [_rr(host, dns.A, dns.Record_A(ip), MULTI_TTL) for ip in (*MULTI_A, MULTI_A[0])]
    multi_aaaa = [_rr(host, dns.AAAA, dns.Record_AAAA(ip), MULTI_TTL) for ip in MULTI_AAAA]
    if host == MULTI:
        return defer.succeed((multi_a if type_ == dns.A else multi_aaaa, [], []))
    if host == ALIAS and type_ == dns.A:
        cname = _rr(host, dns.CNAME, dns.Record_CNAME(MULTI), 1)
        return defer.succeed(([cname, *(_rr(MULTI, dns.A, dns.Record_A(ip), 300)
                                        for ip in MULTI_A)], [], []))  # fmt: skip
    if host == V4_ONLY:
        if type_ == dns.A:
            return defer.succeed(([_rr(host, dns.A, dns.Record_A("127.0.0.5"), 300)], [], []))
        return defer.succeed(([], [_negative_soa(60, 5)], []))
    if host == GONE:
        return defer.fail(NXDomain(host.encode(), [_negative_soa(60, 3)]))
    return None


class _Zone(ResolverBase):
    """A tiny authoritative zone: A, AAAA, MX, SOA, a big TXT set, NXDOMAIN and SERVFAIL,
    ``LOOPBACK``'s A record and the resolver cache's names; ``asked`` lists every question."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0
        self.asked: list[tuple[str, int]] = []

    def _lookup(self, name: bytes, cls: int, type_: int, timeout: Any) -> Any:
        self.queries += 1
        host = name.decode().lower().rstrip(".")
        self.asked.append((host, type_))
        cached = _cache_names(host, type_)
        if cached is not None:
            return cached
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


class _ZoneFactory(server.DNSServerFactory):
    """twisted.names' server, but an ``NXDomain`` is answered with its authority records."""

    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        if not failure.check(NXDomain):
            super().gotResolverError(failure, protocol, message, address)
            return
        response = self._responseFromMessage(
            message=message, rCode=dns.ENAME, authority=failure.value.authority
        )
        self.sendReply(protocol, response, address)


class _ZoneServer:
    def __init__(self) -> None:
        self.zone = _Zone()
        factory = _ZoneFactory(authorities=[self.zone])
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


class DoHServer:
    """The zone over DNS over HTTPS (RFC 8484): twisted.web over TLS on 127.0.0.1, answering
    ``POST`` and ``GET ?dns=`` at ``/dns-query`` from ``_Zone``; every request is recorded as
    (method, path, content type, DNS id). ``status``/``content_type`` spoil the answers."""

    def __init__(self, certs: Any) -> None:
        from twisted.internet import ssl
        from twisted.web import resource
        from twisted.web import server as web

        self.zone = _Zone()
        self.requests: list[tuple[str, str, str, int]] = []
        self.status = 200
        self.content_type = "application/dns-message"
        #: send a Content-Length (else twisted.web chunks the body)
        self.sized = False
        outer = self

        class _Query(resource.Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                return outer._render(request)

        root = resource.Resource()
        root.putChild(b"dns-query", _Query())
        site = web.Site(root)
        site.displayTracebacks = False
        cert = ssl.PrivateCertificate.loadPEM(
            certs.leaf_chain.read_bytes() + certs.leaf_key.read_bytes()
        )
        options = ssl.CertificateOptions(
            privateKey=cert.privateKey.original,
            certificate=cert.original,
            acceptableProtocols=[b"http/1.1"],
        )
        self.port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.url = f"https://localhost:{self.port.getHost().port}/dns-query"

    def _render(self, request: Any) -> Any:
        import base64

        from twisted.web import server as web

        method = request.method.decode()
        kind = (request.getHeader(b"content-type") or b"").decode()
        if method == "GET":
            encoded = request.args.get(b"dns", [b""])[0]
            wire = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
        else:
            wire = request.content.read()
        query = dns.Message()
        query.fromStr(wire)
        self.requests.append((method, request.uri.decode(), kind, query.id))
        q = query.queries[0]

        def reply(found: Any, rcode: int = dns.OK) -> None:
            answers, authority, additional = found
            m = dns.Message(id=query.id, answer=1, auth=1, recDes=query.recDes, rCode=rcode)
            m.queries = [q]
            m.answers, m.authority, m.additional = list(answers), list(authority), list(additional)
            request.setResponseCode(self.status)
            request.setHeader(b"content-type", self.content_type.encode())
            body = m.toStr()
            if self.sized:
                request.setHeader(b"content-length", str(len(body)).encode())
            request.write(body)
            request.finish()

        def failed(reason: Any) -> None:
            code = dns.ENAME if reason.check(error.DomainError) else dns.ESERVER
            reply(([], [], []), code)

        d = self.zone._lookup(q.name.name, q.cls, q.type, None)
        d.addCallbacks(reply, failed)
        return web.NOT_DONE_YET

    def stop(self) -> Any:
        return defer.maybeDeferred(self.port.stopListening)
