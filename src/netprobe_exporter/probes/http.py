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
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urljoin

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IResponse
from zope.interface import implementer

from netprobe_exporter import __version__, probes
from netprobe_exporter.addresses import URL, parse_url, redact_url
from netprobe_exporter.durations import byte_size
from netprobe_exporter.model import Details, Module, Options, Sample, Secret, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeFailure,
    ProbeResult,
    ProberSpec,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import (
    HANDSHAKE,
    ConnectInfo,
    adopt,
    connect,
    ip_protocol,
    resolve,
)
from netprobe_exporter.probes.tcp import FAILED_DUE_TO_REGEX
from netprobe_exporter.probes.tls import (
    TLSConfig,
    TLSInfo,
    client_creator,
    handshake_info,
    parse_tls_config,
    read_config_file,
)

if TYPE_CHECKING:
    import yaml

    from netprobe_exporter.yamlcheck import Checker

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
#: a response's status line and headers may take this many bytes (Go's default
#: ``MaxResponseHeaderBytes``, so blackbox's) and this many lines; past either the probe fails
MAX_RESPONSE_HEADER_BYTES = 1 << 20
MAX_RESPONSE_HEADER_LINES = 10_000
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
COMPRESSIONS = ("gzip", "deflate", "identity")
SOON = "is not supported yet"


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
        out["probe_http_content_length"] = [({}, float(self.content_length))]
        out["probe_http_uncompressed_body_length"] = [({}, float(self.body_length))]
        out["probe_http_redirects"] = [({}, float(self.redirects))]
        out["probe_http_ssl"] = [({}, 1.0 if self.ssl else 0.0)]
        out["probe_http_status_code"] = [({}, float(self.status_code))]
        out["probe_http_version"] = [({}, self.version)]
        if self.phases is not None:
            out["probe_http_duration_seconds"] = [
                ({"phase": p}, round(v, 9)) for p, v in self.phases.items()
            ]
        if self.last_modified is not None:
            out["probe_http_last_modified_timestamp_seconds"] = [({}, self.last_modified)]
        if self.tls is not None and self.ssl:
            tls_.blackbox(out, self.tls)


