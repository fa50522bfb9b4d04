"""The tcp prober: connect, then optionally TLS and a scripted query/response exchange.

Semantics follow blackbox_exporter's tcp prober (0.23, plus the keys of 0.28):
``query_response`` steps run in order; ``expect`` reads lines (split on ``\\n``, a trailing
``\\r`` dropped) until one matches the (unanchored) pattern, failing at EOF, and ``labels`` then
export what it matched as ``probe_expect_info``; ``expect_bytes`` compares the next bytes
exactly; ``send`` writes the line plus ``\\n``, with ``${1}``-style references to the last match
expanded; ``starttls`` upgrades the connection. A plain connect check never builds a
transport: see ``probes.connect``. The unix prober runs the same conversation (``converse``).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import probes
from netprobe_exporter.addresses import parse_host_port
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink
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
from netprobe_exporter.probes import packets as packets_
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import (
    ADDRESSING,
    HANDSHAKE,
    RESOLVING,
    ConnectInfo,
    adopt,
    connect,
    engine_of,
    resolve,
)
from netprobe_exporter.probes.packets import DEFAULT_PACKET_INTERVAL, PACKET_OPTIONS, Burst, Packets
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
    REGEX,
    STRING,
    TEXT,
    Check,
    ListOf,
    Nested,
    Opt,
    Reading,
    Scalar,
    Section,
    at_most_one,
    require,
)

if TYPE_CHECKING:
    import yaml

    from netprobe_exporter.yamlcheck import Checker

MAX_LINE = 64 * 1024
#: unread data we hold for a conversation before calling the peer a flood
MAX_BUFFERED = 1024 * 1024
#: unread bytes (each line counts its newline) or lines at which we stop reading the socket
#: until the probe has caught up: TCP flow control holds back a peer that pours out lines
PAUSE_BYTES = 256 * 1024
PAUSE_LINES = 16 * 1024
#: lines an ``expect`` step looks at per reactor turn, so timers (the probe's own timeout)
#: and other connections get their turn however fast a peer sends
LINES_PER_TURN = 1024
#: the longest ``expect_bytes``: what the conversation holds unpaused, so the bytes can come
MAX_EXPECT_BYTES = MAX_LINE
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Label:
    """A ``probe_expect_info`` label: ``value`` may hold ``${1}``-style references."""

    name: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class QueryResponse:
    expect: re.Pattern[str] | None = None
    expect_bytes: bytes = b""
    labels: tuple[Label, ...] = ()
    send: str | None = None
    starttls: bool = False


@dataclass(frozen=True, slots=True)
class TCPProbe(Options):
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    query_response: tuple[QueryResponse, ...] = ()
    tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    #: connects per probe, one every ``packet_interval`` (``probes.packets``): plain
    #: connect checks only
    packets: int = 1
    packet_interval: float = DEFAULT_PACKET_INTERVAL
    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None

    @property
    def may_speak_tls(self) -> bool:
        return self.tls or any(q.starttls for q in self.query_response)


@dataclass(slots=True)
class TCPDetails(Details):
    """What a tcp probe showed besides the common core."""

    #: an ``expect`` pattern decided the failure
    failed_due_to_regex: bool = False
    #: an ``expect_bytes`` comparison decided the failure
    failed_due_to_bytes: bool = False
    #: the connection (and a ``tls: true`` handshake) was made: blackbox 0.28 writes its
    #: query_response families only then
    dialed: bool = False
    #: the (name, value) labels of each ``expect`` that matched and had ``labels``
    #: (``probe_expect_info``)
    expect_info: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    connect: ConnectInfo = field(default_factory=ConnectInfo)
    tls: TLSInfo | None = None
    #: the burst of a module with ``packets`` > 1
    packets: Packets | None = None
    #: ``probe_failed_due_to_regex`` even when the dial failed (blackbox 0.23's tcp does)
    regex_always: ClassVar[bool] = True

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        if self.packets is not None:  # every connect's handshake RTT, and the counts
            self.packets.observe(out, HANDSHAKE.name)
        else:
            self.connect.observe(out)
        tls_.observe(out, self.tls)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        if self.dialed or self.regex_always:
            out["probe_failed_due_to_regex"] = [({}, 1.0 if self.failed_due_to_regex else 0.0)]
        if self.dialed:
            out["probe_failed_due_to_bytes"] = [({}, 1.0 if self.failed_due_to_bytes else 0.0)]
        if self.expect_info:
            # one sample per label set (blackbox registers the family once per probe)
            unique = dict.fromkeys(self.expect_info)
            out["probe_expect_info"] = [(dict(labels), 1.0) for labels in unique]
        if self.tls is not None:
            tls_.blackbox(out, self.tls)
        if self.packets is not None:
            self.packets.blackbox(out)


FAILED_DUE_TO_REGEX = BlackboxFamily(
    "probe_failed_due_to_regex", "Indicates if probe failed due to regex"
)
FAILED_DUE_TO_BYTES = BlackboxFamily(
    "probe_failed_due_to_bytes", "Indicates if probe failed due to bytes"
)
EXPECT_INFO = BlackboxFamily("probe_expect_info", "Explicit content matched")
#: the /probe families of a query_response conversation (tcp and unix)
CONVERSATION_FAMILIES = (FAILED_DUE_TO_REGEX, FAILED_DUE_TO_BYTES, EXPECT_INFO)


@implementer(IHandshakeListener)
class _Conversation(Protocol):
    """Line-oriented reader/writer whose steps are awaited by the probe coroutine."""

    def __init__(self, reactor: ProbeReactor) -> None:
        self._reactor = reactor
        self._buffer = b""
        self._lines: list[bytes] = []
        self._waiting: Deferred[list[bytes] | None] | None = None
        self._bytes_waiting: tuple[int, Deferred[bytes]] | None = None
        #: at EOF, the last of ``_lines`` was not followed by a newline
        self._unterminated = False
        self._handshake: Deferred[None] | None = None
        self.closed: Failure | None = None
        self.eof = False
        self.timed_out = False
        self.overflow = False
        self._paused = False
        self._buffered = 0
        self._consumed = 0

    def dataReceived(self, data: bytes) -> None:
        if self.overflow or self.timed_out:
            return
        joined = self._buffer + data
        parts = joined.split(b"\n")
        self._buffer = parts.pop()
        # lines are kept as received ("\r" and all), so ``expect_bytes`` sees the exact bytes
        self._lines.extend(parts)
        self._buffered += len(data)
        if len(self._buffer) > MAX_LINE or self._unread() > MAX_BUFFERED:
            # blackbox's line scanner gives up on a line over 64 KiB: a read error, not a
            # regex failure; a peer that floods us past the pause (TLS may have more
            # decrypted data in hand) is cut off the same way
            self.overflow = True
            self._lines.clear()
            self._buffer = b""
            cast(Any, self.transport).abortConnection()
        elif not self._paused and (
            self._unread() > PAUSE_BYTES
            or (len(self._lines) > PAUSE_LINES and self._bytes_waiting is None)
        ):
            self._paused = True
            cast(Any, self.transport).pauseProducing()
        self._wake()

    def _unread(self) -> int:
        return self._buffered - self._consumed

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.eof = True
        self.closed = reason
        if self._buffer:
            self._lines.append(self._buffer)
            self._buffer = b""
            self._unterminated = True
        self._wake()
        if self._handshake is not None and not self._handshake.called:
            d, self._handshake = self._handshake, None
            d.errback(reason)

    def handshakeCompleted(self) -> None:
        if self._handshake is not None and not self._handshake.called:
            d, self._handshake = self._handshake, None
            d.callback(None)

    def _take(self) -> list[bytes] | None:
        """Up to ``LINES_PER_TURN`` lines, None when there are none or the probe timed out."""
        if self.timed_out or not self._lines:
            return None
        lines = self._lines[:LINES_PER_TURN]
        del self._lines[:LINES_PER_TURN]
        self._consumed += sum(len(line) + 1 for line in lines)
        self._maybe_resume()
        return lines

    def _maybe_resume(self) -> None:
        if self._paused and self._unread() <= PAUSE_BYTES // 2 and not self._lines:
            self._paused = False
            if not self.eof and self.transport is not None:
                cast(Any, self.transport).resumeProducing()

    def _take_bytes(self, n: int) -> bytes:
        """The next ``n`` unread bytes (fewer at the end), the rest kept as lines."""
        raw = b"\n".join(self._lines)
        if self._lines and not (self.eof and self._unterminated):
            raw += b"\n"
        raw += self._buffer
        got, rest = raw[:n], raw[n:]
        parts = rest.split(b"\n")
        tail = parts.pop()
        self._lines, self._buffer = parts, b""
        if self.eof:
            self._unterminated = bool(tail)
            if tail:
                self._lines.append(tail)
        else:
            self._buffer = tail
        self._consumed += len(got)
        self._maybe_resume()
        return got

    def _wake(self) -> None:
        if self._waiting is not None and (self._lines or self.eof or self.timed_out):
            d, self._waiting = self._waiting, None
            d.callback(self._take())
        if self._bytes_waiting is not None:
            n, bd = self._bytes_waiting
            if self._unread() >= n or self.eof or self.timed_out:
                self._bytes_waiting = None
                bd.callback(b"" if self.timed_out or self.overflow else self._take_bytes(n))

    def read_bytes(self, n: int) -> Deferred[bytes]:
        """Fire with the next ``n`` bytes once they are here; fewer at the end, none at a
        timeout. ``n`` is at most ``MAX_EXPECT_BYTES``, below the pause: they can come."""
        if self.timed_out or self.overflow:
            return defer.succeed(b"")
        if self._unread() >= n or self.eof:
            return defer.succeed(self._take_bytes(n))
        d: Deferred[bytes] = Deferred()
        self._bytes_waiting = (n, d)
        if self._paused and self.transport is not None:  # paused on line count, not bytes
            self._paused = False
            cast(Any, self.transport).resumeProducing()
        return d

    def read_lines(self) -> Deferred[list[bytes] | None]:
        """Fire with the next lines received (waiting for one), None at the end or timeout.

        Lines come in batches of at most ``LINES_PER_TURN``, and a batch already in hand is
        handed over on the next reactor turn: a peer pouring out short lines would otherwise
        keep the reactor on our bookkeeping, the probe's timeout and everything else waiting.
        """
        if self.timed_out or (self.eof and not self._lines):
            return defer.succeed(None)
        if not self._lines:
            self._waiting = Deferred()
            return self._waiting
        d: Deferred[list[bytes] | None] = Deferred(lambda _: call.cancel())
        call = self._reactor.callLater(0, self._hand_over, d)
        return d

    def _hand_over(self, d: Deferred[list[bytes] | None]) -> None:
        if self._lines or self.eof or self.timed_out:
            d.callback(self._take())
        else:  # an overflow dropped what there was; its connectionLost will wake us
            self._waiting = d

    def unread(self, lines: list[bytes]) -> None:
        """Put back lines a step did not use, for the next step."""
        self._lines[:0] = lines
        self._consumed -= sum(len(line) + 1 for line in lines)

    def wait_handshake(self) -> Deferred[None]:
        self._handshake = Deferred()
        return self._handshake


_GO_REF = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


def expand(template: str, match: re.Match[str] | None) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = m.group(1) or m.group(2)
        if match is None:
            return ""
        try:
            value = match.group(int(ref)) if ref.isdigit() else match.group(ref)
        except (IndexError, re.error):
            return ""
        return value or ""

    return _GO_REF.sub(sub, template)


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Probe ``address`` (``host:port``) within ``timeout`` seconds."""
    opts = options_of(module, TCPProbe)
    if not (opts.tls or opts.query_response or ctx.debug or ctx.policy or opts.packets > 1):
        try:
            hp = parse_host_port(address)
        except ValueError:
            pass
        else:
            want = 6 if opts.preferred_ip_protocol == "ip6" else 4
            if hp.ip_version and (hp.ip_version == want or opts.ip_protocol_fallback):
                return _connect_only(ctx, hp.host, hp.port, opts, timeout)
    return run_probe(
        ctx, lambda result, started: _run(ctx, address, opts, timeout, started, result)
    )


