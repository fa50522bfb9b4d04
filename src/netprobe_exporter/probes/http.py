"""The http prober: one request (following redirects), checked as blackbox_exporter 0.23 does.

Twisted's ``Agent`` has no per-phase hooks, so each hop connects through an endpoint of ours:
the shared raw connector (clocked connect), then the socket is adopted by the reactor, wrapped
in TLS for https, and wrapped again in a thin protocol that timestamps the TLS handshake and the
response's first byte. Phases (summed over redirects, as blackbox does): ``resolve``,
``connect``, ``tls``, ``processing`` (connection ready to first response byte) and ``transfer``
(first byte to end of body, final response only).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urljoin

import brotli
import yaml
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ProxyAgent,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IResponse
from zope.interface import implementer

from netprobe_exporter import __version__, probes
from netprobe_exporter.addresses import URL, parse_host, parse_url, redact_url
from netprobe_exporter.durations import byte_size
from netprobe_exporter.model import Details, Module, Options, Sample, Secret, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeFailure,
    ProbeResult,
    ProberSpec,
    http2,
    http3,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import oauth2 as oauth2_
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import (
    HANDSHAKE,
    IP_PROTOCOL,
    RESOLVING,
    ConnectInfo,
    adopt,
    connect,
    resolve,
)
from netprobe_exporter.probes.httpcel import CEL, CELProgram, check_off_reactor
from netprobe_exporter.probes.httpproxy import (
    PROXY_OPTIONS,
    ConnectTunnel,
    ProxyChoice,
    ProxyURL,
    free_mapping,
)
from netprobe_exporter.probes.oauth2 import OAUTH2_SECTION, OAuth2, TokenError, TokenReply
from netprobe_exporter.probes.tcp import FAILED_DUE_TO_REGEX
from netprobe_exporter.probes.tls import (
    TLS_OPTION,
    TLSConfig,
    TLSInfo,
    client_creator,
    handshake_info,
    read_config_file,
)
from netprobe_exporter.schema import (
    BOOL,
    IP_ADDRESS,
    PROBE_FILE,
    REGEX,
    REGEXES,
    SECRET_TEXT,
    STRING,
    STRINGS,
    TEXT,
    ByteSize,
    Check,
    Choice,
    Inline,
    Int,
    Kind,
    ListOf,
    Nested,
    Opt,
    Reading,
    Scalar,
    Section,
    StringMap,
    at_most_one,
)
from netprobe_exporter.yamlcheck import Checker, is_secret_header

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
#: a response's status line and headers may take this many bytes (Go's default
#: ``MaxResponseHeaderBytes``, so blackbox's) and this many lines; past either the probe fails
MAX_RESPONSE_HEADER_BYTES = 1 << 20
MAX_RESPONSE_HEADER_LINES = 10_000
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
COMPRESSIONS = ("gzip", "deflate", "br", "identity")
#: headers ``http_headers`` may not set (prometheus/common's reserved list)
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "Authorization", "Host", "Content-Encoding", "Content-Length", "Content-Type", "User-Agent",
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Www-Authenticate",
    "Accept-Encoding", "X-Prometheus-Remote-Write-Version", "X-Prometheus-Remote-Read-Version",
    "X-Prometheus-Scrape-Timeout-Seconds", "X-Amz-Date", "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
))  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeaderSource:
    """One ``http_headers`` entry: its values, in this order, each sent as a line of its own."""

    values: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    header: str
    regexp: re.Pattern[str]
    allow_missing: bool = False


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPProbe(Options):
    valid_status_codes: tuple[int, ...] = ()
    valid_http_versions: tuple[str, ...] = ()
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    fail_if_body_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_body_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    body: str = ""
    compression: str = ""
    body_size_limit: int = 0
    basic_auth: BasicAuth | None = None
    #: Authorization header scheme and credentials (bearer_token / authorization)
    auth_type: str = "Bearer"
    credentials: Secret | None = None
    credentials_file: str | None = None
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    follow_redirects: bool = True
    enable_http2: bool = True
    #: HTTP/3 over QUIC, no fallback (blackbox 0.28); needs enable_http2 off
    enable_http3: bool = False
    body_file: str | None = None
    http_headers: tuple[tuple[str, HeaderSource], ...] = ()
    fail_if_body_json_matches_cel: CELProgram | None = None
    fail_if_body_json_not_matches_cel: CELProgram | None = None
    proxy_url: ProxyURL | None = None
    no_proxy: str = ""
    proxy_from_environment: bool = False
    proxy_connect_header: tuple[tuple[str, tuple[Secret, ...]], ...] = ()
    skip_resolve_phase_with_proxy: bool = False
    oauth2: OAuth2 | None = None
    source_ip_address: str | None = None

    @property
    def proxies(self) -> ProxyChoice:
        return ProxyChoice(self.proxy_url, self.no_proxy, self.proxy_from_environment)

    @property
    def uses_cel(self) -> bool:
        return (
            self.fail_if_body_json_matches_cel or self.fail_if_body_json_not_matches_cel
        ) is not None

    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None


DURATION = Family(
    "netprobe_http_duration_seconds", "histogram",
    "HTTP request time by phase, summed over redirects; exchanges that got a response.",
    order=100, label="phase", label_values=PHASES,
)  # fmt: skip
STATUS = Family(
    "netprobe_http_status_code", "gauge", "Status code of the last HTTP response (0: none).",
    order=130,
)  # fmt: skip


@dataclass(slots=True)
class HTTPPhases:
    """Seconds per phase, summed over redirects (``PHASES``, blackbox's ``phase`` values).

    Until an address is found only ``resolve`` is timed: the others are then absent (not 0)
    from what is shown, as in blackbox, which has none of them when resolution failed.
    """

    resolve: float = 0.0
    connect: float = 0.0
    tls: float = 0.0
    #: connection ready to the response's first byte
    processing: float = 0.0
    #: first byte to the end of the body, final response only
    transfer: float = 0.0
    #: an address was found: every phase is shown, not only ``resolve``
    resolved: bool = False
    #: the proxy resolves the target (``skip_resolve_phase_with_proxy``): blackbox then shows
    #: no ``resolve`` phase unless a redirect was followed
    resolve_skipped: bool = False

    def values(self) -> tuple[float, ...]:
        """The shown phases' seconds, in ``PHASES`` order (a prefix of it)."""
        if not self.resolved:
            return (self.resolve,)
        return (self.resolve, self.connect, self.tls, self.processing, self.transfer)

    def items(self) -> tuple[tuple[str, float], ...]:
        """(phase, seconds) of the shown phases, in ``PHASES`` order."""
        return tuple(zip(PHASES, self.values(), strict=False))


@dataclass(slots=True)
class HTTPDetails(Details):
    """What the HTTP exchange showed (of the final response, phases summed over redirects)."""

    status_code: int = 0
    content_length: int = 0
    body_length: int = 0
    redirects: int = 0
    ssl: bool = False
    version: float = 0.0
    last_modified: float | None = None
    #: None until the target's host was looked for (the URL did not parse)
    phases: HTTPPhases | None = None
    #: a body or header rule decided the failure
    failed_due_to_regex: bool = False
    #: a CEL rule decided the failure; None: the module has none (the family is absent)
    failed_due_to_cel: bool | None = None
    #: keep the final response's body in ``body`` (the oauth2 token request)
    keep_body: bool = False
    body: bytes = b""
    content_type: str = ""
    connect: ConnectInfo = field(default_factory=ConnectInfo)
    tls: TLSInfo | None = None

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        self.connect.observe(out)
        out.gauge(STATUS.name, float(self.status_code))
        if self.status_code and self.phases is not None:  # an exchange that got an answer
            for index, seconds in enumerate(self.phases.values()):
                out.histogram(DURATION.name, seconds, index)
        tls_.observe(out, self.tls)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        out["probe_failed_due_to_regex"] = [({}, 1.0 if self.failed_due_to_regex else 0.0)]
        if self.failed_due_to_cel is not None:
            out["probe_failed_due_to_cel"] = [({}, 1.0 if self.failed_due_to_cel else 0.0)]
        out["probe_http_content_length"] = [({}, float(self.content_length))]
        out["probe_http_uncompressed_body_length"] = [({}, float(self.body_length))]
        out["probe_http_redirects"] = [({}, float(self.redirects))]
        out["probe_http_ssl"] = [({}, 1.0 if self.ssl else 0.0)]
        out["probe_http_status_code"] = [({}, float(self.status_code))]
        out["probe_http_version"] = [({}, self.version)]
        if self.phases is not None:
            hide = self.phases.resolve_skipped and not self.redirects
            out["probe_http_duration_seconds"] = [
                ({"phase": p}, round(v, 9))
                for p, v in self.phases.items()
                if not (hide and p == "resolve")
            ]
        if self.last_modified is not None:
            out["probe_http_last_modified_timestamp_seconds"] = [({}, self.last_modified)]
        if self.tls is not None and self.ssl:
            tls_.blackbox(out, self.tls, cipher=True)


BLACKBOX_FAMILIES = (
    FAILED_DUE_TO_REGEX,
    BlackboxFamily("probe_failed_due_to_cel",
                   "Indicates if probe failed due to CEL expression not matching"),
    BlackboxFamily("probe_http_duration_seconds",
                   "Duration of http request by phase, summed over all redirects"),
    BlackboxFamily("probe_http_content_length", "Length of http content response"),
    BlackboxFamily("probe_http_uncompressed_body_length", "Length of uncompressed response body"),
    BlackboxFamily("probe_http_redirects", "The number of redirects"),
    BlackboxFamily("probe_http_ssl", "Indicates if SSL was used for the final redirect"),
    BlackboxFamily("probe_http_status_code", "Response HTTP status code"),
    BlackboxFamily("probe_http_version", "Returns the version of HTTP of the probe response"),
    BlackboxFamily("probe_http_last_modified_timestamp_seconds",
                   "Returns the Last-Modified HTTP response header in unixtime"),
    *tls_.BLACKBOX_FAMILIES,
)  # fmt: skip


@dataclass
class _Hop:
    """Timestamps (of the probe's monotonic clock) of one request/response round trip."""

    clock: Callable[[], float]
    tls_start: float = 0.0
    tls_done: float = 0.0
    got_conn: float = 0.0
    response_start: float = 0.0
    tls_protocol: TLSMemoryBIOProtocol | None = None
    inner: IProtocol | None = None
    #: the protocol the reactor's transport talks to (TLS or the timing wrapper)
    outer: IProtocol | None = None
    #: why the response head was refused (too big), when it was
    head_error: str | None = None
    #: the timing wrapper of this hop's connection
    timing: _Timing | None = None
    #: fires at the end of the TLS handshake, when ALPN must be read before any request
    handshake: Deferred[None] | None = None
    #: the HTTP/3 client of this hop (enable_http3)
    quic: http3.H3Client | None = None
    #: the probe's deadline (monotonic), for work after the response (CEL)
    deadline: float = 0.0

    def abort(self) -> None:
        """Drop the connection if it is still open: no socket outlives its probe.

        After a complete response the HTTP client closes politely, but over TLS that waits for
        the peer's close_notify with no deadline; a timeout or an unread body must stop too.
        """
        transport = getattr(self.outer, "transport", None)
        if transport is not None and not getattr(transport, "disconnected", True):
            transport.abortConnection()
        if self.quic is not None:
            self.quic.close()


@implementer(IHandshakeListener)
class _Timing(ProtocolWrapper):
    def __init__(self, factory: Any, wrapped: IProtocol, hop: _Hop) -> None:
        super().__init__(factory, wrapped)
        self._hop = hop
        #: bytes and lines of the response head so far; None once its blank line has come
        self._head: list[int] | None = [0, 0]
        self._tail = b""
        self._framed = False

    def makeConnection(self, transport: Any) -> None:
        if self._hop.tls_start == 0.0:
            self._hop.got_conn = self._hop.clock()
        super().makeConnection(transport)

    def handshakeCompleted(self) -> None:
        now = self._hop.clock()
        self._hop.tls_done = self._hop.got_conn = now
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
        if self._hop.handshake is not None and not self._hop.handshake.called:
            self._hop.handshake.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self._hop.handshake is not None and not self._hop.handshake.called:
            self._hop.handshake.errback(reason)
        super().connectionLost(reason)

    def switch(self, protocol: IProtocol) -> None:
        """Hand the connection to ``protocol`` (a framed one: it times the response itself)."""
        self._head = None
        self._framed = True
        self.wrappedProtocol = protocol
        protocol.makeConnection(cast(Any, self))

    def dataReceived(self, data: bytes) -> None:
        if self._hop.response_start == 0.0 and not self._framed:
            self._hop.response_start = self._hop.clock()
        if self._head is not None and not self._head_ok(data):
            return
        super().dataReceived(data)

    def _head_ok(self, data: bytes) -> bool:
        """Count the response head (up to its blank line); refuse it past the limits.

        Twisted's parser bounds one header line but not how many come: an endless stream of
        headers would grow memory until the timeout.
        """
        assert self._head is not None
        seen = self._tail + data
        ends = [i + len(m) for m in (b"\n\n", b"\n\r\n") if (i := seen.find(m)) >= 0]
        part = seen[: min(ends)] if ends else seen
        self._head[0] += len(part) - len(self._tail)
        self._head[1] += part.count(b"\n") - self._tail.count(b"\n")
        if ends:
            self._head = None  # later bytes are the body (or a 1xx's successor: Twisted's)
            return True
        self._tail = seen[-2:]
        size, lines = self._head
        if size <= MAX_RESPONSE_HEADER_BYTES and lines <= MAX_RESPONSE_HEADER_LINES:
            return True
        self._hop.head_error = (
            f"http: server response headers exceeded {MAX_RESPONSE_HEADER_BYTES} bytes"
            if size > MAX_RESPONSE_HEADER_BYTES
            else f"http: server response headers exceeded {MAX_RESPONSE_HEADER_LINES} lines"
        )
        self._head = None
        cast(Any, self.transport).abortConnection()
        return False


class _TimingFactory(WrappingFactory):
    def __init__(self, wrapped: IProtocolFactory, hop: _Hop) -> None:
        super().__init__(wrapped)
        self._hop = hop

    def buildProtocol(self, addr: Any) -> _Timing:
        inner = self.wrappedFactory.buildProtocol(addr)
        assert inner is not None
        self._hop.inner = inner
        self._hop.timing = _Timing(self, inner, self._hop)
        return self._hop.timing


@dataclass(frozen=True, slots=True)
class _Tunnel:
    """A CONNECT through a proxy: the authority asked for and the request's headers."""

    authority: str
    headers: list[tuple[bytes, bytes]]


class _Single(Factory):
    """A factory for one protocol already built (the CONNECT tunnel's)."""

    def __init__(self, proto: ConnectTunnel) -> None:
        self._proto = proto

    def buildProtocol(self, addr: Any) -> ConnectTunnel:
        self._proto.factory = self
        return self._proto


class _TLSStartFactory:
    """Notes when TLS begins inside a tunnel (after the proxy's answer, not at connect)."""

    def __init__(self, wrapped: IProtocolFactory, hop: _Hop) -> None:
        self._wrapped, self._hop = wrapped, hop

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        self._hop.tls_start = self._hop.clock()
        return self._wrapped.buildProtocol(addr)


class _HopEndpoint:
    """An IStreamClientEndpoint connecting to an already-resolved address (the target's, or
    its proxy's: then for https through a CONNECT tunnel)."""

    def __init__(
        self, ctx: ProbeContext, ip: str, port: int, creator: Any, hop: _Hop,
        result: ProbeResult, info: ConnectInfo, deadline: float, alpn: bool = False,
        source: str | None = None, tunnel: _Tunnel | None = None,
    ) -> None:  # fmt: skip
        self._ctx, self._ip, self._port, self._creator = ctx, ip, port, creator
        self._hop, self._result, self._info, self._deadline = hop, result, info, deadline
        #: ALPN was offered: the handshake decides between HTTP/2 and HTTP/1.1
        self._alpn = alpn
        self._source, self._tunnel = source, tunnel

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        remaining = self._deadline - self._ctx.clock.monotonic()
        sock = await connect(
            self._ctx, self._ip, self._port, self._source, remaining, self._result, self._info
        )
        if sock is None:
            raise ProbeFailure(self._result.result, self._result.detail)
        wrapped: IProtocolFactory = _TimingFactory(factory, self._hop)
        if self._creator is not None:
            wrapped = TLSMemoryBIOFactory(self._creator, True, wrapped)
            if self._alpn:
                self._hop.handshake = Deferred()
        if self._tunnel is not None:
            return await self._through_tunnel(sock, wrapped, self._tunnel)
        if self._creator is not None:
            self._hop.tls_start = self._hop.clock()
        outer = adopt(self._ctx, sock, wrapped)
        self._hop.outer = outer
        if isinstance(outer, TLSMemoryBIOProtocol):
            self._hop.tls_protocol = outer
        assert self._hop.inner is not None
        if self._hop.handshake is not None:
            return await self._negotiated()
        return self._hop.inner

    async def _negotiated(self) -> IProtocol:
        """After the handshake: the HTTP/2 client if ALPN chose ``h2``, else HTTP/1.1's."""
        assert self._hop.handshake is not None and self._hop.inner is not None
        try:
            await self._hop.handshake
        except Exception as exc:  # the handshake's own error, as HTTP/1.1 reports it
            raise ResponseFailed([Failure(exc)]) from None
        tls = self._hop.tls_protocol
        if tls is None or tls.negotiatedProtocol != b"h2":
            return self._hop.inner
        client = http2.H2Client(self._hop, MAX_RESPONSE_HEADER_BYTES)
        assert self._hop.timing is not None
        self._hop.timing.switch(client)
        return client

    async def _through_tunnel(
        self, sock: Any, wrapped: IProtocolFactory, tunnel: _Tunnel
    ) -> IProtocol:
        then = cast(IProtocolFactory, _TLSStartFactory(wrapped, self._hop))
        proto = ConnectTunnel(tunnel.authority, tunnel.headers, then)
        self._hop.outer = adopt(self._ctx, sock, _Single(proto))
        self._result.note("Sent CONNECT to proxy", authority=tunnel.authority)
        try:
            inner = await proto.ready
        except ConnectionError as exc:
            raise ProbeFailure("protocol_error", f"proxyconnect: {exc}") from None
        if isinstance(inner, TLSMemoryBIOProtocol):
            self._hop.tls_protocol = inner
        assert self._hop.inner is not None
        if self._hop.handshake is not None:  # TLS inside the tunnel offered ALPN: h2 or not
            return await self._negotiated()
        return self._hop.inner


@implementer(IAgentEndpointFactory)
class _OneEndpointFactory:
    def __init__(self, endpoint: _HopEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> _HopEndpoint:
        return self._endpoint


class _Body(Protocol):
    """Reads a response body: counts (decompressed) bytes, enforces the limit, keeps it if asked."""

    def __init__(self, limit: int, decoder: Any, keep: int) -> None:
        self.done: Deferred[None] = Deferred(lambda _: self._stop("cancelled"))
        self.length = 0
        self.chunks: list[bytes] = []
        self._limit, self._decoder, self._keep = limit, decoder, keep
        self.error: str | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self._decoder is None:
            self._piece(data)
            return
        try:
            for piece in self._decoder.pieces(data):
                self._piece(piece)
                if self.error is not None:
                    return
        except (zlib.error, brotli.error) as exc:
            self._stop(f"failed to decompress response body: {exc}")

    def _piece(self, data: bytes) -> None:
        if self._limit and self.length + len(data) > self._limit:
            self._take(data[: self._limit - self.length])
            self._stop("http: response body too large")
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        self.length += len(data)
        if self._keep:
            if self.length > self._keep:
                # the body rules need the whole body; past the cap they cannot be applied
                self._stop(f"http: response body over limits.max_body_bytes ({self._keep} bytes)"
                           " cannot be matched against the body rules")  # fmt: skip
                self.chunks = []
                return
            self.chunks.append(data)

    def _stop(self, why: str) -> None:
        self.error = why
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if self.error is None and self._decoder is not None:
            try:
                self._take(self._decoder.flush())
            except (zlib.error, brotli.error) as exc:
                self.error = f"failed to decompress response body: {exc}"
        if self.error is None and not reason.check(ResponseDone, PotentialDataLoss):
            self.error = f"failed to read response body: {reason.getErrorMessage()}"
        if not self.done.called:  # not when a timeout cancelled the read
            self.done.callback(None)


class _Discard(Protocol):
    """Takes a redirect's body: nobody reads it, so the connection is dropped at once."""

    def connectionMade(self) -> None:
        cast(Any, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        pass


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Request ``address`` (a URL; ``http://`` is assumed without a scheme) within ``timeout``."""
    opts = options_of(module, HTTPProbe)

    async def work(result: ProbeResult, started: float) -> None:
        result.details = HTTPDetails()
        await _run(ctx, address, opts, timeout, started, result)

    return run_probe(ctx, work)


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: HTTPProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    info = result.details
    assert isinstance(info, HTTPDetails)
    if opts.enable_http3 and not address.lower().startswith("https://"):
        # as blackbox 0.28: HTTP/3 needs TLS, so an http:// (or bare) target is asked over https
        address = "https://" + address.removeprefix("http://").removeprefix("HTTP://")
        result.note("Converting HTTP to HTTPS for HTTP/3 compatibility", url=redact_url(address))
    try:
        url = parse_url(address)
    except ValueError as exc:
        result.fail("error", f"could not parse target URL: {exc}")
        return
    ip: str | None = None
    if _skip_resolve(opts):  # the proxy resolves the name (a direct request does, at connect)
        phases = info.phases = HTTPPhases(0.0, resolved=True, resolve_skipped=True)
    else:
        ip = await resolve(
            ctx, url.host, url.ip_version, opts.preferred_ip_protocol, opts.ip_protocol_fallback,
            timeout, result, dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
        )  # fmt: skip
        phases = info.phases = HTTPPhases(result.resolve_duration or 0.0)
        if ip is None:
            return
        phases.resolved = True
    exchange = Deferred.fromCoroutine(_exchange(ctx, url, ip, opts, started + timeout, result))
    timer = ctx.reactor.callLater(
        max(timeout - (ctx.clock.monotonic() - started), 0), exchange.cancel
    )
    try:
        await exchange
        result.success, result.result = True, "success"
    except defer.CancelledError:
        result.fail("timeout", "http: probe timed out")
    except ProbeFailure as exc:
        result.fail(exc.result, str(exc))
    finally:
        if timer.active():
            timer.cancel()


def _skip_resolve(opts: HTTPProbe) -> bool:
    """blackbox's ``skip_resolve_phase_with_proxy``: only with a proxy configured."""
    return opts.skip_resolve_phase_with_proxy and (
        opts.proxy_url is not None or opts.proxy_from_environment
    )


def _headers(opts: HTTPProbe) -> Headers:
    headers = Headers()
    for name, value in opts.headers:
        headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
    for name, source in opts.http_headers:  # prometheus/common: added after the others
        key = name.encode("latin-1")
        for value in source.values:
            headers.addRawHeader(key, value.encode("latin-1"))
        for secret in source.secrets:
            headers.addRawHeader(key, secret.reveal().encode("latin-1"))
        for path in source.files:
            text = read_config_file(path, f"http_headers.{name}.files").decode().strip()
            headers.addRawHeader(key, text.encode("latin-1"))
    if not headers.hasHeader(b"user-agent"):
        headers.addRawHeader(b"User-Agent", f"netprobe-exporter/{__version__}".encode())
    if opts.compression and not headers.hasHeader(b"accept-encoding"):
        headers.addRawHeader(b"Accept-Encoding", opts.compression.encode())
    if opts.basic_auth is not None:
        password = opts.basic_auth.password.reveal() if opts.basic_auth.password else ""
        if opts.basic_auth.password_file:
            raw = read_config_file(opts.basic_auth.password_file, "basic_auth.password_file")
            password = raw.decode("utf-8").strip()
        token = base64.b64encode(f"{opts.basic_auth.username}:{password}".encode()).decode()
        headers.setRawHeaders(b"Authorization", [f"Basic {token}".encode()])
    elif opts.credentials is not None or opts.credentials_file:
        cred = opts.credentials.reveal() if opts.credentials else ""
        if opts.credentials_file:
            cred = read_config_file(opts.credentials_file, "credentials_file").decode().strip()
        headers.setRawHeaders(b"Authorization", [f"{opts.auth_type} {cred}".encode()])
    return headers


def _with_userinfo(headers: Headers, opts: HTTPProbe, url: URL) -> Headers:
    """A hop's headers: a URL's userinfo is sent as Basic auth, as Go's http.Client does.

    Like Go, it gives way to an ``Authorization`` set in the module's ``headers`` and takes
    the place of ``basic_auth`` and ``authorization`` (which Go adds later, only when no
    Authorization is set yet). A relative redirect keeps the URL's userinfo, so it is sent again.
    """
    hop = headers.copy()
    if url.username is None or any(n.lower() == "authorization" for n, _ in opts.headers):
        return hop
    if opts.oauth2 is not None:  # Go's oauth2 transport sets its token after the client's Basic
        return hop
    token = base64.b64encode(f"{url.username}:{url.password or ''}".encode()).decode()
    hop.setRawHeaders(b"Authorization", [f"Basic {token}".encode()])
    return hop


def _server_name(opts: HTTPProbe, url: URL) -> str:
    for name, value in opts.headers:
        if name.lower() == "host":
            return value.rsplit(":", 1)[0].strip("[]") if value.count(":") <= 1 else value
    return url.host


async def _exchange(
    ctx: ProbeContext,
    url: URL,
    ip: str | None,
    opts: HTTPProbe,
    deadline: float,
    result: ProbeResult,
) -> None:
    info = result.details
    assert isinstance(info, HTTPDetails)
    phases = info.phases
    assert phases is not None  # set once the address was found
    alpn = http2.ALPN if opts.enable_http2 else ()
    try:  # local problems (credential or certificate files) are ours: "error", not the peer's
        headers = _headers(opts)
        body_bytes = opts.body.encode()
        if opts.body_file:
            body_bytes = read_config_file(opts.body_file, "body_file")
        first_creator: Any = None
        if url.scheme == "https":
            first_creator = client_creator(
                opts.tls_config, opts.tls_config.server_name or _server_name(opts, url), alpn
            )
    except Exception as exc:
        raise ProbeFailure("error", f"local configuration: {exc}") from None
    if opts.oauth2 is not None:
        token = await _oauth2_token(ctx, opts.oauth2, deadline, result)
        headers.setRawHeaders(b"Authorization", [token])
    method, body = opts.method, body_bytes
    current, current_ip = url, ip
    while True:
        hop = _Hop(ctx.clock.monotonic, deadline=deadline)
        creator = None
        if current.scheme == "https":
            try:
                creator = first_creator if current is url else client_creator(
                    opts.tls_config, opts.tls_config.server_name or current.host, alpn
                )  # fmt: skip
            except Exception as exc:
                raise ProbeFailure("error", f"local configuration: {exc}") from None
        route = await _route(ctx, opts, current, current_ip, deadline, result)
        current_ip = route.target_ip
        endpoint = _HopEndpoint(ctx, route.ip, route.port, creator, hop, result, info.connect,
                                deadline, alpn=bool(alpn), source=opts.source_ip_address,
                                tunnel=route.tunnel)  # fmt: skip
        pool = HTTPConnectionPool(ctx.reactor, persistent=False)
        agent: Agent | ProxyAgent
        hop_headers = _with_userinfo(headers, opts, current)
        target_text = current.request_text
        if route.forward is not None:  # absolute form to the proxy, as Go's transport sends it
            agent = ProxyAgent(endpoint, ctx.reactor, pool)
            if not hop_headers.hasHeader(b"host"):
                hop_headers.setRawHeaders(b"Host", [current.netloc.encode()])
            # Go writes the Host (the name, or the module's Host header) in the request line
            host = (hop_headers.getRawHeaders(b"host") or [b""])[0].decode("latin-1")
            target_text = f"{current.scheme}://{host}{current.path}"
            auth = route.forward.authorization()
            if auth is not None:
                hop_headers.setRawHeaders(b"Proxy-Authorization", [auth])
        else:
            agent = Agent.usingEndpointFactory(
                ctx.reactor, _OneEndpointFactory(endpoint), pool=pool
            )
        producer = FileBodyProducer(io.BytesIO(body)) if body else None
        result.note("Making HTTP request", url=current.display, host=current.netloc)
        try:
            try:
                response: IResponse
                if opts.enable_http3:
                    response = await _h3_request(
                        ctx, hop, opts, current, route.ip, method, body, hop_headers, deadline,
                        result,
                    )  # fmt: skip
                else:
                    response = await agent.request(
                        method.encode(), target_text.encode(), hop_headers, producer,
                    )  # fmt: skip
            except (ProbeFailure, defer.CancelledError):
                raise
            except Exception as exc:
                raise _classify(exc, hop) from None
            finally:
                _add_phases(phases, hop, result)
            result.note("Received HTTP response", status_code=response.code)
            location = response.headers.getRawHeaders(b"location")
            redirect = response.code in REDIRECTS and bool(location)
            if redirect:
                info.redirects += 1
                shown = redact_url(location[0].decode("latin-1"))
                result.note("Received redirect", location=shown)
            if not redirect or not opts.follow_redirects or info.redirects > MAX_REDIRECTS:
                if redirect and not opts.follow_redirects:
                    result.note("Not following redirect")
                elif redirect:  # as Go's client: the last response, with the error
                    result.note(f"stopped after {MAX_REDIRECTS} redirects", "error")
                await _final(ctx, response, hop, opts, current, result)
                return
            response.deliverBody(_Discard())
        finally:
            hop.abort()
        try:
            nxt = parse_url(urljoin(current.text, location[0].decode("latin-1")))
        except ValueError as exc:
            raise ProbeFailure("protocol_error", f"bad redirect location: {exc}") from None
        if response.code in (301, 302, 303) and method not in ("GET", "HEAD"):
            method, body = "GET", b""
        if nxt.host != current.host and _skip_resolve(opts):
            current_ip = None
        elif nxt.host != current.host:
            t0 = ctx.clock.monotonic()
            new_ip = await resolve(
                ctx, nxt.host, nxt.ip_version, opts.preferred_ip_protocol,
                opts.ip_protocol_fallback, deadline - t0, result,
                dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
            )  # fmt: skip
            phases.resolve += ctx.clock.monotonic() - t0
            if new_ip is None:
                raise ProbeFailure(result.result, result.detail)
            current_ip = new_ip
        current = nxt


async def _h3_request(
    ctx: ProbeContext, hop: _Hop, opts: HTTPProbe, url: URL, ip: str, method: str, body: bytes,
    headers: Headers, deadline: float, result: ProbeResult,
) -> IResponse:  # fmt: skip
    """One HTTP/3 exchange (no fallback to TCP, as blackbox); the hop keeps its client.

    The request carries the hop's headers (``headers``, ``http_headers``, authorization,
    oauth2's token) and body as HTTP/1.1 and HTTP/2 do; the UDP socket is bound to
    ``source_ip_address`` when one is set.
    """
    if url.scheme != "https":
        raise ProbeFailure("protocol_error", f"http3: unsupported protocol scheme {url.scheme}")
    host = headers.getRawHeaders(b"host") or [url.netloc.encode()]
    head = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", host[0]),
            (b":path", url.path.encode() or b"/")]  # fmt: skip
    head += [(n.lower(), v) for n, vs in headers.getAllRawHeaders() if n.lower() != b"host"
             for v in vs]  # fmt: skip
    name = opts.tls_config.server_name or _server_name(opts, url)
    try:
        hop.quic, answer = http3.request(
            ctx, hop, opts.tls_config, name, ip, url.port,
            max(deadline - ctx.clock.monotonic(), 0.001), head, body, result,
            source=opts.source_ip_address,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise ProbeFailure("error", f"local configuration: {exc}") from None
    response = await answer
    assert isinstance(result.details, HTTPDetails)
    result.details.tls = hop.quic.tls_info()
    return response


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a hop connects: the target, or its proxy (``forward`` for http, ``tunnel`` for
    https)."""

    ip: str
    port: int
    #: the target's address, when known (None: the proxy resolves its name)
    target_ip: str | None
    forward: ProxyURL | None = None
    tunnel: _Tunnel | None = None


async def _route(
    ctx: ProbeContext, opts: HTTPProbe, url: URL, ip: str | None, deadline: float,
    result: ProbeResult,
) -> _Route:  # fmt: skip
    """The hop's proxy by the module's rules (matched on the address requested, as blackbox
    requests it), resolved; or the target itself.

    HTTP/3 goes straight to the target: blackbox 0.28's QUIC transport has no proxy, so the
    proxy keys are ignored there (not refused).
    """
    try:
        proxy = None if opts.enable_http3 else opts.proxies.proxy_for(
            url.scheme, ip or url.host, url.port
        )  # fmt: skip
    except ValueError as exc:
        raise ProbeFailure("error", f"local configuration: {exc}") from None
    remaining = deadline - ctx.clock.monotonic()
    if proxy is None:
        if ip is None:
            ip = await resolve(
                ctx, url.host, url.ip_version, opts.preferred_ip_protocol,
                opts.ip_protocol_fallback, remaining, result,
                dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
            )  # fmt: skip
            if ip is None:
                raise ProbeFailure(result.result, result.detail)
        return _Route(ip, url.port, ip)
    result.note("Using proxy", proxy=proxy.shown())
    proxy_ip = await _resolve_proxy(ctx, opts, proxy, remaining)
    if url.scheme != "https":
        return _Route(proxy_ip, proxy.port, ip, forward=proxy)
    target = ip or url.host
    authority = f"[{target}]:{url.port}" if ":" in target else f"{target}:{url.port}"
    headers = [(name.encode("latin-1"), v.reveal().encode("latin-1"))
               for name, values in opts.proxy_connect_header for v in values]  # fmt: skip
    auth = proxy.authorization()
    if auth is not None and not any(n.lower() == b"proxy-authorization" for n, _ in headers):
        headers.append((b"Proxy-Authorization", auth))
    return _Route(proxy_ip, proxy.port, ip, tunnel=_Tunnel(authority, headers))


async def _resolve_proxy(
    ctx: ProbeContext, opts: HTTPProbe, proxy: ProxyURL, timeout: float
) -> str:
    """The proxy's address (its own lookup, apart from the target's: not in any phase)."""
    scratch = ProbeResult(False, "error", 0.0)
    found = await resolve(
        dataclasses.replace(ctx, policy=None), proxy.host, parse_host(proxy.host),
        opts.preferred_ip_protocol, True, timeout, scratch,
        dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    if found is None:
        raise ProbeFailure("dns_error", f"proxy {proxy.host}: {scratch.detail}")
    return found


async def _oauth2_token(
    ctx: ProbeContext, cfg: OAuth2, deadline: float, result: ProbeResult
) -> bytes:
    """The Authorization value for the probe: the module's cached token or a fresh one."""
    remaining = deadline - ctx.clock.monotonic()

    async def fetch(cfg: OAuth2, form: bytes, basic: bytes | None, timeout: float) -> TokenReply:
        return await _token_request(ctx, cfg, form, basic, timeout)

    result.note("Getting OAuth2 token", token_url=redact_url(cfg.token_url))
    try:
        token = await oauth2_.cache_of(ctx).token(cfg, fetch, remaining)
    except TokenError as exc:
        raise ProbeFailure("error", str(exc)) from None
    return token.header()


async def _token_request(
    ctx: ProbeContext, cfg: OAuth2, form: bytes, basic: bytes | None, timeout: float
) -> TokenReply:
    """POST the token form with this prober's own request path (reactor only)."""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/x-www-form-urlencoded"),)
    if basic is not None:
        headers = (*headers, ("Authorization", basic.decode()))
    opts = HTTPProbe(
        method="POST", headers=headers, body=form.decode(), tls_config=cfg.tls_config,
        proxy_url=cfg.proxy_url, no_proxy=cfg.no_proxy,
        proxy_from_environment=cfg.proxy_from_environment,
        proxy_connect_header=cfg.proxy_connect_header, preferred_ip_protocol="ip4",
        valid_status_codes=tuple(range(100, 600)),
    )  # fmt: skip
    sub = dataclasses.replace(ctx, policy=None, debug=False)
    result = ProbeResult(False, "error", 0.0)
    result.details = HTTPDetails(keep_body=True)
    await _run(sub, cfg.token_url, opts, max(timeout, 0.0), sub.clock.monotonic(), result)
    info = result.details
    assert isinstance(info, HTTPDetails)
    if not result.success and not info.status_code:
        return TokenReply(0, error=result.detail or result.result)
    return TokenReply(info.status_code, info.body, info.content_type)


def _add_phases(phases: HTTPPhases, hop: _Hop, result: ProbeResult) -> None:
    if hop.got_conn == 0.0:
        return
    phases.connect += result.connect_duration or 0.0
    if hop.tls_start:
        phases.tls += max(hop.tls_done - hop.tls_start, 0.0)
    if hop.response_start:
        phases.processing += max(hop.response_start - hop.got_conn, 0.0)


def _classify(exc: Exception, hop: _Hop) -> ProbeFailure:
    if hop.head_error is not None:
        return ProbeFailure("protocol_error", hop.head_error)
    reasons: list[Failure] = []
    if isinstance(exc, ResponseFailed | defer.FirstError) or hasattr(exc, "reasons"):
        reasons = list(getattr(exc, "reasons", []))
    text = "; ".join(r.getErrorMessage() for r in reasons) or str(exc) or type(exc).__name__
    if any(r.check(defer.CancelledError) for r in reasons):
        return ProbeFailure("timeout", "http: probe timed out")
    if any(r.check(SSL.Error) for r in reasons) or (hop.tls_start and not hop.tls_done):
        return ProbeFailure("tls_error", f"TLS handshake failed: {text}")
    return ProbeFailure("protocol_error", f"error for HTTP request: {text}")


def _decoder(opts: HTTPProbe) -> _Inflater | _Unbrotli | None:
    if not opts.compression or opts.compression == "identity":
        return None
    if opts.compression == "br":
        return _Unbrotli()
    return _Inflater(gzip=opts.compression == "gzip")


class _Unbrotli:
    """Brotli, its output in pieces of about ``_PIECE`` bytes (brotli's buffer stops growing
    past it: a piece may be up to twice that), so a bomb meets the body limits early."""

    _PIECE = 1 << 20

    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        out = self._d.process(data, output_buffer_limit=self._PIECE)
        if out:
            yield out
        while not self._d.is_finished():  # what the limit held back, until none is left
            out = self._d.process(b"", output_buffer_limit=self._PIECE)
            if not out:
                return
            yield out

    def flush(self) -> bytes:
        """Raises brotli.error when the stream ended before its end."""
        if not self._d.is_finished():
            raise brotli.error("compressed body ends early")
        return b""


class _Inflater:
    """gzip, or HTTP "deflate" (zlib-wrapped by the RFC, raw by common practice: both accepted).

    Output comes in pieces of at most ``_PIECE`` bytes, so a compression bomb is stopped by the
    body limits after one piece instead of being inflated whole in memory first.
    """

    _PIECE = 1 << 20

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d: Any = None
        self._head = b""

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self._d is None:
            if self._gzip:
                wbits = 16 + zlib.MAX_WBITS
            else:
                self._head += data
                if len(self._head) < 2:
                    return  # the first two bytes decide between zlib-wrapped and raw
                data, self._head = self._head, b""
                cmf, flg = data[0], data[1]
                zlib_header = cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
                wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
            self._d = zlib.decompressobj(wbits)
        while data:
            out = bytes(self._d.decompress(data, self._PIECE))
            data = self._d.unconsumed_tail
            if out:
                yield out

    def flush(self) -> bytes:
        """The rest; raises zlib.error when the stream ended before its end marker."""
        if self._d is None:
            if self._head:
                raise zlib.error("compressed body too short")
            return b""  # an empty body
        rest = bytes(self._d.flush())
        if not self._d.eof:
            raise zlib.error("compressed body ends early")
        return rest


def _status_ok(opts: HTTPProbe, code: int) -> bool:
    if opts.valid_status_codes:
        return code in opts.valid_status_codes
    return 200 <= code <= 299


def _header_rules(opts: HTTPProbe, response: IResponse, result: ProbeResult) -> bool:
    ok = True
    for rule, must_match in [(r, False) for r in opts.fail_if_header_matches] + [
        (r, True) for r in opts.fail_if_header_not_matches
    ]:
        raw: list[bytes] = response.headers.getRawHeaders(rule.header.encode("latin-1"), [])
        values = [v.decode("latin-1") for v in raw]
        if not values:
            if rule.allow_missing:
                continue
            result.note("Missing required header", "error", header=rule.header)
            ok = False
            continue
        matched = any(rule.regexp.search(v) for v in values)
        if matched and not must_match:
            result.note("Header matched regular expression", "error", header=rule.header,
                        regexp=rule.regexp.pattern)  # fmt: skip
            ok = False
        elif must_match and not matched:
            result.note("Header did not match regular expression", "error", header=rule.header,
                        regexp=rule.regexp.pattern)  # fmt: skip
            ok = False
    return ok


async def _final(
    ctx: ProbeContext, response: IResponse, hop: _Hop, opts: HTTPProbe, url: URL,
    result: ProbeResult,
) -> None:  # fmt: skip
    info = result.details
    assert isinstance(info, HTTPDetails)
    phases = info.phases
    assert phases is not None
    info.status_code = response.code
    failures: list[str] = []
    regex_failed = False
    ok = _status_ok(opts, response.code)
    if not ok:
        failures.append(f"invalid HTTP response status code {response.code}")
    if ok and (opts.fail_if_header_matches or opts.fail_if_header_not_matches):
        header_ok = _header_rules(opts, response, result)
        regex_failed = not header_ok
        if not header_ok:
            failures.append("a header rule failed")
    modified = response.headers.getRawHeaders(b"last-modified")
    if modified:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            info.last_modified = email.utils.parsedate_to_datetime(
                modified[0].decode("latin-1")
            ).timestamp()
    keep = bool(
        opts.fail_if_body_matches_regexp or opts.fail_if_body_not_matches_regexp
        or opts.uses_cel or info.keep_body
    )  # fmt: skip
    ctype = response.headers.getRawHeaders(b"content-type")
    info.content_type = ctype[0].decode("latin-1") if ctype else ""
    reader = _Body(opts.body_size_limit, _decoder(opts), ctx.max_body_bytes * keep)
    response.deliverBody(reader)
    await reader.done
    phases.transfer += max(hop.clock() - hop.response_start, 0.0) if hop.response_start else 0.0
    info.body_length = reader.length
    if reader.error is not None:
        failures.append(reader.error)
    elif not failures and keep:
        text = b"".join(reader.chunks).decode("utf-8", "replace")
        for rx in opts.fail_if_body_matches_regexp:
            if rx.search(text):
                result.note("Body matched regular expression", "error", regexp=rx.pattern)
                failures.append(f"body matched {rx.pattern!r}")
                regex_failed = True
        for rx in opts.fail_if_body_not_matches_regexp:
            if not rx.search(text):
                result.note("Body did not match regular expression", "error", regexp=rx.pattern)
                failures.append(f"body did not match {rx.pattern!r}")
                regex_failed = True
    info.failed_due_to_regex = regex_failed
    if info.keep_body and reader.error is None:
        info.body = b"".join(reader.chunks)
    if opts.uses_cel:
        info.failed_due_to_cel = False
        if not failures and reader.error is None:
            remaining = max(hop.deadline - ctx.clock.monotonic(), 0.0)
            verdict = await check_off_reactor(
                ctx.reactor, b"".join(reader.chunks), opts.fail_if_body_json_matches_cel,
                opts.fail_if_body_json_not_matches_cel, remaining,
            )  # fmt: skip
            if verdict.failed:
                result.note(verdict.reason, "error")
                failures.append(verdict.reason)
                info.failed_due_to_cel = True
    info.content_length = -1 if response.length is UNKNOWN_LENGTH else int(response.length)
    _, major, minor = response.version
    info.version = float(f"{major}.{minor}")
    proto = f"HTTP/{major}.{minor}"
    if opts.valid_http_versions and proto not in opts.valid_http_versions:
        failures.append(f"invalid HTTP version number {proto}")
    info.ssl = url.scheme == "https"
    if info.ssl and hop.tls_protocol is not None:
        conn = hop.tls_protocol.getHandle()
        if isinstance(conn, SSL.Connection):
            info.tls = handshake_info(conn, verified=not opts.tls_config.insecure_skip_verify)
    if opts.fail_if_ssl and info.ssl:
        failures.append("final request was over SSL")
    if opts.fail_if_not_ssl and not info.ssl:
        failures.append("final request was not over SSL")
    if failures:
        raise ProbeFailure("protocol_error", "; ".join(failures))


def _http3_versions(r: Reading) -> None:
    """blackbox 0.28's rules: HTTP/3 alone, with enable_http2 (true by default) turned off."""
    versions = r.values.get("valid_http_versions") or ()
    assert isinstance(versions, tuple)
    if not r.values.get("enable_http3"):
        if "HTTP/3.0" in versions:
            r.error(
                "valid_http_versions",
                "HTTP/3 cannot be used as a valid HTTP version when enable_http3 is false",
            )
        return
    if "HTTP/2.0" in versions or "HTTP/1.1" in versions:
        r.error("valid_http_versions", "HTTP/3 and HTTP/2.0/1.1 cannot be used together - "
                "only HTTP/3.0 is allowed when enable_http3 is true")  # fmt: skip
    if r.values.get("enable_http2", True):
        r.error("enable_http3", "when enable_http3 is true, enable_http2 must be set to false")


def _header_and_regexp(r: Reading) -> bool:
    if "header" in r.nodes and "regexp" in r.nodes:
        return True
    what = "header" if "header" not in r.nodes else "regexp"
    r.error(what, f"{what} must be set for HTTP header matchers", on_section=True)
    return False


HEADER_MATCH = Section(
    HeaderMatch("", re.compile("")),
    (
        Check(_header_and_regexp),
        Opt("header", STRING),
        Opt("regexp", REGEX),
        Opt("allow_missing", BOOL),
        Check(lambda r: bool(r.values.get("header"))),  # an empty name matches nothing
    ),
)


def _one_password(r: Reading) -> None:
    if "password" in r.nodes and "password_file" in r.nodes:
        r.c.error(r.nodes["password_file"], r.path,
                  "only one of password and password_file may be set")  # fmt: skip


BASIC_AUTH = Section(
    BasicAuth(""),
    (
        Opt("username", TEXT),
        Check(_one_password),
        Opt("password", SECRET_TEXT, secret=True),
        Opt("password_file", PROBE_FILE, secret=True),
    ),
)


def _auth_type(c: Checker, node: yaml.Node, path: str) -> str | None:
    kind = c.string(node, path)
    if kind is not None and kind.lower() == "basic":
        c.error(node, path, "use basic_auth for Basic authorization")
        return None
    return kind or None


#: ``authorization``: its keys fill the module's Authorization fields
AUTHORIZATION = Section(
    HTTPProbe(),
    (
        Opt("type", Scalar(_auth_type), field="auth_type"),
        Opt("credentials", SECRET_TEXT, secret=True),
        Opt("credentials_file", PROBE_FILE, secret=True),
    ),
)


def _method(c: Checker, node: yaml.Node, path: str) -> str | None:
    given = c.string(node, path)
    if given is not None and not re.fullmatch(r"[A-Za-z]+", given):
        c.error(node, path, f'"{given}" is not an HTTP method')
        return None
    return None if given is None else given.upper()


def _compression_vs_accept_encoding(r: Reading) -> None:
    comp, headers = r.values.get("compression"), r.values.get("headers", ())
    if not isinstance(comp, str) or not isinstance(headers, tuple):
        return
    given = str(r.nodes["compression"].value)
    for name, value in headers:
        if name.lower() == "accept-encoding" and comp not in value.lower():
            what = f'invalid configuration "Accept-Encoding: {value}", "compression: {given}"'
            r.error("compression", what)


_HEADER_MATCHES = ListOf(Nested(HEADER_MATCH))
_COMPRESSION = Choice(COMPRESSIONS, 'unknown compression "{}"', str.lower)


@dataclass(frozen=True, slots=True)
class _HTTPHeaders(Kind[tuple[tuple[str, HeaderSource], ...]]):
    """``http_headers`` (prometheus/common): per header, ``values``, ``secrets`` and ``files``."""

    def read(
        self, c: Checker, node: yaml.Node, path: str
    ) -> tuple[tuple[str, HeaderSource], ...] | None:
        found = free_mapping(c, node, path)
        if found is None:
            return None
        out: list[tuple[str, HeaderSource]] = []
        for name, vnode in found.items():
            sub = f"{path}.{name}"
            if name.lower() in RESERVED_HEADERS:
                c.error(vnode, sub, f'setting header "{_canonical(name)}" is not allowed')
                continue
            source = _HEADER_SOURCE.read(c, vnode, sub)
            if source is not None:
                out.append((name, source))
        return tuple(out)

    def dump(self, value: tuple[tuple[str, HeaderSource], ...]) -> object:
        return {name: _HEADER_SOURCE.dump(source) for name, source in value}

    def holds_secret(self) -> bool:
        return True


def _canonical(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


_HEADER_SOURCE = Section(
    HeaderSource(),
    (
        Opt("values", STRINGS),
        # shown as <secret> (they are Secret values); a file's name is not withheld
        Opt("secrets", ListOf(SECRET_TEXT)),
        Opt("files", ListOf(PROBE_FILE)),
    ),
)


def _one_body(r: Reading) -> None:
    if r.values.get("body") and r.values.get("body_file"):
        r.error("body_file", "setting body and body_file both are not allowed")


OPTIONS = Section(
    HTTPProbe(),
    (
        *IP_PROTOCOL,
        *RESOLVING,
        Opt("valid_status_codes", ListOf(Int(100, 999))),
        Opt("valid_http_versions", STRINGS),
        Opt("skip_resolve_phase_with_proxy", BOOL),
        Opt("source_ip_address", IP_ADDRESS),
        Opt("fail_if_ssl", BOOL),
        Opt("fail_if_not_ssl", BOOL),
        Opt("follow_redirects", BOOL),
        Opt("enable_http2", BOOL),
        Opt("enable_http3", BOOL),
        Check(_http3_versions),
        Opt("no_follow_redirects", BOOL, field="follow_redirects",
            deprecated="is deprecated: use follow_redirects", convert=lambda nf: not nf),
        Opt("method", Scalar(_method)),
        Opt("headers", StringMap(secret=is_secret_header)),
        Opt("fail_if_body_matches_regexp", REGEXES),
        Opt("fail_if_body_not_matches_regexp", REGEXES),
        Opt("fail_if_body_json_matches_cel", CEL()),
        Opt("fail_if_body_json_not_matches_cel", CEL()),
        Opt("fail_if_header_matches", _HEADER_MATCHES),
        Opt("fail_if_header_not_matches", _HEADER_MATCHES),
        Opt("body", TEXT),
        Opt("body_file", PROBE_FILE),
        Check(_one_body),
        Opt("compression", _COMPRESSION),
        Check(_compression_vs_accept_encoding),
        Opt("body_size_limit", ByteSize()),
        at_most_one("basic_auth", "oauth2", "authorization", "bearer_token", "bearer_token_file"),
        Opt("basic_auth", Nested(BASIC_AUTH)),
        Opt("authorization", Inline(AUTHORIZATION)),
        Opt("bearer_token", SECRET_TEXT, field="credentials", secret=True),
        Opt("bearer_token_file", PROBE_FILE, field="credentials_file", secret=True),
        TLS_OPTION,
        Opt("oauth2", Nested(OAUTH2_SECTION), holds_secret=True),
        *PROXY_OPTIONS,
        Opt("http_headers", _HTTPHeaders()),
    ),
)  # fmt: skip


def target_host(address: str) -> str:
    return parse_url(address).host


def check_address(address: str) -> str | None:
    try:
        parse_url(address)
    except ValueError as exc:
        return str(exc)
    return None


def with_hostname(options: Options, hostname: str) -> HTTPProbe:
    """``/probe?hostname=``: the Host header (and TLS name) the request is sent with."""
    assert isinstance(options, HTTPProbe)
    for name, value in options.headers:
        if name.lower() == "host" and value != hostname:
            raise ValueError(
                f"host header defined both in module configuration ({value}) "
                f"and with URL-parameter 'hostname' ({hostname})"
            )
    headers = tuple(h for h in options.headers if h[0].lower() != "host")
    return dataclasses.replace(options, headers=(*headers, ("Host", hostname)))


def shown(options: Options, section: dict[str, object]) -> dict[str, object]:
    """Back into the keys the parser takes: the Authorization parts under ``authorization``."""
    assert isinstance(options, HTTPProbe)
    kind = section.pop("auth_type", "Bearer")
    auth: dict[str, object] = {
        k: section.pop(k) for k in ("credentials", "credentials_file") if k in section
    }
    if auth:
        section["authorization"] = {"type": kind, **auth}
    if options.body_size_limit:
        section["body_size_limit"] = byte_size(options.body_size_limit)
    else:
        section.pop("body_size_limit", None)  # 0: no limit, the default
    if options.basic_auth is not None:
        section.setdefault("basic_auth", {"username": ""})  # set, if empty: still sent
    if not options.enable_http3:
        section.pop("enable_http3", None)  # omitempty in blackbox 0.28; 0.23 has no such key
    return section


PROBER = probes.register(
    ProberSpec(
        name="http",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        # any http target may speak TLS, by its URL or a redirect
        families=(HANDSHAKE, DURATION, STATUS, *tls_.FAMILIES),
        blackbox_families=BLACKBOX_FAMILIES,
        shown=shown,
        with_hostname=with_hostname,
    )
)
