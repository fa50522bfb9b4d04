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
