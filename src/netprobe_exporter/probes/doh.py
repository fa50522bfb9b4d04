"""DNS over HTTPS (RFC 8484) for the dns prober: the query as one HTTP/1.1 exchange over TLS.

blackbox_exporter has no DoH (its issue #647 is open); the shape here is the RFC's. The target
is the server's URL, ``https://host[:port][/path]`` (``/dns-query``, the path RFC 8484's
examples and the public resolvers use, when it has none), or ``host[:port]`` standing for that
URL. The query goes with DNS id 0 (section 4.1, for HTTP caches), as ``POST`` with an
``application/dns-message`` body or as ``GET`` with ``?dns=`` its base64url (no padding). The
answer must be a 2xx with ``Content-Type: application/dns-message``; its body is the DNS
message the dns prober checks as it checks any other. TLS offers ``http/1.1`` by ALPN.

Bounds: the response head may take http's ``MAX_RESPONSE_HEADER_BYTES``, the body at most
65,535 bytes (a DNS message's largest), whether sized by Content-Length, chunked or ended by
the close.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import __version__
from netprobe_exporter.addresses import parse_dns_server, parse_url
from netprobe_exporter.probes import ProbeFailure

#: RFC 8484's media type, for the request body and the answer
MEDIA_TYPE = "application/dns-message"
DEFAULT_PATH = "/dns-query"
METHODS = ("POST", "GET")
#: the largest DNS message: what a DoH answer's body may hold
MAX_BODY = 65535
#: a response's status line and headers may take this many bytes (http's bound, Go's default)
MAX_HEAD = 1 << 20


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    ip_version: int
    #: path and query the request goes to
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if self.ip_version == 6 else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def parse_target(address: str) -> Target:
    """The DoH server of ``address``; ValueError says what is wrong."""
    if "://" in address:
        if not address.lower().startswith("https://"):
            raise ValueError(f"{address!r}: a DNS over HTTPS target is an https:// URL")
        url = parse_url("https://" + address[len("https://") :])
        if url.username is not None:
            raise ValueError(f"{url.request_text!r}: a DNS over HTTPS URL takes no userinfo")
        path = url.path
        if urlsplit(url.text).path in ("", "/"):
            query = path.partition("?")[2]
            path = DEFAULT_PATH + (f"?{query}" if query else "")
        return Target(url.host, url.port, url.ip_version, path)
    hp = parse_dns_server(address, 443)
    return Target(hp.host, hp.port, hp.ip_version, DEFAULT_PATH)


def request(target: Target, method: str, query: bytes) -> bytes:
    """The HTTP/1.1 request carrying ``query`` (its id set to 0, as section 4.1 asks)."""
    wire = b"\0\0" + query[2:]
    head = [f"Host: {target.host_header}", f"User-Agent: netprobe-exporter/{__version__}",
            f"Accept: {MEDIA_TYPE}", "Connection: close"]  # fmt: skip
    if method == "GET":
        encoded = base64.urlsafe_b64encode(wire).rstrip(b"=").decode("ascii")
        sep = "&" if "?" in target.path else "?"
        lines = [f"GET {target.path}{sep}dns={encoded} HTTP/1.1", *head]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    lines = [f"POST {target.path} HTTP/1.1", *head, f"Content-Type: {MEDIA_TYPE}",
             f"Content-Length: {len(wire)}"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + wire


@dataclass(slots=True)
class _Head:
    status: int
    headers: dict[str, str]


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProbeFailure("protocol_error", "DNS over HTTPS: malformed HTTP status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProbeFailure("protocol_error", "DNS over HTTPS: malformed HTTP header line")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return _Head(int(parts[1]), headers)


@implementer(IHandshakeListener)
class Exchange(Protocol):
    """One request and its response on an adopted TLS connection; ``done`` fires with the
    DNS message of the body, or fails with ProbeFailure. The request goes out when the
    handshake is done, so ``sent_at`` starts the request phase as for DNS over TLS."""

    def __init__(self, payload: bytes, clock: Callable[[], float]) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._payload = payload
        self._clock = clock
        self._buf = bytearray()
        self._head: _Head | None = None
        self.sent_at = 0.0
        self.status = 0

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.sent_at = self._clock()
        self.transport.write(self._payload)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._buf += data
        try:
            body = self._body(eof=False)
        except ProbeFailure as exc:
            self.done.errback(exc)
            return
        if body is not None:
            self.done.callback(body)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.done.called:
            return
        if not self.sent_at:
            why = reason.getErrorMessage()
            self.done.errback(ProbeFailure("tls_error", f"TLS handshake failed: {why}"))
            return
        try:
            body = self._body(eof=True)
        except ProbeFailure as exc:
            self.done.errback(exc)
            return
        if body is None:
            what = "connection closed before a whole response"
            self.done.errback(ProbeFailure("protocol_error", f"DNS over HTTPS: {what}"))
        else:
            self.done.callback(body)

    def _body(self, eof: bool) -> bytes | None:
        """The answer's DNS message once the whole body is in; None while it is not."""
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if len(self._buf) > MAX_HEAD:
                    raise ProbeFailure("protocol_error", "DNS over HTTPS: response head too long")
                return None
            self._head = _parse_head(bytes(self._buf[:end]))
            del self._buf[: end + 4]
            self.status = self._head.status
            self._check(self._head)
        headers = self._head.headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked(eof)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise ProbeFailure("protocol_error", f"DNS over HTTPS: Content-Length {length} "
                                   f"is not a DNS message's (at most {MAX_BODY})")  # fmt: skip
            size = int(length)
            return bytes(self._buf[:size]) if len(self._buf) >= size else None
        if len(self._buf) > MAX_BODY:
            raise ProbeFailure("protocol_error", "DNS over HTTPS: body over 65535 bytes")
        return bytes(self._buf) if eof else None

    def _chunked(self, eof: bool) -> bytes | None:
        out, at, buf = bytearray(), 0, self._buf
        while True:
            line_end = buf.find(b"\r\n", at)
            if line_end < 0:
                return None
            size_text = bytes(buf[at:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProbeFailure("protocol_error", "DNS over HTTPS: bad chunk size") from None
            if size == 0:
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise ProbeFailure("protocol_error", "DNS over HTTPS: body over 65535 bytes")
            start = line_end + 2
            if len(buf) < start + size + 2:
                return None
            out += buf[start : start + size]
            at = start + size + 2

    def _check(self, head: _Head) -> None:
        if not 200 <= head.status < 300:
            raise ProbeFailure("protocol_error", f"DNS over HTTPS: HTTP status {head.status}")
        kind = head.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != MEDIA_TYPE:
            what = f"DNS over HTTPS: Content-Type {kind or 'none'}, not {MEDIA_TYPE}"
            raise ProbeFailure("protocol_error", what)
