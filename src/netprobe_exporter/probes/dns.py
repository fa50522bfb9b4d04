"""The dns prober: one query to the target DNS server, checked as blackbox_exporter 0.23 does.

Messages are built and parsed with ``twisted.names.dns``; the exchange is ours, so it behaves
as blackbox's (miekg/dns) does: one UDP datagram or one TCP exchange, no retry over TCP when a
UDP answer is truncated (the truncated answer is what is checked), recursion as configured.
DNS over TLS (``dns_over_tls``) runs the TCP exchange inside TLS, port 853 by default, the
server name being ``tls_config.server_name`` or the target host. Phases: ``resolve`` (the
server's address), ``connect`` (TCP connect, plus the TLS handshake; ~0 for UDP) and
``request`` (query sent to answer received). Regular expressions in ``validate_*_rrs`` match
each record written as miekg/dns writes it (``name.<TAB>ttl<TAB>IN<TAB>A<TAB>192.0.2.1``), so
patterns written for blackbox keep working.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IProtocolFactory, IReadDescriptor
from twisted.internet.protocol import Factory, Protocol
from twisted.names import dns
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import probes
from netprobe_exporter.addresses import HostPort, parse_dns_server
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeFailure,
    ProbeReactor,
    ProbeResult,
    ProberSpec,
    doh,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import (
    ADDRESSING,
    HANDSHAKE,
    RESOLVING,
    ConnectInfo,
    adopt,
    connect,
    resolve,
)
from netprobe_exporter.probes.tls import (
    TLS_OPTION,
    TLSConfig,
    TLSInfo,
    creator_or_fail,
    handshake_info,
    tls_connection,
)
from netprobe_exporter.schema import (
    BOOL,
    REGEXES,
    STRINGS,
    TEXT,
    Check,
    Choice,
    Nested,
    Opt,
    Reading,
    Section,
    require,
)

#: DNS rcodes by name, as blackbox (miekg/dns) spells them
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}  # fmt: skip
QUERY_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
               "AAAA": 28, "SRV": 33, "NAPTR": 35, "DS": 43, "DNSKEY": 48, "CAA": 257,
               "ANY": 255}  # fmt: skip
QUERY_CLASSES = {"IN": 1, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}


@dataclass(frozen=True, slots=True)
class RRValidator:
    fail_if_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_all_match_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_none_matches_regexp: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class DNSProbe(Options):
    query_name: str = ""
    query_type: str = "ANY"
    query_class: str = "IN"
    transport_protocol: str = "udp"
    recursion_desired: bool = True
    #: empty means NOERROR only
    valid_rcodes: tuple[str, ...] = ()
    validate_answer_rrs: RRValidator = field(default_factory=RRValidator)
    validate_authority_rrs: RRValidator = field(default_factory=RRValidator)
    validate_additional_rrs: RRValidator = field(default_factory=RRValidator)
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    #: DNS over TLS (RFC 7858): needs transport_protocol tcp; port 853 when the target has none
    dns_over_tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    #: DNS over HTTPS (RFC 8484, ``probes.doh``): the target is the server's https URL
    dns_over_https: bool = False
    dns_over_https_method: str = "POST"
    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None


LOOKUP = Family(
    "netprobe_dns_lookup_duration_seconds", "histogram",
    "DNS modules: time from sending the query to its answer, queries that got one.", order=110,
)  # fmt: skip


@dataclass(slots=True)
class DNSPhases:
    """Seconds per phase (blackbox's ``phase`` label values); one not reached stays 0."""

    #: the server's address
    resolve: float
    #: the TCP connect, TLS handshake included (UDP: the local socket setup)
    connect: float = 0.0
    #: query sent to answer received
    request: float = 0.0

    def items(self) -> tuple[tuple[str, float], ...]:
        """(phase, seconds) in blackbox's order: every phase, always."""
        return (("resolve", self.resolve), ("connect", self.connect), ("request", self.request))


@dataclass(slots=True)
class DNSDetails(Details):
    """What a DNS exchange showed."""

    #: None until the server's address was looked for (the target did not parse)
    phases: DNSPhases | None = None
    answer_rrs: int = 0
    authority_rrs: int = 0
    additional_rrs: int = 0
    query_succeeded: bool = False
    #: the zone serial, for SOA queries (0 when no SOA came back); None for other queries
    serial: float | None = None
    connect: ConnectInfo = field(default_factory=ConnectInfo)
    tls: TLSInfo | None = None

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        self.connect.observe(out)
        if self.query_succeeded:
            out.histogram(LOOKUP.name, 0.0 if self.phases is None else self.phases.request)
        tls_.observe(out, self.tls)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        phases = () if self.phases is None else self.phases.items()
        out["probe_dns_duration_seconds"] = [({"phase": p}, round(v, 9)) for p, v in phases]
        out["probe_dns_answer_rrs"] = [({}, float(self.answer_rrs))]
        out["probe_dns_authority_rrs"] = [({}, float(self.authority_rrs))]
        out["probe_dns_additional_rrs"] = [({}, float(self.additional_rrs))]
        out["probe_dns_query_succeeded"] = [({}, 1.0 if self.query_succeeded else 0.0)]
        if self.serial is not None:
            out["probe_dns_serial"] = [({}, self.serial)]
        if self.tls is not None:
            tls_.blackbox(out, self.tls)


BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_dns_duration_seconds", "Duration of DNS request by phase"),
    BlackboxFamily("probe_dns_answer_rrs",
                   "Returns number of entries in the answer resource record list"),
    BlackboxFamily("probe_dns_authority_rrs",
                   "Returns number of entries in the authority resource record list"),
    BlackboxFamily("probe_dns_additional_rrs",
                   "Returns number of entries in the additional resource record list"),
    BlackboxFamily("probe_dns_query_succeeded",
                   "Displays whether or not the query was executed successfully"),
    BlackboxFamily("probe_dns_serial", "Returns the serial number of the zone"),
    *tls_.BLACKBOX_FAMILIES,
)  # fmt: skip

