"""The websocket prober: an RFC 6455 upgrade, then an optional query_response over messages.

As blackbox_exporter's websocket prober (main branch, after 0.28): the target is a ``ws://`` or
``wss://`` URL; the name is resolved as every prober does, the connection made to the address
chosen, TLS for ``wss://`` checked against ``tls_config.server_name`` or the URL's host, and the
upgrade request carries ``http_config``'s ``basic_auth`` or ``authorization`` and the
``headers`` (prometheus/common's values, secrets and files). ``query_response`` steps then run
in order on whole messages, not lines: ``expect`` reads the next data message (text or binary,
fragments joined) and searches it with the pattern, ``send`` sends one text message, with
``${1}``-style references to that match expanded when the step has an ``expect``. Any step that
fails (no match, no message, the peer closing) sets ``probe_websocket_failed_due_to_regex``.

The handshake and framing are ours: the client masks every frame, answers pings, refuses
what a server may not send (masked or reserved-bit frames, unknown opcodes, oversized
control frames), and bounds what it holds with the tcp prober's conversation limits. A
probe that ends with the protocol intact closes with a Close frame and waits briefly for
the server's. The four ``probe_websocket_*`` families are blackbox's; it writes no TLS families
for this prober, so ``/probe`` has none, while continuous mode keeps the TLS series.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import __version__, probes
from netprobe_exporter.addresses import URL, parse_url, redact_url
from netprobe_exporter.model import Details, Module, Options, Sample, Secret, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeFailure,
    ProbeReactor,
    ProbeResult,
    ProberSpec,
    options_of,
    run_probe,
)
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
from netprobe_exporter.probes.http import (
    AUTHORIZATION,
    BASIC_AUTH,
    MAX_RESPONSE_HEADER_BYTES,
    MAX_RESPONSE_HEADER_LINES,
    BasicAuth,
)
from netprobe_exporter.probes.tcp import MAX_BUFFERED, QUERY_RESPONSE, QueryResponse, expand
from netprobe_exporter.probes.tls import (
    TLS_OPTION,
    TLSConfig,
    TLSInfo,
    creator_or_fail,
    handshake_info,
    read_config_file,
    tls_connection,
)
from netprobe_exporter.schema import (
    ANY,
    BOOL,
    PROBE_FILE,
    SECRET_TEXT,
    STRING,
    TEXT,
    Check,
    Inline,
    Kind,
    ListOf,
    Nested,
    Opt,
    Reading,
    Section,
    at_most_one,
)
from netprobe_exporter.yamlcheck import (
    REDACTED,
    Checker,
    is_null,
    is_secret_header,
    key_path,
    show,
)

if TYPE_CHECKING:
    import yaml

#: RFC 6455 section 1.3: what the server appends to our key before hashing it
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: a message (its frames joined) may hold this many bytes, and so may the messages received
#: but not yet read: the tcp prober's bound on unread data (``tcp.MAX_BUFFERED``)
MAX_MESSAGE = MAX_BUFFERED
#: how long a probe waits for the server's Close after its own, within the probe's deadline
CLOSE_WAIT = 1.0
#: frames parsed per ``dataReceived``; the rest waits for the next reactor turn
FRAMES_PER_TURN = 4096

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = {OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}
#: request headers the upgrade sets itself: a module that sets them fails, as gorilla refuses
_OWN_HEADERS = ("upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                "sec-websocket-extensions")  # fmt: skip
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# the frame codec (RFC 6455 section 5)


class FrameError(Exception):
    """The peer broke the framing rules; ``code`` is the Close status that says why."""

    def __init__(self, what: str, code: int = 1002) -> None:
        super().__init__(what)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (section 4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (masking and unmasking are one)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None, fin: bool = True) -> bytes:
    """One frame; a client passes a fresh 4-byte ``mask`` for each (section 5.3)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        header = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


