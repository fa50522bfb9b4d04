"""HTTP/3 for the http prober (``enable_http3``, blackbox 0.28): one request over QUIC.

aioquic's sans-IO ``QuicConnection`` and ``H3Connection`` are driven from the reactor: a UDP
port of the reactor carries the datagrams, its clock the loss-recovery and idle timers; no
asyncio loop runs. As in blackbox (quic-go's http3 transport) there is no fallback to TCP, the
ALPN is ``h3`` only and TLS is 1.3; the answer is a ``StreamResponse`` like HTTP/2's, so the
prober's checks are unchanged.

Phases: QUIC has no separate TCP connect, so ``connect`` and ``tls`` are both the QUIC
handshake (first Initial to handshake done), as quic-go's trace hooks give blackbox;
``processing`` runs from the handshake to the response's HEADERS, ``transfer`` to its end.
Bounds: the idle timeout is the probe's timeout; stream and connection flow control windows
are ``max_stream_data``; the response's header list may take ``max_header_bytes``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import crypto
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from netprobe_exporter.probes import ProbeContext, ProbeFailure, ProbeReactor, ProbeResult
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.http2 import HopTimes, ProtocolFailure, StreamResponse
from netprobe_exporter.probes.tls import TLSConfig, TLSInfo

#: per stream and per connection receive window (aioquic's default, 1 MiB)
WINDOW = 1 << 20
#: the response's header list (RFC 9114's accounting), as the HTTP/1.1 head's bytes
MAX_HEADER_BYTES = 1 << 20
#: a QUIC CRYPTO_ERROR carries a TLS alert: 0x0100 + alert
_CRYPTO_ERRORS = range(0x100, 0x200)
_H3_REQUEST_CANCELLED = 0x10C


def configuration(cfg: TLSConfig, server_name: str, timeout: float) -> QuicConfiguration:
    """QUIC client settings from ``tls_config``: verification, client certificate, idle time."""
    if cfg.max_version and cfg.max_version != "TLS13":
        raise ValueError(f"HTTP/3 needs TLS 1.3, tls_config.max_version is {cfg.max_version}")
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=timeout,
        max_data=WINDOW,
        max_stream_data=WINDOW,
        server_name=server_name or None,
        verify_mode=ssl.CERT_NONE if cfg.insecure_skip_verify else ssl.CERT_REQUIRED,
    )
    if cfg.ca_file:
        config.cadata = tls_.read_config_file(cfg.ca_file, "ca_file")
    else:  # the platform's trust, as the TCP prober uses (not certifi's)
        paths = ssl.get_default_verify_paths()
        if paths.cafile and os.path.exists(paths.cafile):
            config.cafile = paths.cafile
        elif paths.capath and os.path.isdir(paths.capath):
            config.capath = paths.capath
    if cfg.cert_file and cfg.key_file:
        config.load_cert_chain(cfg.cert_file, cfg.key_file)
    return config


@implementer(IReadDescriptor)
class _UDPSocket:
    """A connected, non-blocking UDP socket read by the reactor (as the dns prober's).

    Connected, so only the peer's datagrams arrive, and an ICMP port-unreachable is read back
    as ECONNREFUSED (a refused probe) rather than waited out.
    """

    def __init__(
        self, reactor: ProbeReactor, client: H3Client, ip: str, port: int, source: str | None
    ) -> None:
        self._reactor, self._client = reactor, client
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self._sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            if source:
                self._bind(source)
            self._sock.connect((ip, port))
        except (OSError, ProbeFailure):
            self.close()
            raise
        reactor.addReader(self)

    def _bind(self, source: str) -> None:
        """The source address (``source_ip_address``), as the TCP connector binds it."""
        assert self._sock is not None
        try:
            self._sock.bind((source, 0))
        except OSError as exc:  # a local problem (address not ours, wrong family)
            raise ProbeFailure("error", f"bind {source}: {exc.strerror}") from None

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:
        return "http3-probe"

    def write(self, data: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(data)
        except BlockingIOError:
            pass  # a full send buffer is a lost datagram: QUIC sends it again
        except OSError as exc:
            self._client.socket_error(exc.errno or 0)

    def doRead(self) -> None:
        for _ in range(64):  # a burst at most, then the reactor's other work
            if self._sock is None:
                return
            try:
                data = self._sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                self._client.socket_error(exc.errno or 0)
                return
            self._client.received(data)

    def connectionLost(self, reason: Failure) -> None:
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if self._sock else 0
        self._client.socket_error(err)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._reactor.removeReader(self)
            self._sock.close()
            self._sock = None


class H3Client:
    """One request over a new QUIC connection to ``(ip, port)``."""

    def __init__(
        self, ctx: ProbeContext, hop: HopTimes, config: QuicConfiguration, ip: str, port: int,
        max_header_bytes: int, source: str | None = None,
    ) -> None:  # fmt: skip
        self._ctx, self._hop, self._peer, self._source = ctx, hop, (ip, port), source
        self._quic = QuicConnection(configuration=config)
        self._h3 = H3Connection(self._quic)
        self._max_header_bytes = max_header_bytes
        self._timer: IDelayedCall | None = None
        self._port: _UDPSocket | None = None
        self._answer: Deferred[IResponse] | None = None
        self._response: StreamResponse | None = None
        self._request: tuple[list[tuple[bytes, bytes]], bytes] | None = None
        self._stream = -1
        self._handshake_start = 0.0
        self._handshake_done = 0.0
        self._closed = False
        self.verified = config.verify_mode == ssl.CERT_REQUIRED
        self._cadata, self._cafile, self._capath = config.cadata, config.cafile, config.capath

    def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Deferred[IResponse]:
        """Start the handshake; the request goes once it is done. Fires with the head."""
        self._request = (headers, body)
        self._answer = Deferred(lambda _: self.close())
        self._port = _UDPSocket(self._ctx.reactor, self, *self._peer, self._source)
        self._handshake_start = self._hop.tls_start = self._hop.clock()
        self._quic.connect(self._peer, now=self._ctx.clock.monotonic())
        self._transmit()
        return self._answer

    @property
    def handshake_seconds(self) -> float:
        """The QUIC handshake's time, 0 until it is done."""
        if not self._handshake_done:
            return 0.0
        return max(self._handshake_done - self._handshake_start, 0.0)

    def socket_error(self, err: int) -> None:
        """The socket failed: ECONNREFUSED (ICMP port unreachable) is a refused probe."""
        if self._closed:
            return
        if err == errno.ECONNREFUSED:
            exc = ProbeFailure("refused", "http3: UDP port unreachable (refused)")
        else:
            exc = ProbeFailure("error", f"http3: udp: {os.strerror(err) if err else 'closed'}")
        if self._answer is not None and not self._answer.called:
            self._answer.errback(exc)
            self.close()
        else:
            self._fail(ProtocolFailure(str(exc)))

    def received(self, datagram: bytes) -> None:
        if self._closed:
            return
        self._quic.receive_datagram(datagram, self._peer, now=self._ctx.clock.monotonic())
        self._drain()
        self._transmit()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._quic.handle_timer(now=self._ctx.clock.monotonic())
        self._drain()
        self._transmit()

    def _drain(self) -> None:
        while not self._closed and (event := self._quic.next_event()) is not None:
            self._quic_event(event)

    def _quic_event(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._handshake_done = now = self._hop.clock()
            self._hop.tls_done = self._hop.got_conn = now
            self._send_request()
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and h3_event.stream_id == self._stream:
                self._head(h3_event.headers, h3_event.stream_ended)
            elif (
                isinstance(h3_event, DataReceived)
                and h3_event.stream_id == self._stream
                and self._response is not None
            ):
                if h3_event.data:
                    self._response.feed(h3_event.data)
                if h3_event.stream_ended:
                    self._response.end()
                    self.close()

    def _send_request(self) -> None:
        assert self._request is not None
        headers, body = self._request
        self._stream = self._quic.get_next_available_stream_id()
        self._h3.send_headers(self._stream, headers, end_stream=not body)
        if body:
            self._h3.send_data(self._stream, body, end_stream=True)

    def _head(self, raw: Sequence[tuple[bytes, bytes]], ended: bool) -> None:
        size = sum(len(n) + len(v) + 32 for n, v in raw)  # RFC 9114 4.2.2's accounting
        if size > self._max_header_bytes:
            self._hop.head_error = (
                f"http: server response headers exceeded {self._max_header_bytes} bytes"
            )
            self._fail(ProtocolFailure(self._hop.head_error))
            return
        status, headers = 0, Headers()
        for name, value in raw:
            if name == b":status":
                status = int(value) if value.isdigit() else 0
            elif not name.startswith(b":"):
                headers.addRawHeader(name, value)
        if 100 <= status < 200:
            return  # an informational response: the final one follows
        if self._response is not None:
            return  # trailers
        if self._hop.response_start == 0.0:
            self._hop.response_start = self._hop.clock()
        response = StreamResponse(3, status, headers, None, lambda _: None, self.close)
        self._response = response
        if self._answer is not None and not self._answer.called:
            self._answer.callback(response)
        if ended:
            response.end()
            self.close()

    def _terminated(self, event: ConnectionTerminated) -> None:
        why = f"error code 0x{event.error_code:x}"
        if event.reason_phrase:
            why += f": {event.reason_phrase}"
        if not self._handshake_done:  # the prober calls it a TLS handshake failure
            what = "TLS alert" if event.error_code in _CRYPTO_ERRORS else "closed"
            self._fail(ProtocolFailure(f"QUIC handshake {what} ({why})"))
        else:
            self._fail(ProtocolFailure(f"QUIC connection closed by the server ({why})"))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.called:
            self._answer.errback(ResponseFailed([Failure(exc)]))
        elif self._response is not None:
            self._response.end(Failure(ResponseFailed([Failure(exc)])))
        self.close()

    def _transmit(self) -> None:
        if self._port is None:
            return
        for data, _addr in self._quic.datagrams_to_send(now=self._ctx.clock.monotonic()):
            self._port.write(data)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self._quic.get_timer()
        if deadline is not None and not self._closed:
            delay = max(deadline - self._ctx.clock.monotonic(), 0.0)
            self._timer = self._ctx.reactor.callLater(delay, self._on_timer)

    def close(self) -> None:
        """Say goodbye (CONNECTION_CLOSE) if the connection is up, then free port and timer."""
        if self._closed:
            return
        self._closed = True
        if self._port is not None:
            if self._stream >= 0 and self._response is not None and self._response._ended is None:
                self._quic.close(error_code=_H3_REQUEST_CANCELLED)
            else:
                self._quic.close()
            for data, _addr in self._quic.datagrams_to_send(now=self._ctx.clock.monotonic()):
                self._port.write(data)
            self._port.close()
            self._port = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._response is not None and self._response._ended is None:
            self._response.end(Failure(ResponseFailed([Failure(ProtocolFailure("closed"))])))

    def tls_info(self) -> TLSInfo | None:
        """The peer's certificates as blackbox reports them (quic-go's ``resp.TLS``)."""
        tls = self._quic.tls
        leaf: x509.Certificate | None = getattr(tls, "_peer_certificate", None)
        if leaf is None:
            return None
        chain = [leaf, *getattr(tls, "_peer_certificate_chain", [])]
        info = TLSInfo(version="TLS 1.3")
        info.earliest_expiry = min(c.not_valid_after_utc.timestamp() for c in chain)
        info.fingerprint_sha256 = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
        info.subject = tls_.go_name_string(leaf.subject)
        info.issuer = tls_.go_name_string(leaf.issuer)
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            info.subject_alternative = ",".join(san.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            pass
        info.serial_number = tls_.go_serial(leaf.serial_number)
        schedule = getattr(tls, "key_schedule", None)
        if schedule is not None:
            info.cipher = f"TLS_{schedule.cipher_suite.name}"
        verified = self._verified_chain(leaf, chain[1:]) if self.verified else None
        if verified:
            info.last_chain_expiry = min(c.not_valid_after_utc.timestamp() for c in verified)
        return info

    def _verified_chain(
        self, leaf: x509.Certificate, rest: list[x509.Certificate]
    ) -> list[x509.Certificate] | None:
        """The chain up to a trusted root, as Go's ``VerifiedChains[0]``."""
        store = crypto.X509Store()
        try:
            if self._cadata is not None:
                for cert in x509.load_pem_x509_certificates(self._cadata):
                    store.add_cert(crypto.X509.from_cryptography(cert))
            if self._cafile is not None or self._capath is not None:
                store.load_locations(self._cafile, self._capath)
            ctx = crypto.X509StoreContext(
                store, crypto.X509.from_cryptography(leaf),
                [crypto.X509.from_cryptography(c) for c in rest],
            )  # fmt: skip
            return [c.to_cryptography() for c in ctx.get_verified_chain()]
        except (crypto.Error, crypto.X509StoreContextError, ValueError):
            return None


def request(
    ctx: ProbeContext, hop: HopTimes, cfg: TLSConfig, server_name: str, ip: str, port: int,
    timeout: float, head: list[tuple[bytes, bytes]], body: bytes, result: ProbeResult,
    source: str | None = None,
) -> tuple[H3Client, Deferred[IResponse]]:  # fmt: skip
    """Send one request; the Deferred fires with the response head. ``result`` gets the
    handshake's time as its connect time (the ``connect`` phase, as quic-go's trace has it)."""
    client = H3Client(ctx, hop, configuration(cfg, server_name, timeout), ip, port,
                      MAX_HEADER_BYTES, source)  # fmt: skip

    def handshake(passthrough: Any) -> Any:
        result.connect_duration = client.handshake_seconds
        return passthrough

    return client, client.request(head, body).addBoth(handshake)