_TYPE_NAMES = {v: k for k, v in QUERY_TYPES.items()}
_CLASS_NAMES = {v: k for k, v in QUERY_CLASSES.items()}
_RCODE_NAMES = {v: k for k, v in RCODES.items()}


def _name(n: Any) -> str:
    text = str(n)
    return text if text.endswith(".") else text + "."


def rr_string(rr: dns.RRHeader) -> str:
    """A record as miekg/dns's ``RR.String()`` writes it (what blackbox's regexps see)."""
    p: Any = rr.payload
    kind = _TYPE_NAMES.get(rr.type, f"TYPE{rr.type}")
    if rr.type == dns.A:
        data = p.dottedQuad()
    elif rr.type == dns.AAAA:
        data = socket.inet_ntop(socket.AF_INET6, p.address)
    elif rr.type in (dns.NS, dns.CNAME, dns.PTR):
        data = _name(p.name)
    elif rr.type == dns.MX:
        data = f"{p.preference} {_name(p.name)}"
    elif rr.type == dns.SOA:
        data = (f"{_name(p.mname)} {_name(p.rname)} {p.serial} {p.refresh} {p.retry} "
                f"{p.expire} {p.minimum}")  # fmt: skip
    elif rr.type == dns.TXT:
        data = " ".join('"' + s.decode("utf-8", "replace").replace('"', '\\"') + '"'
                        for s in p.data)  # fmt: skip
    elif rr.type == dns.SRV:
        data = f"{p.priority} {p.weight} {p.port} {_name(p.target)}"
    else:
        data = str(p)
    cls = _CLASS_NAMES.get(rr.cls, f"CLASS{rr.cls}")
    return f"{_name(rr.name)}\t{rr.ttl}\t{cls}\t{kind}\t{data}"