class FrameDecoder:
    """Frames from a server's byte stream, each checked as a client must (section 5.1-5.5).

    Frames are read at an offset and the buffer compacted once that passes half of it, so a
    stream of tiny frames costs one copy per buffer, not one per frame.
    """

    def __init__(self, max_payload: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max = max_payload

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next(self) -> Frame | None:
        """The next whole frame, None until one is in; raises FrameError on a bad one."""
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if have < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        if b0 & 0x70:
            raise FrameError("a frame has reserved bits set (no extension was agreed)")
        if opcode not in _OPCODES:
            raise FrameError(f"unknown frame opcode {opcode}")
        if b1 & 0x80:
            raise FrameError("the server sent a masked frame")
        size, at = b1 & 0x7F, 2
        if size == 126:
            if have < 4:
                return None
            (size,), at = struct.unpack_from("!H", buf, pos + 2), 4
        elif size == 127:
            if have < 10:
                return None
            (size,), at = struct.unpack_from("!Q", buf, pos + 2), 10
            if size >> 63:
                raise FrameError("a frame length has its top bit set")
        if opcode >= OP_CLOSE and (size > 125 or not fin):
            raise FrameError("a control frame is fragmented or longer than 125 bytes")
        if size > self._max:
            raise FrameError(f"a frame of {size} bytes is over the {self._max} allowed", 1009)
        if have < at + size:
            return None
        payload = bytes(buf[pos + at : pos + at + size])
        self._pos = pos + at + size
        if self._pos * 2 > len(buf):
            del buf[: self._pos]
            self._pos = 0
        return Frame(fin, opcode, payload)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """A Close frame's status code (1005: none given) and reason."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


# the upgrade (RFC 6455 section 4)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    #: header names lowercased, each with its values in order
    headers: dict[str, list[str]]

    def tokens(self, name: str) -> set[str]:
        """A comma-separated header's tokens, lowercased (every line of it)."""
        return {
            t.strip().lower() for v in self.headers.get(name, []) for t in v.split(",") if t.strip()
        }


def parse_response_head(head: bytes) -> Response:
    """The status line and headers up to the blank line; raises ValueError if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) > MAX_RESPONSE_HEADER_LINES:
        raise ValueError(f"more than {MAX_RESPONSE_HEADER_LINES} header lines")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not re.fullmatch(r"\d{3}", parts[1]):
        raise ValueError("malformed HTTP status line")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise ValueError("malformed HTTP header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    return Response(int(parts[1]), headers)


def upgraded(response: Response, key: str) -> str | None:
    """Why ``response`` is not the upgrade asked for with ``key``, or None when it is."""
    if response.status != 101:
        return f"status {response.status}, not 101"
    if "websocket" not in response.tokens("upgrade"):
        return "no Upgrade: websocket"
    if "upgrade" not in response.tokens("connection"):
        return "no Connection: upgrade"
    got = response.headers.get("sec-websocket-accept", [""])[0]
    if got != accept_key(key):
        return "Sec-WebSocket-Accept does not match the key sent"
    return None


# options


@dataclass(frozen=True, slots=True)
class Header:
    """A prometheus/common header: values, secrets and files (read when a probe runs)."""

    values: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HTTPClientConfig:
    """The parts of ``http_config`` the upgrade uses: auth and TLS (blackbox's too)."""

    basic_auth: BasicAuth | None = None
    auth_type: str = "Bearer"
    credentials: Secret | None = None
    credentials_file: str | None = None
    tls_config: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True, slots=True)
class WebsocketProbe(Options):
    http_config: HTTPClientConfig = field(default_factory=HTTPClientConfig)
    headers: tuple[tuple[str, Header], ...] = ()
    query_response: tuple[QueryResponse, ...] = ()
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    dns_server: str | None = None
    dns_timeout: float | None = None


# the target


@dataclass(frozen=True, slots=True)
class Target:
    secure: bool
    url: URL
    #: the target as given (ws:// or wss://)
    text: str

    @property
    def host_header(self) -> str:
        """``host[:port]`` as the URL has it (Go sends ``u.Host``, a default port included)."""
        netloc = re.split(r"[/?#]", self.url.text.split("://", 1)[1], maxsplit=1)[0]
        return netloc.rsplit("@", 1)[-1]


def parse_target(address: str) -> Target:
    """A ``ws://`` or ``wss://`` URL; ValueError says what is wrong (never a password)."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss"):
        raise ValueError(f"{redact_url(address)!r}: a websocket target is a ws:// or wss:// URL")
    secure = scheme.lower() == "wss"
    http_scheme = "https" if secure else "http"
    try:
        url = parse_url(f"{http_scheme}://{rest}")
    except ValueError as exc:
        raise ValueError(str(exc).replace(f"{http_scheme}://", f"{scheme}://", 1)) from None
    return Target(secure, url, address)


def target_host(address: str) -> str:
    return parse_target(address).url.host


def check_address(address: str) -> str | None:
    try:
        parse_target(address)
    except ValueError as exc:
        return str(exc)
    return None


# details and families


PHASES = ("processing", "transfer")
DURATION = Family(
    "netprobe_websocket_duration_seconds", "histogram",
    "Websocket probe time by phase: processing is TLS and the upgrade, transfer the "
    "query_response messages; probes that reached the phase's end.",
    order=106, label="phase", label_values=PHASES,
)  # fmt: skip
STATUS = Family(
    "netprobe_websocket_status_code", "gauge",
    "HTTP status code of the last upgrade response (101: upgraded, 0: none).", order=137,
)  # fmt: skip
BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_websocket_status_code", "Response HTTP status code"),
    BlackboxFamily("probe_websocket_connection_upgraded",
                   "Indicates if the websocket connection was successfully upgraded"),
    BlackboxFamily("probe_websocket_failed_due_to_regex", "Indicates if probe failed due to regex"),
    BlackboxFamily("probe_websocket_duration_seconds", "Duration of websocket request by phase"),
)  # fmt: skip


@dataclass(slots=True)
class WebsocketPhases:
    """blackbox's phases, each set only once reached: ``resolve`` after a resolution that
    worked, ``connect`` after a connect that did, ``processing`` (TLS and the upgrade) after
    any dial, ``transfer`` after a query_response."""

    resolve: float | None = None
    connect: float | None = None
    processing: float | None = None
    transfer: float | None = None

    def items(self) -> tuple[tuple[str, float], ...]:
        every = (("resolve", self.resolve), ("connect", self.connect),
                 ("processing", self.processing), ("transfer", self.transfer))  # fmt: skip
        return tuple((p, v) for p, v in every if v is not None)


@dataclass(slots=True)
class WebsocketDetails(Details):
    """What a websocket probe showed: blackbox's four families and the kernel's connect view."""

    status_code: int = 0
    upgraded: bool = False
    failed_due_to_regex: bool = False
    phases: WebsocketPhases = field(default_factory=WebsocketPhases)
    connect: ConnectInfo = field(default_factory=ConnectInfo)
    tls: TLSInfo | None = None
    #: the conversation ran to its end
    transferred: bool = False

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        self.connect.observe(out)
        tls_.observe(out, self.tls)
        out.gauge(STATUS.name, float(self.status_code))
        if self.upgraded:
            out.histogram(DURATION.name, self.phases.processing or 0.0, 0)
        if self.transferred and self.phases.transfer is not None:
            out.histogram(DURATION.name, self.phases.transfer, 1)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        out["probe_websocket_status_code"] = [({}, float(self.status_code))]
        out["probe_websocket_connection_upgraded"] = [({}, 1.0 if self.upgraded else 0.0)]
        out["probe_websocket_failed_due_to_regex"] = [
            ({}, 1.0 if self.failed_due_to_regex else 0.0)
        ]
        phases = self.phases.items()
        if phases:  # a GaugeVec with no child writes nothing, as blackbox's
            out["probe_websocket_duration_seconds"] = [
                ({"phase": p}, round(v, 9)) for p, v in phases
            ]


# the connection


Message = tuple[int, bytes]


@implementer(IHandshakeListener)
class _Client(Protocol):
    """The upgrade's response, then messages, awaited by the probe coroutine.

    Received messages wait in a queue; past ``MAX_MESSAGE`` unread bytes the transport is
    paused (TCP flow control holds the peer back) until the probe has read them down.
    """

    def __init__(self, reactor: ProbeReactor) -> None:
        self._reactor = reactor
        self._head = bytearray()
        self.response: Response | None = None
        self._frames = FrameDecoder()
        self._fragments: list[bytes] = []
        self._fragment_op = 0
        self._fragment_size = 0
        self._messages: list[Message] = []
        self._queued = 0
        self._paused = False
        self._waiting: Deferred[None] | None = None
        self.error: ProbeFailure | None = None
        #: the peer's Close (code, reason), once received
        self.peer_close: tuple[int, str] | None = None
        self.close_sent = False
        self.eof = False
        self.lost: Failure | None = None
        self.timed_out = False
        self._handshake: Deferred[None] | None = None
        self._pending_call: Any = None
        #: the payload of the latest ping of this batch of frames, answered after it
        self._ping: bytes | None = None

    # Twisted's side

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None or self.timed_out:
            return
        if self.response is None:
            data = self._read_head(data)
            if self.response is None:
                self._wake()
                return
        if self.response.status != 101:  # not upgraded: what follows is no frame
            return
        self._frames.feed(data)
        self._drain_frames()

    def _read_head(self, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_RESPONSE_HEADER_BYTES:
                self._fail(ProbeFailure("protocol_error", "upgrade response headers too long"))
            return b""
        if end > MAX_RESPONSE_HEADER_BYTES:
            self._fail(ProbeFailure("protocol_error", "upgrade response headers too long"))
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        try:
            self.response = parse_response_head(head)
        except ValueError as exc:
            self._fail(ProbeFailure("protocol_error", f"upgrade response: {exc}"))
            return b""
        return rest

    def _drain_frames(self) -> None:
        self._ping = None
        for _ in range(FRAMES_PER_TURN):
            if self.error is not None or self.peer_close is not None:
                break
            try:
                frame = self._frames.next()
            except FrameError as exc:
                self._protocol_error(exc)
                break
            if frame is None:
                break
            self._frame(frame)
        else:  # more frames in hand: the rest on the next turn, so timers get theirs
            if self._pending_call is None:
                self._pending_call = self._reactor.callLater(0, self._resume_frames)
        if self._ping is not None:  # the latest ping only (section 5.5.3): pongs stay bounded
            self.send(OP_PONG, self._ping)
            self._ping = None
        if not self._paused and self._queued > MAX_MESSAGE:
            self._paused = True
            cast(Any, self.transport).pauseProducing()
        self._wake()

    def _resume_frames(self) -> None:
        self._pending_call = None
        self._drain_frames()

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op == OP_PING:
            self._ping = frame.payload
        elif op == OP_PONG:
            pass
        elif op == OP_CLOSE:
            self.peer_close = parse_close(frame.payload)
            if not self.close_sent:  # echo it, as section 5.5.1 asks
                code = self.peer_close[0]
                self.send_close(1000 if code in (1005, 1006) else code)
        elif op == OP_CONTINUATION and not self._fragments:
            self._protocol_error(FrameError("a continuation frame with no message to continue"))
        elif op != OP_CONTINUATION and self._fragments:
            self._protocol_error(FrameError("a new message inside a fragmented one"))
        else:
            self._data(frame)

    def _data(self, frame: Frame) -> None:
        if frame.opcode != OP_CONTINUATION:
            self._fragment_op = frame.opcode
        self._fragment_size += len(frame.payload)
        if self._fragment_size > MAX_MESSAGE:
            self._protocol_error(
                FrameError(f"a message over the {MAX_MESSAGE} bytes allowed", 1009)
            )
            return
        self._fragments.append(frame.payload)
        if frame.fin:
            message = b"".join(self._fragments)
            self._fragments, self._fragment_size = [], 0
            self._messages.append((self._fragment_op, message))
            self._queued += len(message)

    def _protocol_error(self, exc: FrameError) -> None:
        self.send_close(exc.code)
        self._fail(ProbeFailure("protocol_error", f"websocket: {exc}"))

    def _fail(self, failure: ProbeFailure) -> None:
        if self.error is None:
            self.error = failure
        self._wake()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.eof = True
        self.lost = reason
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.cancel()
        self._pending_call = None
        if self._handshake is not None and not self._handshake.called:
            d, self._handshake = self._handshake, None
            d.errback(reason)
        self._wake()

    def handshakeCompleted(self) -> None:
        if self._handshake is not None and not self._handshake.called:
            d, self._handshake = self._handshake, None
            d.callback(None)

    def wait_handshake(self) -> Deferred[None]:
        self._handshake = Deferred()
        return self._handshake

    # the probe's side

    def _wake(self) -> None:
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(None)

    def _wait(self) -> Deferred[None]:
        self._waiting = Deferred()
        return self._waiting

    async def read_response(self) -> Response:
        """The upgrade's response head; ProbeFailure if none comes."""
        while self.response is None:
            self._check_alive("before the upgrade response")
            await self._wait()
        return self.response

    async def read_message(self) -> Message:
        """The next data message; ProbeFailure when the peer closes, breaks the rules, or
        the probe's time is up first."""
        while not self._messages:
            if self.peer_close is not None and self.error is None:
                code, reason = self.peer_close
                said = f": {reason}" if reason else ""
                raise ProbeFailure(
                    "protocol_error", f"websocket: closed by the server ({code}{said})"
                )
            self._check_alive("before a message")
            await self._wait()
        message = self._messages.pop(0)
        self._queued -= len(message[1])
        if self._paused and self._queued <= MAX_MESSAGE // 2:
            self._paused = False
            if not self.eof and self.transport is not None:
                cast(Any, self.transport).resumeProducing()
        return message

    def _check_alive(self, when: str) -> None:
        if self.error is not None:
            raise self.error
        if self.timed_out:
            raise ProbeFailure("timeout", f"timed out {when}")
        if self.eof:
            raise ProbeFailure("protocol_error", f"connection closed {when}")

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.eof and not self.close_sent:
            self.transport.write(encode_frame(opcode, payload, os.urandom(4)))

    def send_close(self, code: int) -> None:
        if not self.close_sent:
            self.send(OP_CLOSE, close_payload(code))
            self.close_sent = True

    async def wait_closed(self, limit: float) -> None:
        """Until the server's Close arrived, the connection ended, or ``limit`` seconds."""
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            self._wake()

        call = self._reactor.callLater(limit, expire)
        try:
            while not (self.peer_close or self.eof or self.timed_out or expired):
                await self._wait()
        finally:
            if call.active():
                call.cancel()

    def abort(self) -> None:
        self.timed_out = True
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()
        self._wake()


# the probe


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Probe the websocket URL ``address`` within ``timeout`` seconds."""
    opts = options_of(module, WebsocketProbe)
    return run_probe(
        ctx, lambda result, started: _run(ctx, address, opts, timeout, started, result)
    )


def _file_text(path: str, key: str, result: ProbeResult) -> str | None:
    """A file's text, stripped; None (noted, as blackbox logs it and goes on) if unreadable."""
    try:
        return read_config_file(path, key).decode("utf-8", "replace").strip()
    except ValueError as exc:
        result.note("Unable to read file", "error", err=str(exc))
        return None


def canonical(name: str) -> str:
    """Go's ``CanonicalHeaderKey``: each dash-separated word capitalised (what gorilla sends)."""
    if not _TOKEN.match(name):
        return name
    return "-".join(w[:1].upper() + w[1:].lower() for w in name.split("-"))


def request_headers(
    opts: WebsocketProbe, target: Target, result: ProbeResult
) -> list[tuple[str, str]]:
    """The module's headers, as blackbox builds them: Authorization from ``http_config``
    (Basic, else the scheme's credentials), then each header's values, secrets and files, all
    kept (an Authorization in ``headers`` is sent beside ``http_config``'s); a URL's userinfo
    is Basic auth only when neither sets one, as gorilla's dialer lets them replace it."""
    out: list[tuple[str, str]] = []
    cfg = opts.http_config
    if cfg.basic_auth is not None:
        auth = cfg.basic_auth
        password = auth.password.reveal() if auth.password is not None else ""
        if auth.password_file:
            text = _file_text(auth.password_file, "basic_auth.password_file", result)
            password = password if text is None else text
        token = base64.b64encode(f"{auth.username}:{password}".encode()).decode()
        out.append(("Authorization", f"Basic {token}"))
    elif cfg.credentials is not None or cfg.credentials_file:
        cred = cfg.credentials.reveal() if cfg.credentials is not None else ""
        if cfg.credentials_file:
            text = _file_text(cfg.credentials_file, "credentials_file", result)
            cred = cred if text is None else text
        if cred:
            out.append(("Authorization", f"{cfg.auth_type} {cred}"))
    for name, header in opts.headers:
        values = [*header.values, *(s.reveal() for s in header.secrets)]
        for path in header.files:
            text = _file_text(path, f"headers.{name}.files", result)
            if text is not None:
                values.append(text)
        out.extend((canonical(name), v) for v in values)
    if target.url.username is not None and not any(n == "Authorization" for n, _ in out):
        token = base64.b64encode(
            f"{target.url.username}:{target.url.password or ''}".encode()
        ).decode()
        out.insert(0, ("Authorization", f"Basic {token}"))
    return out


def upgrade_request(target: Target, key: str, headers: list[tuple[str, str]]) -> bytes:
    """The GET that asks for the upgrade (section 4.1); a ``Host`` header replaces the URL's."""
    hosts = [value for name, value in headers if name.lower() == "host"]
    host = hosts[0] if hosts else target.host_header  # gorilla takes the first
    rest = [(name, value) for name, value in headers if name.lower() != "host"]
    lines = [
        f"GET {target.url.path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if not any(n.lower() == "user-agent" for n, _ in rest):
        lines.append(f"User-Agent: netprobe-exporter/{__version__}")
    lines.extend(f"{n}: {v}" for n, v in rest)
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ProbeFailure(
                "error", f"header {line.split(':', 1)[0]}: a value holds a line break"
            )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: WebsocketProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    details = result.details = WebsocketDetails()
    clock = ctx.clock.monotonic
    try:
        target = parse_target(address)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    own = next((n for n, _ in opts.headers if n.lower() in _OWN_HEADERS), None)
    if own is not None:
        result.fail("error", f"websocket: duplicate header not allowed: {own}")
        return
    url = target.url
    cfg = opts.http_config.tls_config
    creator = None
    if target.secure or cfg != TLSConfig():  # blackbox builds the TLS config for ws:// too
        creator = creator_or_fail(cfg, url.host, result)
        if creator is None:
            return
    ip = await resolve(
        ctx, url.host, url.ip_version, opts.preferred_ip_protocol, opts.ip_protocol_fallback,
        timeout, result, dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    if ip is None:
        return
    details.phases.resolve = result.resolve_duration or 0.0
    dial_started = clock()
    remaining = timeout - (dial_started - started)
    sock = await connect(ctx, ip, url.port, None, remaining, result, details.connect)
    if sock is None:
        details.phases.processing = clock() - dial_started
        return
    details.phases.connect = result.connect_duration or 0.0
    proto = _Client(ctx.reactor)
    factory: Any = Factory.forProtocol(lambda: proto)
    handshake = None
    if target.secure:
        assert creator is not None
        factory = TLSMemoryBIOFactory(creator, True, factory)
        handshake = proto.wait_handshake()
    adopt(ctx, sock, factory)
    remaining = timeout - (clock() - started)
    timer = ctx.reactor.callLater(max(remaining, 0.0), proto.abort)
    polite = False
    try:
        polite = await _converse(ctx, proto, handshake, target, opts, dial_started, details, result)
        if polite:  # the close handshake (section 7.1.2), the outcome already settled
            proto.send_close(1000)
            await proto.wait_closed(CLOSE_WAIT)
    finally:
        if timer.active():
            timer.cancel()
        if proto.transport is not None and not proto.eof:
            transport = cast(Any, proto.transport)
            if polite and not target.secure:
                transport.loseConnection()
            else:  # TLS would wait for close_notify with no deadline; a broken peer gets none
                transport.abortConnection()


async def _converse(
    ctx: ProbeContext,
    proto: _Client,
    handshake: Deferred[None] | None,
    target: Target,
    opts: WebsocketProbe,
    dial_started: float,
    details: WebsocketDetails,
    result: ProbeResult,
) -> bool:
    """TLS, the upgrade and the steps; True when the protocol is intact (a Close is due)."""
    clock = ctx.clock.monotonic
    connect_took = details.phases.connect or 0.0

    def processing_done() -> None:
        details.phases.processing = max(clock() - dial_started - connect_took, 0.0)

    try:
        if handshake is not None:
            try:
                await handshake
            except Exception:
                why = proto.lost.getErrorMessage() if proto.lost is not None else "closed"
                raise ProbeFailure("tls_error", f"TLS handshake failed: {why}") from None
            conn = tls_connection(proto.transport)
            if conn is not None:
                insecure = opts.http_config.tls_config.insecure_skip_verify
                details.tls = handshake_info(conn, verified=not insecure)
            result.note("TLS Handshake (client) succeeded.")
        key = new_key()
        request = upgrade_request(target, key, request_headers(opts, target, result))
        assert proto.transport is not None
        proto.transport.write(request)
        result.note("Upgrade requested", url=redact_url(target.text))
        response = await proto.read_response()
    except ProbeFailure as exc:
        processing_done()
        result.fail(exc.result, str(exc))
        return False
    processing_done()
    details.status_code = response.status
    refused = upgraded(response, key)
    if refused is not None:
        result.fail("protocol_error", f"websocket: bad handshake ({refused})")
        return False
    details.upgraded = True
    result.note("Connection upgraded", status=response.status)
    if not opts.query_response:
        result.success, result.result = True, "success"
        return True
    t0 = clock()
    try:
        for i, step in enumerate(opts.query_response):
            result.note("Processing query response entry", entry_number=i)
            await _step(step, proto, result)
    except ProbeFailure as exc:
        details.phases.transfer = clock() - t0
        details.failed_due_to_regex = True
        result.fail(exc.result, str(exc))
        return exc.result == "protocol_error" and proto.error is None and not proto.eof
    details.phases.transfer = clock() - t0
    details.transferred = True
    result.success, result.result = True, "success"
    return True


async def _step(step: QueryResponse, proto: _Client, result: ProbeResult) -> None:
    send = step.send or ""
    if step.expect is not None:
        _, raw = await proto.read_message()
        text = raw.decode("utf-8", "replace")
        result.note("Read message", "debug", message=text)
        match = step.expect.search(text)
        if match is None:
            raise ProbeFailure("protocol_error", f"regexp {step.expect.pattern!r} did not match")
        result.note("Regexp matched", regexp=step.expect.pattern, message=text)
        send = expand(send, match)
    if send:
        result.note("Sending message", "debug", message=send)
        proto.send(OP_TEXT, send.encode("utf-8"))


# options' declarations


@dataclass(frozen=True, slots=True)
class HeaderMap(Kind[tuple[tuple[str, Header], ...]]):
    """prometheus/common's ``headers``: name -> {values, secrets, files}; a plain string (as
    blackbox's example.yml writes one) is read as one value."""

    def read(self, c: Checker, node: yaml.Node, path: str) -> tuple[tuple[str, Header], ...] | None:
        import yaml as yaml_

        if is_null(node):
            return ()
        if not isinstance(node, yaml_.MappingNode):
            c.error(node, path, f"must be a mapping of header names, not {show(node, path)}")
            return None
        out: list[tuple[str, Header]] = []
        for knode, vnode in node.value:
            name = str(knode.value) if isinstance(knode, yaml_.ScalarNode) else ""
            at = key_path(path, name)
            if not _TOKEN.match(name):  # not echoed: a pasted "Token s3cret" is no name
                c.error(knode, at, "is not a header name (an HTTP token)")
                continue
            if any(n == name for n, _ in out):
                c.error(knode, at, "is given twice")
                continue
            if isinstance(vnode, yaml_.ScalarNode) and not is_null(vnode):
                text = c.text(vnode, at)
                if text is not None:
                    out.append((name, Header(values=(text,))))
                continue
            header = HEADER.read(c, vnode, at)
            if header is not None:
                out.append((name, header))
        return tuple(out)

    def dump(self, value: tuple[tuple[str, Header], ...]) -> object:
        out: dict[str, object] = {}
        for name, h in value:
            shown: dict[str, object] = {}
            if h.values:
                hide = is_secret_header(name)
                shown["values"] = [REDACTED if hide else v for v in h.values]
            if h.secrets:
                shown["secrets"] = [REDACTED for _ in h.secrets]
            if h.files:
                shown["files"] = list(h.files)
            out[name] = shown
        return out

    def holds_secret(self) -> bool:
        return True


HEADER = Section(
    Header(),
    (
        Opt("values", ListOf(TEXT)),
        Opt("secrets", ListOf(SECRET_TEXT), secret=True),
        Opt("files", ListOf(PROBE_FILE)),
    ),
)

#: http_client_config keys blackbox's websocket prober reads nothing of: accepted, and said so
_IGNORED = ("follow_redirects", "enable_http2", "oauth2", "proxy_url", "no_proxy",
            "proxy_from_environment", "proxy_connect_header", "http_headers")  # fmt: skip


def _ignored_keys(r: Reading) -> None:
    for key in _IGNORED:
        if key in r.nodes:
            r.c.warn(r.nodes[key], r.at(key), "has no effect on a websocket probe")


HTTP_CONFIG = Section(
    HTTPClientConfig(),
    (
        at_most_one("basic_auth", "authorization", "bearer_token", "bearer_token_file"),
        Opt("basic_auth", Nested(BASIC_AUTH)),
        Opt("authorization", Inline(AUTHORIZATION)),
        Opt("bearer_token", SECRET_TEXT, field="credentials", secret=True),
        Opt("bearer_token_file", PROBE_FILE, field="credentials_file", secret=True),
        TLS_OPTION,
        Opt("follow_redirects", BOOL, field=None),
        Opt("enable_http2", BOOL, field=None),
        Opt("oauth2", ANY, field=None, holds_secret=True),
        Opt("proxy_url", STRING, field=None),
        Opt("no_proxy", STRING, field=None),
        Opt("proxy_from_environment", BOOL, field=None),
        Opt("proxy_connect_header", ANY, field=None, holds_secret=True),
        Opt("http_headers", ANY, field=None, holds_secret=True),
        Check(_ignored_keys),
    ),
)


def _steps_checked(r: Reading) -> None:
    steps = r.values.get("query_response")
    if not isinstance(steps, tuple):
        return
    for i, step in enumerate(steps):
        if isinstance(step, QueryResponse) and (step.starttls or step.expect_bytes or step.labels):
            what = "starttls, expect_bytes and labels have no effect on a websocket probe"
            r.c.warn(r.nodes["query_response"], f"{r.at('query_response')}[{i}]", what)


def _own_headers(r: Reading) -> None:
    headers = r.values.get("headers")
    for name, _ in headers if isinstance(headers, tuple) else ():
        if name.lower() in _OWN_HEADERS:  # blackbox loads it and fails every probe: so do we
            r.c.warn(r.nodes["headers"], r.at("headers"),
                     f"{name} is set by the upgrade itself; every probe will fail")  # fmt: skip


OPTIONS = Section(
    WebsocketProbe(),
    (
        Opt("http_config", Nested(HTTP_CONFIG)),
        Opt("headers", HeaderMap()),
        Check(_own_headers),
        Opt("query_response", ListOf(Nested(QUERY_RESPONSE))),
        Check(_steps_checked),
        *IP_PROTOCOL,
        *RESOLVING,
    ),
)


def shown(options: Options, section: dict[str, object]) -> dict[str, object]:
    """``http_config``'s Authorization parts back under ``authorization``."""
    cfg = section.get("http_config")
    if isinstance(cfg, dict):
        kind = cfg.pop("auth_type", "Bearer")
        auth = {k: cfg.pop(k) for k in ("credentials", "credentials_file") if k in cfg}
        if auth:
            cfg["authorization"] = {"type": kind, **auth}
        if not cfg:
            section.pop("http_config")
    return section


PROBER = probes.register(
    ProberSpec(
        name="websocket",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        families=(HANDSHAKE, DURATION, STATUS, *tls_.FAMILIES),
        blackbox_families=BLACKBOX_FAMILIES,
        shown=shown,
    )
)
