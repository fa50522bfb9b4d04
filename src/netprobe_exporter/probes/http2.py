"""HTTP/2 for the http prober: one request over a TLS connection that negotiated ``h2``.

Go's client (so blackbox's) speaks HTTP/2 only when ALPN over TLS picks ``h2``; a plain
``http://`` URL stays HTTP/1.1 (no h2c). The client here is ``h2``'s sans-IO ``H2Connection``
over the transport the prober already built; it answers with a ``StreamResponse``, an
``IResponse`` like Twisted's, so status, header, body and redirect checks are the HTTP/1.1 ones.

Bounds: the response's header list may take ``max_header_bytes`` (hpack's accounting), the
bytes of frames other than DATA (headers, settings, pings ...) at most ``CONTROL_BYTES``; DATA
is credited back to the peer only as the body reader takes it, so an unread body stalls at the
stream window instead of growing memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from typing import Protocol as TypingProtocol

import h2.events
import h2.exceptions
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from zope.interface import implementer

#: the ALPN list offered when HTTP/2 is enabled, in Go's order
ALPN = (b"h2", b"http/1.1")
#: received bytes of non-DATA frames allowed per connection (a ping or settings flood stops)
CONTROL_BYTES = 4 << 20
_STREAM = 1  # the one request's stream id


class HopTimes(TypingProtocol):
    """What the prober's hop records: handshake end, the response's first byte, and why its
    head was refused."""

    tls_start: float
    tls_done: float
    got_conn: float
    response_start: float
    head_error: str | None

    def clock(self) -> float: ...


class ProtocolFailure(Exception):
    """The peer broke the protocol (or a bound); the message says how."""


@implementer(IPushProducer)
class _BodyTransport:
    """What a body reader sees as its transport: ``stopProducing`` ends the exchange."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def stopProducing(self) -> None:
        self._stop()

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IResponse)
class StreamResponse:
    """A response of a multiplexed protocol (HTTP/2, HTTP/3), shaped like Twisted's.

    DATA that comes before ``deliverBody`` is kept (bounded by the peer's flow control window,
    which ``consumed`` reopens only once the reader has the bytes).
    """

    def __init__(
        self, major: int, code: int, headers: Headers, request: Any,
        consumed: Callable[[int], None], stop: Callable[[], None],
    ) -> None:  # fmt: skip
        self.version = (b"HTTP", major, 0)
        self.code = code
        self.phrase = b""
        self.headers = headers
        self.request = request
        self.previousResponse: IResponse | None = None
        self.length: int | object = _length(headers)
        self._consumed, self._stop = consumed, stop
        self._reader: IProtocol | None = None
        self._pending: list[bytes] = []
        self._ended: Failure | None = None

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: IProtocol) -> None:
        self._reader = protocol
        protocol.makeConnection(cast(Any, _BodyTransport(self._stop)))
        pending, self._pending = self._pending, []
        for data in pending:
            self.feed(data)
        if self._ended is not None:
            self._finish()

    def feed(self, data: bytes) -> None:
        """Body bytes from the peer."""
        if self._reader is None:
            self._pending.append(data)
            return
        self._reader.dataReceived(data)
        self._consumed(len(data))

    def end(self, reason: Failure | None = None) -> None:
        """The body is complete (``reason`` None) or broken."""
        if self._ended is not None:
            return
        self._ended = reason or Failure(ResponseDone())
        if self._reader is not None and not self._pending:
            self._finish()

    def _finish(self) -> None:
        assert self._reader is not None and self._ended is not None
        self._reader.connectionLost(self._ended)


def _length(headers: Headers) -> int | object:
    """Content-Length as Go's client reads it: one parseable value, else unknown."""
    values = headers.getRawHeaders(b"content-length") or []
    if len(values) == 1 and values[0].strip().isdigit():
        return int(values[0])
    return UNKNOWN_LENGTH


def request_headers(request: Any, scheme: bytes) -> list[tuple[bytes, bytes]]:
    """The pseudo-headers and the rest of ``request`` (Twisted's ``Request``), lower-cased.

    ``Host`` becomes ``:authority``; connection-specific headers are not sent (RFC 9113 8.2.2).
    """
    headers: Headers = request.headers
    host = (headers.getRawHeaders(b"host") or [b""])[0]
    out = [(b":method", request.method), (b":scheme", scheme), (b":authority", host),
           (b":path", request.uri or b"/")]  # fmt: skip
    skip = {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
            b"upgrade"}  # fmt: skip
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower in skip or (lower == b"te" and values != [b"trailers"]):
            continue
        out.extend((lower, v) for v in values)
    return out


async def request_body(request: Any) -> bytes:
    """All of the request's body (a producer of a configured, bounded text)."""
    producer = request.bodyProducer
    if producer is None:
        return b""
    chunks: list[bytes] = []

    class _Collect:
        def write(self, data: bytes) -> None:
            chunks.append(data)

    await producer.startProducing(_Collect())
    return b"".join(chunks)