def _valid_rrs(rrs: list[dns.RRHeader], v: RRValidator, result: ProbeResult, what: str) -> bool:
    texts = [rr_string(rr) for rr in rrs]
    if not texts and (v.fail_if_not_matches_regexp or v.fail_if_none_matches_regexp):
        result.note(f"{what}: a match is required but no RRs returned", "error")
        return False
    for text in texts:
        result.note("Validating RR", rr=text)
        for rx in v.fail_if_matches_regexp:
            if rx.search(text):
                result.note("At least one RR matched regexp", "error", regexp=rx.pattern, rr=text)
                return False
        for rx in v.fail_if_not_matches_regexp:
            if not rx.search(text):
                result.note("At least one RR did not match regexp", "error", regexp=rx.pattern,
                            rr=text)  # fmt: skip
                return False
    # blackbox's (misleadingly named) rule: fail unless every RR matches every pattern
    if v.fail_if_all_match_regexp and not all(
        rx.search(t) for t in texts for rx in v.fail_if_all_match_regexp
    ):
        result.note("Not all RRs matched regexp", "error")
        return False
    if v.fail_if_none_matches_regexp and not any(
        rx.search(t) for t in texts for rx in v.fail_if_none_matches_regexp
    ):
        result.note("None of the RRs matched any regexp", "error")
        return False
    return True


@implementer(IReadDescriptor)
class _UDPExchange:
    """One query over a connected, non-blocking UDP socket registered as a reader.

    Not a Twisted UDP port: an ICMP port-unreachable arrives as EPOLLERR, which Twisted turns
    into tearing the port down unseen; here it is read back as ECONNREFUSED, a refused probe.
    """

    def __init__(
        self,
        reactor: ProbeReactor,
        clock: Callable[[], float],
        ip: str,
        port: int,
        source: str | None,
        payload: bytes,
        qid: int,
    ) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._reactor, self._id = reactor, qid
        t0 = clock()
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self._sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            if source:
                self._sock.bind((source, 0))
            self._sock.connect((ip, port))
            self.sent_at = clock()
            self.connect_duration = self.sent_at - t0  # a UDP "connect" is local: as Go's dial
            self._sock.send(payload)
        except OSError as exc:
            self.close()
            raise ProbeFailure("error", f"udp: {exc.strerror}") from None
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:
        return "dns-probe"

    def doRead(self) -> None:
        while self._sock is not None and not self.done.called:
            try:
                data = self._sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                self._error(exc.errno or 0)
                return
            if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self._id:
                self.done.callback(data)

    def connectionLost(self, reason: Failure) -> None:
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if self._sock else 0
        self._error(err)

    def _error(self, err: int) -> None:
        if self.done.called:
            return
        if err == errno.ECONNREFUSED:
            self.done.errback(ProbeFailure("refused", "DNS server port unreachable (refused)"))
        else:
            self.done.errback(
                ProbeFailure("error", f"udp: {os.strerror(err) if err else 'closed'}")
            )

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._reactor.removeReader(self)
            self._sock.close()
            self._sock = None


