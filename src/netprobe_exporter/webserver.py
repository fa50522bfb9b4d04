"""The web server's own bounds: idle and slow clients, and how many connections it holds.

Twisted's ``HTTPChannel`` closes a connection only after ``timeOut`` seconds *without a byte*,
so a client that trickles one header byte every few seconds (slowloris) keeps its connection,
and its file descriptor, forever. Here a request's head and body must arrive within
``web_request_timeout`` of its first byte, and a new connection's first request within
``web_request_timeout`` of the accept (a client that connects and says nothing is closed as
soon as one that trickles bytes). At most ``max_web_connections`` are open at once: at the
limit a new connection takes the place of the one idle longest (never sent a byte, or between
requests), and is closed as soon as it is accepted only when every connection is in a request.
Silent sockets thus cannot lock everyone out. Probes never wait for the web server either way;
what the bounds protect is the process's file descriptors and memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.protocol import connectionDone as CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site

from netprobe_exporter import redact
from netprobe_exporter.config import Limits

log = Logger()

#: no endpoint takes a request body of any size; Twisted would spool any amount to a temp file
MAX_REQUEST_BYTES = 1024 * 1024


def _close_with(code: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + code + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(text) + text
    )


_TIMEOUT_RESPONSE = _close_with(b"408 Request Timeout", b"request not received within the limit\n")
_TOO_LARGE_RESPONSE = _close_with(
    b"413 Content Too Large", b"request over %d bytes\n" % MAX_REQUEST_BYTES
)


class BoundedChannel(http.HTTPChannel):
    """An HTTPChannel that gives each request a deadline from its first byte to its last (the
    first request: from the accept), and tells its site when it is idle, so that the site can
    close it to make room for a new connection."""

    site: BoundedSite
    _deadline: IDelayedCall | None = None
    _stall: IDelayedCall | None = None
    _received = 0
    _closing = False
    #: between a request's last byte and its response's end (what HTTPChannel buffers for)
    _in_request = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.opened(self)
        self._deadline = self.callLater(self.site.limits().web_request_timeout, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if data:
            self.site.busy(self)
        if self._in_request:
            # Twisted buffers what comes while a request is handled, without bound when the
            # client does not read its response either: the same cap applies to that
            self._received += len(data)
            if self._received > MAX_REQUEST_BYTES:
                self._abort("web client sent too much while its request ran: closed")
                return
        elif data:
            if self._deadline is None:
                limit = self.site.limits().web_request_timeout
                self._deadline = self.callLater(limit, self._too_slow)
            self._received += len(data)
            if self._received > MAX_REQUEST_BYTES:
                self._close(_TOO_LARGE_RESPONSE, "web request too large: closed")
                return
        super().dataReceived(data)

    def requestDone(self, request: http.Request) -> None:
        self._received = 0
        if self.persistent:  # else the connection closes: still in a request until it does
            self._in_request = False
        super().requestDone(request)  # replays pipelined data, which may start the next request
        if self.persistent and not self._in_request and not self._received:
            self.site.idle(self)

    # A client that stops reading its response leaves the send buffer full: Twisted pauses us
    # and (the idle timeout being off while a request runs) would wait forever.
    def pauseProducing(self) -> None:
        if self._stall is None:
            limit = self.site.limits().web_idle_timeout
            self._stall = self.callLater(limit, self._stalled)
        super().pauseProducing()

    def resumeProducing(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        super().resumeProducing()

    def _stalled(self) -> None:
        self._abort("web client stopped reading: closed")

    def evict(self) -> None:
        """Close an idle connection to make room for a new one (clients reconnect)."""
        self._cancel_deadline()
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def _abort(self, why: str) -> None:
        self._stall = None
        self._cancel_deadline()
        self._closing = True
        self.site.busy(self)
        log.debug(why)
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        self._received = 0
        self._in_request = True  # before the request runs: it may end within the call
        super().allContentReceived()

    def _too_slow(self) -> None:
        self._deadline = None
        if self._received:
            self._close(_TIMEOUT_RESPONSE, "web client too slow: closed")
        else:  # connected and said nothing: there is no request to answer
            self._close(b"", "web client silent since connecting: closed")

    def _close(self, response: bytes, why: str) -> None:
        self._cancel_deadline()
        self._closing = True
        self.site.busy(self)
        peer = self.transport.getPeer() if self.transport is not None else None
        log.debug(why, peer=str(peer))
        if self.transport is not None:
            if response:
                self.transport.write(response)
            self.transport.loseConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self._cancel_deadline()
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self.site.closed(self)
        super().connectionLost(reason)


class _Refused(Protocol):
    """Closes at once. (Returning None from buildProtocol does not work under TLS, where the
    factory wraps whatever it gets.)"""

    def connectionMade(self) -> None:
        assert self.transport is not None
        cast(ITCPTransport, self.transport).abortConnection()


class BoundedSite(Site):
    """A Site with bounded connections; access lines go to the debug log, in our format."""

    protocol = BoundedChannel  # type: ignore[assignment]  # HTTP/1.1 only: no h2 upgrade
    noisy = False

    def __init__(self, resource: Resource, limits: Callable[[], Limits], **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.limits = limits
        #: every open connection, and (in the order they fell idle) those not in a request
        self._open: set[BoundedChannel] = set()
        self._idle: dict[BoundedChannel, None] = {}
        #: connections refused because max_web_connections were open and busy (for the log)
        self.refused_connections = 0
        #: idle connections closed to make room for a new one (for the log)
        self.evicted_connections = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def opened(self, channel: BoundedChannel) -> None:
        self._open.add(channel)
        self._idle[channel] = None

    def busy(self, channel: BoundedChannel) -> None:
        self._idle.pop(channel, None)

    def idle(self, channel: BoundedChannel) -> None:
        if channel in self._open:
            self._idle.pop(channel, None)
            self._idle[channel] = None  # to the end: the oldest idle one goes first

    def closed(self, channel: BoundedChannel) -> None:
        self._open.discard(channel)
        self._idle.pop(channel, None)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        limits = self.limits()
        if len(self._open) >= limits.max_web_connections and not self._make_room(limits):
            self.refused_connections += 1
            if self.refused_connections == 1 or self.refused_connections % 1000 == 0:
                log.warn(
                    "web connection refused: limits.max_web_connections reached",
                    limit=limits.max_web_connections,
                    refused=self.refused_connections,
                )
            return _Refused()
        channel = super().buildProtocol(addr)
        channel.timeOut = limits.web_idle_timeout
        return channel

    def _make_room(self, limits: Limits) -> bool:
        """Close the connection idle longest; False when every connection is in a request."""
        while len(self._open) >= limits.max_web_connections and self._idle:
            oldest = next(iter(self._idle))
            self.closed(oldest)  # counted out now: its socket closes within a reactor turn
            oldest.evict()
            self.evicted_connections += 1
            if self.evicted_connections == 1 or self.evicted_connections % 1000 == 0:
                log.info(
                    "idle web connection closed to make room: limits.max_web_connections reached",
                    limit=limits.max_web_connections,
                    evicted=self.evicted_connections,
                )
        return len(self._open) < limits.max_web_connections

    def log(self, request: http.Request) -> None:
        log.debug(
            "http request",
            method=request.method.decode("latin-1"),
            path=redact.request_uri(request.uri.decode("latin-1")),
            code=request.code,
        )
