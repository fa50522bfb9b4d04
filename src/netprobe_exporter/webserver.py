"""The web server's own bounds: idle and slow clients, and how many connections it holds.

Twisted's ``HTTPChannel`` closes a connection only after ``timeOut`` seconds *without a byte*,
so a client that trickles one header byte every few seconds (slowloris) keeps its connection,
and its file descriptor, forever. Here a request's head and body must arrive within
``web_request_timeout`` of its first byte, and at most ``max_web_connections`` are open at
once: a connection beyond that is closed as soon as it is accepted. Probes never wait for the
web server either way; what the bounds protect is the process's file descriptors and memory.
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
    """An HTTPChannel that gives each request a deadline from its first byte to its last."""

    site: BoundedSite
    _deadline: IDelayedCall | None = None
    _stall: IDelayedCall | None = None
    _received = 0
    _closing = False

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._handlingRequest:
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
        super().requestDone(request)

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

    def _abort(self, why: str) -> None:
        self._stall = None
        self._cancel_deadline()
        self._closing = True
        log.debug(why)
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        self._received = 0
        super().allContentReceived()

    def _too_slow(self) -> None:
        self._deadline = None
        self._close(_TIMEOUT_RESPONSE, "web client too slow: closed")

    def _close(self, response: bytes, why: str) -> None:
        self._cancel_deadline()
        self._closing = True
        peer = self.transport.getPeer() if self.transport is not None else None
        log.debug(why, peer=str(peer))
        if self.transport is not None:
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
        self.site.open_connections -= 1
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
        self.open_connections = 0
        #: connections refused because max_web_connections were open (for the log)
        self.refused_connections = 0

    def buildProtocol(self, addr: IAddress | None) -> Any:
        limits = self.limits()
        if self.open_connections >= limits.max_web_connections:
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
        self.open_connections += 1
        return channel

    def log(self, request: http.Request) -> None:
        log.debug(
            "http request",
            method=request.method.decode("latin-1"),
            path=redact.request_uri(request.uri.decode("latin-1")),
            code=request.code,
        )