def _connect_only(
    ctx: ProbeContext, ip: str, port: int, opts: TCPProbe, timeout: float
) -> Deferred[ProbeResult]:
    """The hot path of continuous mode: an IP literal, a bare connect, no coroutine machinery.

    Same result as the general path (which ``test_tcp_probe`` checks both of), at less CPU.
    """
    clock = ctx.clock.monotonic
    started = clock()
    result = ctx.new_result()
    details = result.details = TCPDetails()
    result.resolve_duration = 0.0
    result.ip = ip

    def done(sock: socket.socket | None) -> ProbeResult:
        if sock is not None:
            sock.close()
            details.dialed = True
            result.success, result.result = True, "success"
        result.duration = clock() - started
        return result

    connecting = connect(ctx, ip, port, opts.source_ip_address, timeout, result, details.connect)
    return connecting.addCallback(done)


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: TCPProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    details = result.details = TCPDetails()
    try:
        hp = parse_host_port(address)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    unfit = packets_.fit_error(opts.packets, opts.packet_interval, timeout, packets_.PROBE_TIMEOUT)
    if unfit is not None:
        result.fail("error", f"tcp: {unfit}")
        return
    ip = await resolve(
        ctx, hp.host, hp.ip_version, opts.preferred_ip_protocol, opts.ip_protocol_fallback,
        timeout, result, dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    if ip is None:
        return
    creator = None
    if opts.may_speak_tls:
        creator = creator_or_fail(opts.tls_config, hp.host, result)
        if creator is None:
            return
    remaining = timeout - (ctx.clock.monotonic() - started)
    if opts.packets > 1:
        await _connects(ctx, ip, hp.port, opts, remaining, details, result)
        return
    sock = await connect(
        ctx, ip, hp.port, opts.source_ip_address, remaining, result, details.connect
    )
    if sock is None:
        return
    if not opts.tls and not opts.query_response:
        sock.close()
        details.dialed = True
        result.success, result.result = True, "success"
        return
    remaining = timeout - (ctx.clock.monotonic() - started)
    await converse(ctx, sock, creator, opts, remaining, details, result)


async def _connects(
    ctx: ProbeContext, ip: str, port: int, opts: TCPProbe, remaining: float,
    details: TCPDetails, result: ProbeResult,
) -> None:  # fmt: skip
    """``opts.packets`` connects, one every ``packet_interval``, within ``remaining``.

    A connect is a packet received when the handshake completed without the kernel
    retransmitting (the first SYN and its SYN-ACK both arrived); its RTT is the kernel's
    handshake RTT (the connect time where ``TCP_INFO`` is missing). Refused, unreachable and
    unanswered connects, and those that needed a retransmitted SYN, are lost packets.
    """
    info = details.connect
    failures: list[tuple[str, str]] = []
    #: connect time of the first connect ("any") and of the first without retransmission
    first: dict[str, float] = {}

    def send(i: int) -> Deferred[float | None]:
        d = connect(ctx, ip, port, opts.source_ip_address, remaining + 1.0, result, info)
        return d.addCallback(connected)  # the Burst cancels it at the deadline

    def connected(sock: socket.socket | None) -> float | None:
        # connect() filled these in for this attempt just before firing: read them now
        if sock is None:
            failures.append((result.result, result.detail))
            return None
        sock.close()
        details.dialed = True
        took = result.connect_duration or 0.0
        retransmits = info.retransmits or 0
        first.setdefault("any", took)
        if retransmits:
            result.note("Connected after retransmitting", "debug", retransmits=retransmits)
            return None
        first.setdefault("clean", took)
        return info.handshake_rtt if info.handshake_rtt is not None else took

    result.note("Dialing TCP", address=ip, port=port, packets=opts.packets,
                interval_seconds=opts.packet_interval)  # fmt: skip
    burst = Burst(
        ctx.reactor, opts.packets, opts.packet_interval, remaining, send,
        drain=engine_of(ctx).doRead,
    )  # fmt: skip
    got = details.packets = await burst.done
    result.note("Connects", sent=got.sent, received=got.received)
    # one connect time per probe (the core histogram's): the first clean one's, else the first
    result.connect_duration = first.get("clean", first.get("any"))
    if details.dialed:
        result.success, result.result, result.detail = True, "success", ""
    elif failures:
        result.fail(*failures[-1])
    else:
        result.fail("timeout", f"connect: none of {got.sent} connects completed in time")


class Conversing(TypingProtocol):
    """The options a query_response conversation reads (tcp's and unix's)."""

    @property
    def query_response(self) -> tuple[QueryResponse, ...]: ...
    @property
    def tls(self) -> bool: ...
    @property
    def tls_config(self) -> TLSConfig: ...


async def converse(
    ctx: ProbeContext,
    sock: socket.socket,
    creator: Any,
    opts: Conversing,
    remaining: float,
    details: TCPDetails,
    result: ProbeResult,
) -> None:
    """Run ``opts``' TLS handshake and query_response steps on the connected ``sock``."""
    proto = _Conversation(ctx.reactor)
    factory: Any = Factory.forProtocol(lambda: proto)
    handshake = None
    if opts.tls:
        assert creator is not None
        factory = TLSMemoryBIOFactory(creator, True, factory)
        handshake = proto.wait_handshake()
    adopt(ctx, sock, factory)
    timer = ctx.reactor.callLater(max(remaining, 0.0), _abort, proto)
    insecure = opts.tls_config.insecure_skip_verify
    try:
        if handshake is not None:
            await _tls_done(handshake, proto, insecure, details, result)
        details.dialed = True
        for i, step in enumerate(opts.query_response):
            result.note("Processing query response entry", entry_number=i)
            await _step(step, proto, creator, insecure, details, result)
        result.success, result.result = True, "success"
    except ProbeFailure as exc:
        if proto.timed_out:
            result.fail("timeout", f"timed out: {exc}")
        else:
            result.fail(exc.result, str(exc))
    finally:
        if timer.active():
            timer.cancel()
        if proto.transport is not None and not proto.eof:
            # A polite close after a good plain conversation. TLS would wait for the peer's
            # close_notify with no deadline, and a failed or stuck peer deserves no wait:
            # those are reset, so no socket outlives its probe.
            transport = cast(Any, proto.transport)
            if result.success and details.tls is None:
                transport.loseConnection()
            else:
                transport.abortConnection()


def _abort(proto: _Conversation) -> None:
    proto.timed_out = True
    if proto.transport is not None:
        cast(Any, proto.transport).abortConnection()


async def _tls_done(
    handshake: Deferred[None],
    proto: _Conversation,
    insecure: bool,
    details: TCPDetails,
    result: ProbeResult,
) -> None:
    try:
        await handshake
    except Exception:
        reason = proto.closed.getErrorMessage() if proto.closed is not None else "closed"
        raise ProbeFailure("tls_error", f"TLS handshake failed: {reason}") from None
    conn = tls_connection(proto.transport)
    if conn is not None:
        details.tls = handshake_info(conn, verified=not insecure)
    result.note("TLS Handshake (client) succeeded.")


async def _step(
    step: QueryResponse,
    proto: _Conversation,
    creator: Any,
    insecure: bool,
    details: TCPDetails,
    result: ProbeResult,
) -> None:
    match: re.Match[str] | None = None
    if step.expect is not None:
        while match is None:
            batch = await proto.read_lines()
            if batch is None:
                if proto.overflow:
                    raise ProbeFailure(
                        "protocol_error", "error reading from connection: line too long"
                    )
                if proto.timed_out or (proto.closed is not None and not _clean_close(proto.closed)):
                    raise ProbeFailure("error", "error reading from connection")
                details.failed_due_to_regex = True
                raise ProbeFailure(
                    "protocol_error", f"regexp {step.expect.pattern!r} did not match"
                )
            for i, raw in enumerate(batch):
                line = raw.removesuffix(b"\r").decode("utf-8", "replace")
                result.note("Read line", "debug", line=line)
                match = step.expect.search(line)
                if match is not None:
                    result.note("Regexp matched", regexp=step.expect.pattern, line=line)
                    details.failed_due_to_regex = False
                    proto.unread(batch[i + 1 :])
                    break
        if step.labels:
            details.expect_info.append(
                tuple((lb.name, expand(lb.value, match)) for lb in step.labels)
            )
    if step.expect_bytes:
        await _expect_bytes(step.expect_bytes, proto, details, result)
    if step.send:
        text = expand(step.send, match)
        result.note("Sending line", "debug", line=text)
        assert proto.transport is not None
        proto.transport.write(text.encode("utf-8") + b"\n")
    if step.starttls:
        handshake = proto.wait_handshake()
        assert proto.transport is not None
        cast(Any, proto.transport).startTLS(creator, False)  # client side of an adopted connection
        await _tls_done(handshake, proto, insecure, details, result)


async def _expect_bytes(
    want: bytes, proto: _Conversation, details: TCPDetails, result: ProbeResult
) -> None:
    """The next ``len(want)`` bytes must be ``want``: fewer (the peer closed) is a read
    failure, other bytes a ``probe_failed_due_to_bytes`` one, as blackbox counts them."""
    got = await proto.read_bytes(len(want))
    result.note("Read bytes", "debug", bytes=_shown(got))
    if proto.timed_out:
        raise ProbeFailure("error", "error reading from connection")
    if len(got) < len(want):
        raise ProbeFailure(
            "protocol_error", f"read {len(got)} bytes, fewer than the {len(want)} expected"
        )
    if got != want:
        details.failed_due_to_bytes = True
        raise ProbeFailure("protocol_error", f"bytes did not match: expected {_shown(want)}")
    details.failed_due_to_bytes = False
    result.note("Bytes matched", expected=_shown(want))


def _shown(data: bytes) -> str:
    """Bytes for a log line: text where they are printable ASCII, escapes elsewhere."""
    return repr(data)[2:-1]


def _clean_close(reason: Failure) -> bool:
    from twisted.internet.error import ConnectionDone

    return bool(reason.check(ConnectionDone)) and not reason.check(SSL.Error)


def _label_name(r: Reading) -> None:
    name = r.values.get("name")
    if isinstance(name, str) and (not _LABEL_NAME.match(name) or name.startswith("__")):
        r.error("name", f'"{name}" is not a valid label name')
        r.values.pop("name")


LABEL = Section(
    Label(),
    (
        require("name", "a label needs a name", drop=True),
        Opt("name", STRING),
        Opt("value", TEXT),
        Check(_label_name),
    ),
)


def _expect_bytes_kind(c: Checker, node: yaml.Node, path: str) -> bytes | None:
    """The string's UTF-8 bytes (what Go's ``[]byte(string)`` gives), bounded in length."""
    text = c.text(node, path)
    if text is None:
        return None
    data = text.encode("utf-8")
    if len(data) > MAX_EXPECT_BYTES:
        c.error(node, path, f"is {len(data)} bytes, more than the {MAX_EXPECT_BYTES} allowed")
        return None
    return data


def _labels_checked(r: Reading) -> None:
    labels = r.values.get("labels")
    if not isinstance(labels, tuple) or not labels:
        return
    names = [lb.name for lb in labels if isinstance(lb, Label)]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        r.error("labels", f'label "{dup}" is given twice')
        r.values.pop("labels")
    elif "expect" not in r.nodes:
        r.c.warn(r.nodes["labels"], r.at("labels"), "labels take effect only with expect")


QUERY_RESPONSE = Section(
    QueryResponse(),
    (
        at_most_one("expect", "expect_bytes"),
        Opt("expect", REGEX),
        Opt("expect_bytes", Scalar(_expect_bytes_kind, lambda b: b.decode("utf-8"))),
        Opt("labels", ListOf(Nested(LABEL))),
        Opt("send", TEXT),
        Opt("starttls", BOOL),
        Check(_labels_checked),
    ),
)


def _packets_plain(r: Reading) -> None:
    """Several packets are several connects: a conversation or TLS is not repeated."""
    packets = r.values.get("packets")
    if (
        isinstance(packets, int)
        and packets > 1
        and (r.values.get("tls") or r.values.get("query_response"))
    ):
        r.error("packets", "packets > 1 applies to a plain connect check: not with tls or "
                "query_response")  # fmt: skip
        r.values.pop("packets")


OPTIONS = Section(
    TCPProbe(),
    (
        *ADDRESSING,
        *RESOLVING,
        Opt("query_response", ListOf(Nested(QUERY_RESPONSE))),
        Opt("tls", BOOL),
        TLS_OPTION,
        *PACKET_OPTIONS,
        Check(_packets_plain),
    ),
)


def target_host(address: str) -> str:
    return parse_host_port(address).host


def check_address(address: str) -> str | None:
    try:
        parse_host_port(address)
    except ValueError as exc:
        return str(exc)
    return None


def _families(options: Options) -> tuple[Family, ...]:
    assert isinstance(options, TCPProbe)
    if options.packets > 1:
        return (HANDSHAKE, *packets_.FAMILIES)
    return (HANDSHAKE, *tls_.FAMILIES) if options.may_speak_tls else (HANDSHAKE,)


def _check_timeout(options: Options, timeout: float, whose: str) -> str | None:
    assert isinstance(options, TCPProbe)
    return packets_.fit_error(options.packets, options.packet_interval, timeout, whose)


PROBER = probes.register(
    ProberSpec(
        name="tcp",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        families=(HANDSHAKE, *tls_.FAMILIES, *packets_.FAMILIES),
        families_for=_families,
        blackbox_families=(
            *CONVERSATION_FAMILIES,
            *tls_.BLACKBOX_FAMILIES,
            *packets_.BLACKBOX_FAMILIES,
        ),
        check_timeout=_check_timeout,
    )
)