BLACKBOX_FAMILIES = (
    FAILED_DUE_TO_REGEX,
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

    def abort(self) -> None:
        """Drop the connection if it is still open: no socket outlives its probe.

        After a complete response the HTTP client closes politely, but over TLS that waits for
        the peer's close_notify with no deadline; a timeout or an unread body must stop too.
        """
        transport = getattr(self.outer, "transport", None)
        if transport is not None and not getattr(transport, "disconnected", True):
            transport.abortConnection()


@implementer(IHandshakeListener)
class _Timing(ProtocolWrapper):
    def __init__(self, factory: Any, wrapped: IProtocol, hop: _Hop) -> None:
        super().__init__(factory, wrapped)
        self._hop = hop
        #: bytes and lines of the response head so far; None once its blank line has come
        self._head: list[int] | None = [0, 0]
        self._tail = b""

    def makeConnection(self, transport: Any) -> None:
        if self._hop.tls_start == 0.0:
            self._hop.got_conn = self._hop.clock()
        super().makeConnection(transport)

    def handshakeCompleted(self) -> None:
        now = self._hop.clock()
        self._hop.tls_done = self._hop.got_conn = now
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        if self._hop.response_start == 0.0:
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
        return _Timing(self, inner, self._hop)


class _HopEndpoint:
    """An IStreamClientEndpoint connecting to an already-resolved address."""

    def __init__(
        self, ctx: ProbeContext, ip: str, port: int, creator: Any, hop: _Hop,
        result: ProbeResult, info: ConnectInfo, deadline: float,
    ) -> None:  # fmt: skip
        self._ctx, self._ip, self._port, self._creator = ctx, ip, port, creator
        self._hop, self._result, self._info, self._deadline = hop, result, info, deadline

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        remaining = self._deadline - self._ctx.clock.monotonic()
        sock = await connect(
            self._ctx, self._ip, self._port, None, remaining, self._result, self._info
        )
        if sock is None:
            raise ProbeFailure(self._result.result, self._result.detail)
        wrapped: IProtocolFactory = _TimingFactory(factory, self._hop)
        if self._creator is not None:
            self._hop.tls_start = self._hop.clock()
            wrapped = TLSMemoryBIOFactory(self._creator, True, wrapped)
        outer = adopt(self._ctx, sock, wrapped)
        self._hop.outer = outer
        if isinstance(outer, TLSMemoryBIOProtocol):
            self._hop.tls_protocol = outer
        assert self._hop.inner is not None
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
        except zlib.error as exc:
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
            except zlib.error as exc:
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
    try:
        url = parse_url(address)
    except ValueError as exc:
        result.fail("error", f"could not parse target URL: {exc}")
        return
    ip = await resolve(
        ctx, url.host, url.ip_version, opts.preferred_ip_protocol, opts.ip_protocol_fallback,
        timeout, result,
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


def _headers(opts: HTTPProbe) -> Headers:
    headers = Headers()
    for name, value in opts.headers:
        headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
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
    token = base64.b64encode(f"{url.username}:{url.password or ''}".encode()).decode()
    hop.setRawHeaders(b"Authorization", [f"Basic {token}".encode()])
    return hop


def _server_name(opts: HTTPProbe, url: URL) -> str:
    for name, value in opts.headers:
        if name.lower() == "host":
            return value.rsplit(":", 1)[0].strip("[]") if value.count(":") <= 1 else value
    return url.host


async def _exchange(
    ctx: ProbeContext, url: URL, ip: str, opts: HTTPProbe, deadline: float, result: ProbeResult
) -> None:
    info = result.details
    assert isinstance(info, HTTPDetails)
    phases = info.phases
    assert phases is not None  # set once the address was found
    try:  # local problems (credential or certificate files) are ours: "error", not the peer's
        headers = _headers(opts)
        first_creator: Any = None
        if url.scheme == "https":
            first_creator = client_creator(
                opts.tls_config, opts.tls_config.server_name or _server_name(opts, url)
            )
    except Exception as exc:
        raise ProbeFailure("error", f"local configuration: {exc}") from None
    method, body = opts.method, opts.body
    current, current_ip = url, ip
    while True:
        hop = _Hop(ctx.clock.monotonic)
        creator = None
        if current.scheme == "https":
            try:
                creator = first_creator if current is url else client_creator(
                    opts.tls_config, opts.tls_config.server_name or current.host
                )  # fmt: skip
            except Exception as exc:
                raise ProbeFailure("error", f"local configuration: {exc}") from None
        endpoint = _HopEndpoint(ctx, current_ip, current.port, creator, hop, result, info.connect,
                                deadline)  # fmt: skip
        agent = Agent.usingEndpointFactory(
            ctx.reactor, _OneEndpointFactory(endpoint),
            pool=HTTPConnectionPool(ctx.reactor, persistent=False),
        )  # fmt: skip
        producer = FileBodyProducer(io.BytesIO(body.encode())) if body else None
        result.note("Making HTTP request", url=current.display, host=current.netloc)
        try:
            try:
                response: IResponse = await agent.request(
                    method.encode(), current.request_text.encode(),
                    _with_userinfo(headers, opts, current), producer,
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
            method, body = "GET", ""
        if nxt.host != current.host:
            t0 = ctx.clock.monotonic()
            new_ip = await resolve(
                ctx, nxt.host, nxt.ip_version, opts.preferred_ip_protocol,
                opts.ip_protocol_fallback, deadline - t0, result,
            )  # fmt: skip
            phases.resolve += ctx.clock.monotonic() - t0
            if new_ip is None:
                raise ProbeFailure(result.result, result.detail)
            current_ip = new_ip
        current = nxt


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


def _decoder(opts: HTTPProbe) -> _Inflater | None:
    if not opts.compression or opts.compression == "identity":
        return None
    return _Inflater(gzip=opts.compression == "gzip")


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
    keep = bool(opts.fail_if_body_matches_regexp or opts.fail_if_body_not_matches_regexp)
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


def _header_matches(c: Checker, node: yaml.Node, path: str) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    for i, item in enumerate(c.sequence(node, path) or []):
        sub = f"{path}[{i}]"
        m = c.mapping(item, sub, {"header": None, "regexp": None, "allow_missing": None})
        if m is None:
            continue
        if "header" not in m or "regexp" not in m:
            what = "header" if "header" not in m else "regexp"
            c.error(item, f"{sub}.{what}", f"{what} must be set for HTTP header matchers")
            continue
        header = c.string(m["header"], f"{sub}.header")
        regexp = c.regex(m["regexp"], f"{sub}.regexp")
        allow = (
            bool(c.boolean(m["allow_missing"], f"{sub}.allow_missing"))
            if ("allow_missing" in m)
            else False
        )
        if header and regexp is not None:
            out.append(HeaderMatch(header, regexp, allow))
    return tuple(out)


@dataclass(slots=True)
class _Auth:
    """The Authorization settings as read: at most one method is set."""

    basic_auth: BasicAuth | None = None
    auth_type: str = "Bearer"
    credentials: Secret | None = None
    credentials_file: str | None = None


def _basic_auth(c: Checker, node: yaml.Node, sub: str) -> BasicAuth | None:
    b = c.mapping(node, sub, {"username": None, "password": None, "password_file": None})
    if b is None:
        return None
    user = c.text(b["username"], f"{sub}.username") if "username" in b else ""
    if "password" in b and "password_file" in b:
        c.error(b["password_file"], sub, "only one of password and password_file may be set")
    password = c.text(b["password"], f"{sub}.password") if "password" in b else None
    pfile = (
        c.probe_time_file(b["password_file"], f"{sub}.password_file")
        if ("password_file" in b)
        else None
    )
    return BasicAuth(user or "", Secret(password) if password is not None else None, pfile)


def _authorization(c: Checker, node: yaml.Node, sub: str, auth: _Auth) -> None:
    a = c.mapping(node, sub, {"type": None, "credentials": None, "credentials_file": None})
    if a is None:
        return
    if "type" in a:
        kind = c.string(a["type"], f"{sub}.type")
        if kind is not None and kind.lower() == "basic":
            c.error(a["type"], f"{sub}.type", "use basic_auth for Basic authorization")
        elif kind:
            auth.auth_type = kind
    if "credentials" in a:
        cred = c.text(a["credentials"], f"{sub}.credentials")
        auth.credentials = Secret(cred) if cred is not None else None
    if "credentials_file" in a:
        auth.credentials_file = c.probe_time_file(a["credentials_file"], f"{sub}.credentials_file")


def _http_auth(c: Checker, m: dict[str, yaml.Node], path: str) -> _Auth:
    auth = _Auth()
    given = [k for k in ("basic_auth", "authorization", "bearer_token", "bearer_token_file")
             if k in m]  # fmt: skip
    if len(given) > 1:
        c.error(m[given[1]], f"{path}.{given[1]}", f"at most one of {', '.join(given)} may be set")
    elif "basic_auth" in m:
        auth.basic_auth = _basic_auth(c, m["basic_auth"], f"{path}.basic_auth")
    elif "authorization" in m:
        _authorization(c, m["authorization"], f"{path}.authorization", auth)
    elif "bearer_token" in m:
        tok = c.text(m["bearer_token"], f"{path}.bearer_token")
        auth.credentials = Secret(tok) if tok is not None else None
    elif "bearer_token_file" in m:
        auth.credentials_file = c.probe_time_file(
            m["bearer_token_file"], f"{path}.bearer_token_file"
        )
    return auth


_KEYS: dict[str, str | None] = {
    "valid_status_codes": None, "valid_http_versions": None, "preferred_ip_protocol": None,
    "ip_protocol_fallback": None, "skip_resolve_phase_with_proxy": None,
    "no_follow_redirects": None, "fail_if_ssl": None, "fail_if_not_ssl": None,
    "method": None, "headers": None, "fail_if_body_matches_regexp": None,
    "fail_if_body_not_matches_regexp": None, "fail_if_header_matches": None,
    "fail_if_header_not_matches": None, "body": None, "compression": None,
    "body_size_limit": None, "basic_auth": None, "authorization": None,
    "bearer_token": None, "bearer_token_file": None, "tls_config": None,
    "follow_redirects": None, "enable_http2": None,
    "oauth2": SOON, "proxy_url": SOON, "proxy_connect_header": SOON,
}  # fmt: skip
_DEFAULT = HTTPProbe()


def _flag(c: Checker, m: dict[str, yaml.Node], path: str, key: str, default: bool) -> bool:
    if key not in m:
        return default
    value = c.boolean(m[key], f"{path}.{key}")
    return default if value is None else value


def _compression(
    c: Checker, node: yaml.Node, path: str, headers: tuple[tuple[str, str], ...]
) -> str:
    comp = c.string(node, path)
    if comp is not None and comp.lower() == "br":
        c.error(node, path, f'"br" {SOON} (gzip, deflate)')
    elif comp is not None and comp.lower() not in COMPRESSIONS:
        c.error(node, path, f'unknown compression "{comp}"')
    elif comp is not None:
        for name, value in headers:
            if name.lower() == "accept-encoding" and comp.lower() not in value.lower():
                c.error(node, path,
                        f'invalid configuration "Accept-Encoding: {value}", '
                        f'"compression: {comp}"')  # fmt: skip
        return comp.lower()
    return ""


def parse(c: Checker, node: yaml.Node | None, path: str, where: yaml.Node) -> HTTPProbe:
    """``modules.NAME.<prober>`` (``node``; None when absent, ``where`` is the module)."""
    m = None if node is None else c.mapping(node, path, _KEYS)
    if m is None:
        return HTTPProbe()
    preferred, fallback = ip_protocol(c, m, path)
    codes: tuple[int, ...] = ()
    if "valid_status_codes" in m:
        items = c.sequence(m["valid_status_codes"], f"{path}.valid_status_codes") or []
        read = [c.integer(n, f"{path}.valid_status_codes[{i}]", 100, 999)
                for i, n in enumerate(items)]  # fmt: skip
        codes = tuple(x for x in read if x is not None)
    versions: tuple[str, ...] = ()
    if "valid_http_versions" in m:
        versions = c.strings(m["valid_http_versions"], f"{path}.valid_http_versions") or ()
    if "skip_resolve_phase_with_proxy" in m:  # meaningless without proxy_url: checked, ignored
        c.boolean(m["skip_resolve_phase_with_proxy"], f"{path}.skip_resolve_phase_with_proxy")
    fail_if_ssl = _flag(c, m, path, "fail_if_ssl", False)
    fail_if_not_ssl = _flag(c, m, path, "fail_if_not_ssl", False)
    follow = _flag(c, m, path, "follow_redirects", True)
    http2 = _flag(c, m, path, "enable_http2", True)
    if "no_follow_redirects" in m:
        nf = c.boolean(m["no_follow_redirects"], f"{path}.no_follow_redirects")
        if nf is not None:
            follow = not nf
            c.warn(m["no_follow_redirects"], f"{path}.no_follow_redirects",
                   "is deprecated: use follow_redirects")  # fmt: skip
    method = _DEFAULT.method
    if "method" in m:
        given = c.string(m["method"], f"{path}.method")
        if given is not None and not re.fullmatch(r"[A-Za-z]+", given):
            c.error(m["method"], f"{path}.method", f'"{given}" is not an HTTP method')
        elif given:
            method = given.upper()
    headers: tuple[tuple[str, str], ...] = ()
    if "headers" in m:
        read_headers = c.string_map(m["headers"], f"{path}.headers")
        headers = tuple(read_headers.items()) if read_headers is not None else ()
    body_keys = ("fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp")
    body_rx = {key: c.regexes(m[key], f"{path}.{key}") or () if key in m else ()
               for key in body_keys}  # fmt: skip
    header_rx = {key: _header_matches(c, m[key], f"{path}.{key}") if key in m else ()
                 for key in ("fail_if_header_matches", "fail_if_header_not_matches")}  # fmt: skip
    body = (c.text(m["body"], f"{path}.body") or "") if "body" in m else ""
    compression = _compression(c, m["compression"], f"{path}.compression", headers) if (
        "compression" in m) else ""  # fmt: skip
    limit = 0
    if "body_size_limit" in m:
        limit = c.byte_size(m["body_size_limit"], f"{path}.body_size_limit") or 0
    auth = _http_auth(c, m, path)
    tls_config = parse_tls_config(c, m["tls_config"], f"{path}.tls_config") if (
        "tls_config" in m) else TLSConfig()  # fmt: skip
    return HTTPProbe(
        valid_status_codes=codes,
        valid_http_versions=versions,
        preferred_ip_protocol=preferred,
        ip_protocol_fallback=fallback,
        fail_if_ssl=fail_if_ssl,
        fail_if_not_ssl=fail_if_not_ssl,
        method=method,
        headers=headers,
        fail_if_body_matches_regexp=body_rx["fail_if_body_matches_regexp"],
        fail_if_body_not_matches_regexp=body_rx["fail_if_body_not_matches_regexp"],
        fail_if_header_matches=header_rx["fail_if_header_matches"],
        fail_if_header_not_matches=header_rx["fail_if_header_not_matches"],
        body=body,
        compression=compression,
        body_size_limit=limit,
        basic_auth=auth.basic_auth,
        auth_type=auth.auth_type,
        credentials=auth.credentials,
        credentials_file=auth.credentials_file,
        tls_config=tls_config,
        follow_redirects=follow,
        enable_http2=http2,
    )


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
    return section


PROBER = probes.register(
    ProberSpec(
        name="http",
        parse=parse,
        check_address=check_address,
        probe=probe,
        # any http target may speak TLS, by its URL or a redirect
        families=(HANDSHAKE, DURATION, STATUS, *tls_.FAMILIES),
        blackbox_families=BLACKBOX_FAMILIES,
        shown=shown,
        with_hostname=with_hostname,
        default=HTTPProbe(),
    )
)