class H2Client(Protocol):
    """One request and its response over a new HTTP/2 connection.

    It takes the place of Twisted's HTTP/1.1 client protocol behind the prober's timing
    wrapper once ALPN said ``h2``: ``request`` has the same contract.
    """

    def __init__(self, hop: HopTimes, max_header_bytes: int) -> None:
        self._hop = hop
        config = H2Configuration(client_side=True, header_encoding=None)
        self._conn = H2Connection(config)
        self._conn.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.MAX_CONCURRENT_STREAMS: 1,
                SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            },
        )
        self._conn.decoder.max_header_list_size = max_header_bytes
        self._max_header_bytes = max_header_bytes
        self._answer: Deferred[IResponse] | None = None
        self._response: StreamResponse | None = None
        self._request: Any = None
        self._body = b""
        self._control = 0
        self._closed = False

    def connectionMade(self) -> None:
        self._conn.initiate_connection()
        self._flush()

    def request(self, request: Any) -> Deferred[IResponse]:
        """Send ``request`` on stream 1; fires with the response head (body via deliverBody)."""
        self._request = request
        self._answer = Deferred(lambda _: self._abort())
        Deferred.fromCoroutine(self._send(request)).addErrback(self._fail)
        return self._answer

    async def _send(self, request: Any) -> None:
        body = await request_body(request)
        if self._closed:
            return
        self._conn.send_headers(_STREAM, request_headers(request, b"https"), end_stream=not body)
        self._body = body
        self._send_body()
        self._flush()

    def _send_body(self) -> None:
        """As much of the request body as the peer's windows allow; the rest on WINDOW_UPDATE."""
        while self._body:
            room = min(
                self._conn.local_flow_control_window(_STREAM), self._conn.max_outbound_frame_size
            )
            if room <= 0:
                return
            piece, self._body = self._body[:room], self._body[room:]
            self._conn.send_data(_STREAM, piece, end_stream=not self._body)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.DenialOfServiceError:
            self._head_refused()
            return
        except h2.exceptions.ProtocolError as exc:
            self._fail(Failure(ProtocolFailure(f"http2: {exc}")))
            return
        flow = sum(e.flow_controlled_length or 0 for e in events
                   if isinstance(e, h2.events.DataReceived))  # fmt: skip
        self._control += len(data) - flow
        for event in events:
            self._event(event)
        if self._control > CONTROL_BYTES and not self._closed:
            why = f"http2: server sent more than {CONTROL_BYTES} bytes of non-DATA frames"
            self._fail(Failure(ProtocolFailure(why)))
            return
        self._flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._head(event)
        elif isinstance(event, h2.events.DataReceived):
            if self._response is not None and event.data is not None:
                self._response.feed(event.data)
            elif event.flow_controlled_length:
                self._credit(event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            self._ended()
        elif isinstance(event, h2.events.StreamReset):
            why = f"http2: stream reset by the server (error code {event.error_code})"
            self._fail(Failure(ProtocolFailure(why)))
        elif isinstance(event, h2.events.ConnectionTerminated):
            if not (event.error_code == 0 and self._response_done()):
                why = f"http2: server sent GOAWAY (error code {event.error_code})"
                self._fail(Failure(ProtocolFailure(why)))
        elif isinstance(event, h2.events.WindowUpdated):
            self._send_body()

    def _head(self, event: h2.events.ResponseReceived) -> None:
        if self._hop.response_start == 0.0:
            self._hop.response_start = self._hop.clock()
        headers = Headers()
        status = 0
        for name, value in event.headers or ():
            n, v = bytes(name), bytes(value)
            if n == b":status":
                status = int(v)
            elif not n.startswith(b":"):
                headers.addRawHeader(n, v)
        response = StreamResponse(2, status, headers, self._request, self._credit, self._abort)
        head_only = self._request is not None and self._request.method == b"HEAD"
        if event.stream_ended and not headers.hasHeader(b"content-length") and not head_only:
            response.length = 0  # as Go: a response ending with its head has no body
        self._response = response
        if self._answer is not None and not self._answer.called:
            self._answer.callback(response)

    def _credit(self, size: int) -> None:
        if self._closed or not size:
            return
        try:
            self._conn.acknowledge_received_data(size, _STREAM)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    def _response_done(self) -> bool:
        return self._response is not None and self._response._ended is not None

    def _ended(self) -> None:
        if self._response is not None:
            self._response.end()
        self._closed = True
        self._drop()

    def _head_refused(self) -> None:
        self._hop.head_error = (
            f"http: server response headers exceeded {self._max_header_bytes} bytes"
        )
        self._fail(Failure(ProtocolFailure(self._hop.head_error)))

    def _fail(self, reason: Failure) -> None:
        """The exchange broke: the caller (or the body reader) hears why; the socket goes."""
        if self._answer is not None and not self._answer.called:
            self._answer.errback(ResponseFailed([reason]))
        elif self._response is not None:
            self._response.end(Failure(ResponseFailed([reason])))
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        transport = self.transport
        if transport is not None and not getattr(transport, "disconnected", False):
            cast(Any, transport).abortConnection()

    def _flush(self) -> None:
        out = self._conn.data_to_send()
        if out and self.transport is not None and not self._closed:
            self.transport.write(out)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        done = self._response_done()
        self._closed = True
        if not done:
            self._fail(reason)