@implementer(IHandshakeListener)
class _TCPExchange(Protocol):
    """One length-prefixed query and answer over an adopted TCP connection (or TLS on it).

    Over TLS the query goes out when the handshake is done, so the request phase is the
    exchange alone and the handshake counts as connecting, as blackbox measures it.
    """

    def __init__(self, payload: bytes, clock: Callable[[], float], tls: bool = False) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._clock = clock
        self._payload = payload
        self._buffer = b""
        self._tls = tls
        self.sent_at = 0.0

    def connectionMade(self) -> None:
        if not self._tls:
            self._send()

    def handshakeCompleted(self) -> None:
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = self._clock()
        self.transport.write(struct.pack("!H", len(self._payload)) + self._payload)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= 2:
            (size,) = struct.unpack("!H", self._buffer[:2])
            if len(self._buffer) >= 2 + size and not self.done.called:
                self.done.callback(self._buffer[2 : 2 + size])

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.done.called:
            return
        if self._tls and not self.sent_at:
            why = reason.getErrorMessage()
            self.done.errback(ProbeFailure("tls_error", f"TLS handshake failed: {why}"))
        else:
            self.done.errback(ProbeFailure("protocol_error", "connection closed before an answer"))


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Query the DNS server ``address`` (``host[:port]``, port 53 by default)."""
    opts = options_of(module, DNSProbe)

    async def work(result: ProbeResult, started: float) -> None:
        result.details = DNSDetails()
        await _run(ctx, address, opts, timeout, started, result)

    return run_probe(ctx, work)


def _message(opts: DNSProbe) -> tuple[bytes, int]:
    query_id = random.randint(0, 0xFFFF)
    m = dns.Message(id=query_id, recDes=1 if opts.recursion_desired else 0)
    name = opts.query_name
    encoded = name.encode("ascii") if name.isascii() else name.encode("idna")
    m.queries = [dns.Query(encoded, QUERY_TYPES[opts.query_type], QUERY_CLASSES[opts.query_class])]
    return m.toStr(), query_id


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: DNSProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    info = result.details
    assert isinstance(info, DNSDetails)
    clock = ctx.clock.monotonic
    doh_target = None
    try:
        if opts.dns_over_https:
            doh_target = doh.parse_target(address)
            hp = HostPort(doh_target.host, doh_target.port, doh_target.ip_version)
        elif "://" in address:
            raise ValueError(f"{address!r} is a URL: a DNS over HTTPS target needs "
                             "dns_over_https: true")  # fmt: skip
        else:
            hp = parse_dns_server(address, 853 if opts.dns_over_tls else 53)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    ip = await resolve(
        ctx, hp.host, hp.ip_version, opts.preferred_ip_protocol, opts.ip_protocol_fallback,
        timeout, result, dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    phases = info.phases = DNSPhases(result.resolve_duration or 0.0)
    if ip is None:
        return
    creator = None
    if doh_target is not None:
        creator = _doh_creator(opts.tls_config, hp.host, result)
        if creator is None:
            return
    elif opts.dns_over_tls:  # checked after resolution, as blackbox does
        if opts.transport_protocol != "tcp":
            result.fail("error", "Configuration error: Expected transport protocol tcp for DoT")
            return
        creator = creator_or_fail(opts.tls_config, hp.host, result)
        if creator is None:
            return
    payload, query_id = _message(opts)
    result.note(
        "Making DNS query",
        target=f"{ip}:{hp.port}",
        dial_protocol="https"
        if doh_target is not None
        else opts.transport_protocol + ("-tls" if opts.dns_over_tls else ""),
        query=opts.query_name,
        type=opts.query_type,
        **{"class": opts.query_class},
    )
    remaining = timeout - (clock() - started)
    exchange: _TCPExchange | _UDPExchange | doh.Exchange
    if doh_target is not None or opts.transport_protocol == "tcp":
        t0 = clock()
        sock = await connect(
            ctx, ip, hp.port, opts.source_ip_address, remaining, result, info.connect
        )
        if sock is None:
            phases.connect = clock() - t0
            return
        phases.connect = result.connect_duration or 0.0
        stream: _TCPExchange | doh.Exchange
        if doh_target is not None:
            wire = doh.request(doh_target, opts.dns_over_https_method, payload)
            stream = doh.Exchange(wire, clock)
        else:
            stream = _TCPExchange(payload, clock, tls=creator is not None)
        exchange = stream
        factory: IProtocolFactory = Factory.forProtocol(lambda: stream)
        if creator is not None:
            factory = TLSMemoryBIOFactory(creator, True, factory)
        adopt(ctx, sock, factory)
    else:
        try:
            exchange = _UDPExchange(
                ctx.reactor, clock, ip, hp.port, opts.source_ip_address, payload, query_id
            )
        except ProbeFailure as exc:
            result.fail(exc.result, str(exc))
            return
        phases.connect = exchange.connect_duration
    remaining = timeout - (clock() - started)
    answer = exchange.done
    timer = ctx.reactor.callLater(max(remaining, 0.0), answer.cancel)
    try:
        raw = await answer
        if creator is not None:  # the TLS handshake counts as connecting
            phases.connect = exchange.sent_at - t0
        phases.request = clock() - exchange.sent_at
    except defer.CancelledError:
        if exchange.sent_at:
            phases.request = clock() - exchange.sent_at
        result.fail("timeout", "DNS query timed out")
        return
    except ProbeFailure as exc:
        result.fail(exc.result, str(exc))
        return
    finally:
        if timer.active():
            timer.cancel()
        if isinstance(exchange, _UDPExchange):
            exchange.close()
        transport = getattr(exchange, "transport", None)
        if isinstance(exchange, doh.Exchange) and exchange.sent_at:
            # what https would show of the server's certificate (blackbox has no DoH)
            conn = tls_connection(transport)
            if conn is not None:
                insecure = opts.tls_config.insecure_skip_verify
                info.tls = handshake_info(conn, verified=not insecure)
        if not isinstance(exchange, _UDPExchange) and transport is not None:
            transport.abortConnection()
    try:
        response = _decode(raw)
    except ProbeFailure as exc:
        result.fail(exc.result, str(exc))
        return
    _check(response, opts, result)


def _decode(raw: bytes) -> dns.Message:
    """Parse an answer, or raise ProbeFailure saying how it is malformed.

    Twisted's parser raises a bare ``EOFError`` on a short message, and stops quietly when the
    records end before the header's counts say; miekg/dns (blackbox) refuses such a message
    unless it is flagged truncated, and so do we.
    """
    what = f"malformed DNS response ({len(raw)} bytes)"
    if len(raw) < 12:
        raise ProbeFailure("protocol_error", f"{what}: shorter than a DNS header (12 bytes)")
    response = dns.Message()
    try:
        response.fromStr(raw)
    except Exception as exc:
        raise ProbeFailure("protocol_error", f"{what}: {str(exc) or type(exc).__name__}") from None
    counts = struct.unpack("!4H", raw[4:12])
    found = (len(response.queries), len(response.answers), len(response.authority),
             len(response.additional))  # fmt: skip
    if found != counts and not response.trunc:
        raise ProbeFailure("protocol_error", f"{what}: records end before the header's counts")
    return response


def _check(response: dns.Message, opts: DNSProbe, result: ProbeResult) -> None:
    info = result.details
    assert isinstance(info, DNSDetails)
    info.answer_rrs = len(response.answers)
    info.authority_rrs = len(response.authority)
    info.additional_rrs = len(response.additional)
    info.query_succeeded = True
    result.note("Got response", rcode=_RCODE_NAMES.get(response.rCode, response.rCode),
                answers=info.answer_rrs, truncated=bool(response.trunc))  # fmt: skip
    if opts.query_type == "SOA":
        info.serial = 0.0
        for rr in response.answers:
            if isinstance(rr.payload, dns.Record_SOA):
                info.serial = float(rr.payload.serial)
    valid = opts.valid_rcodes or ("NOERROR",)
    if response.rCode not in {RCODES[r] for r in valid}:
        name = _RCODE_NAMES.get(response.rCode, str(response.rCode))
        result.fail("protocol_error", f"rcode {name} is not one of {', '.join(valid)}")
        return
    for rrs, validator, what in (
        (response.answers, opts.validate_answer_rrs, "Answer RRs"),
        (response.authority, opts.validate_authority_rrs, "Authority RRs"),
        (response.additional, opts.validate_additional_rrs, "Additional RRs"),
    ):
        if not _valid_rrs(rrs, validator, result, what):
            result.fail("protocol_error", f"{what} validation failed")
            return
    result.success, result.result = True, "success"


_RR_KEYS = ("fail_if_matches_regexp", "fail_if_all_match_regexp", "fail_if_not_matches_regexp",
            "fail_if_none_matches_regexp")  # fmt: skip
RR_VALIDATOR = Section(RRValidator(), tuple(Opt(key, REGEXES) for key in _RR_KEYS))
_MISSING_NAME = "query name must be set for DNS module"


def _rcodes(r: Reading) -> None:
    given = r.values.get("valid_rcodes", ())
    for rc in given if isinstance(given, tuple) else ():
        if rc not in RCODES:
            r.error("valid_rcodes", f'unknown rcode "{rc}"')


def _dot_needs_tcp(r: Reading) -> None:
    if r.values.get("dns_over_tls") and r.values.get("transport_protocol", "udp") != "tcp":
        # blackbox loads this and fails every probe; so do we, and say so at load
        r.c.warn(r.nodes["dns_over_tls"], r.at("dns_over_tls"),
                 "needs transport_protocol: tcp; every probe will fail")  # fmt: skip


def _doh_checked(r: Reading) -> None:
    if r.values.get("dns_over_https") and r.values.get("dns_over_tls"):
        r.error("dns_over_https", "only one of dns_over_tls and dns_over_https may be true")
        r.values.pop("dns_over_https")
    if "dns_over_https_method" in r.nodes and not r.values.get("dns_over_https"):
        r.c.warn(r.nodes["dns_over_https_method"], r.at("dns_over_https_method"),
                 "takes effect only with dns_over_https: true")  # fmt: skip
    if r.values.get("dns_over_https") and r.values.get("transport_protocol") == "udp":
        r.c.warn(r.nodes["transport_protocol"], r.at("transport_protocol"),
                 "is not used: DNS over HTTPS runs over TCP")  # fmt: skip


OPTIONS = Section(
    DNSProbe(),
    (
        *ADDRESSING,
        *RESOLVING,
        require("query_name", _MISSING_NAME),  # a dns module must name its query
        Opt("query_name", TEXT),
        Opt("query_type", Choice(tuple(QUERY_TYPES), 'unknown type "{}"', str.upper)),
        Opt("query_class", Choice(tuple(QUERY_CLASSES), 'unknown class "{}"', str.upper)),
        Opt("transport_protocol", Choice(("udp", "tcp"), '"{}" must be udp or tcp')),
        Opt("recursion_desired", BOOL),
        Opt("valid_rcodes", STRINGS),
        Check(_rcodes),
        *(
            Opt(key, Nested(RR_VALIDATOR))
            for key in ("validate_answer_rrs", "validate_authority_rrs", "validate_additional_rrs")
        ),
        Opt("dns_over_tls", BOOL),
        Check(_dot_needs_tcp),
        Opt("dns_over_https", BOOL),
        Opt("dns_over_https_method", Choice(doh.METHODS, '"{}" must be POST or GET', str.upper)),
        Check(_doh_checked),
        TLS_OPTION,
    ),
)


def _doh_creator(cfg: TLSConfig, host: str, result: ProbeResult) -> Any:
    """TLS for DoH, offering ``http/1.1`` (the exchange's) by ALPN; None with the probe failed."""
    try:
        return tls_.client_creator(cfg, host, alpn=(b"http/1.1",))
    except Exception as exc:
        result.fail("error", f"tls_config: {exc}")
        return None


def target_host(address: str) -> str:
    """The DNS server's host (of a DNS over HTTPS URL too)."""
    return doh.parse_target(address).host if "://" in address else parse_dns_server(address).host


def check_address(address: str) -> str | None:
    """A DNS server (``host[:port]``), or a DNS over HTTPS server's https URL."""
    try:
        if "://" in address:
            doh.parse_target(address)
        else:
            parse_dns_server(address)
    except ValueError as exc:
        return str(exc)
    return None


def _families(options: Options) -> tuple[Family, ...]:
    assert isinstance(options, DNSProbe)
    over_tcp = options.transport_protocol == "tcp" or options.dns_over_https
    fams = (LOOKUP, HANDSHAKE) if over_tcp else (LOOKUP,)
    return (*fams, *tls_.FAMILIES) if options.dns_over_tls or options.dns_over_https else fams


def shown(options: Options, section: dict[str, object]) -> dict[str, object]:
    """The DoH keys only for a DoH module: blackbox has none, so its modules show none."""
    assert isinstance(options, DNSProbe)
    if not options.dns_over_https:
        section.pop("dns_over_https", None)
        section.pop("dns_over_https_method", None)
    return section


PROBER = probes.register(
    ProberSpec(
        name="dns",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        families=(HANDSHAKE, LOOKUP, *tls_.FAMILIES),
        families_for=_families,
        blackbox_families=BLACKBOX_FAMILIES,
        shown=shown,
    )
)
