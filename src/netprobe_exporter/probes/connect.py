"""Resolution and TCP connect shared by the tcp and http probers.

The connect is a non-blocking socket registered with the reactor as a write descriptor rather
than ``connectTCP``/endpoints: no protocol, factory or transport objects are built for a
connection that may be closed as soon as it opens, which more than halves the CPU per probe. A
conversation that needs a transport (query/response, TLS, HTTP) adopts the connected socket.

Where the clock starts and stops, and why:
- start: immediately before ``connect_ex``, which is the syscall that sends the SYN. Everything
  before it (socket creation, bind) is local work, not network latency.
- stop: the first statement of ``doWrite`` (handshake done, socket writable) or
  ``connectionLost`` (Twisted's delivery of EPOLLERR/EPOLLHUP, e.g. a RST answering the SYN).
  The only error left is the reactor's delay in dispatching the event.
- ``TCP_INFO``'s smoothed RTT, read right after the handshake, is the kernel's own measurement
  and is immune even to that delay; it is reported beside the wall-clock figure.
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter.addresses import parse_dns_server
from netprobe_exporter.durations import format_duration
from netprobe_exporter.probes import (
    Family,
    ProbeContext,
    ProbeReactor,
    ProbeResult,
    SeriesSink,
    engine,
)
from netprobe_exporter.schema import BOOL, IP_ADDRESS, Choice, Opt, Scalar

if TYPE_CHECKING:
    import yaml

    from netprobe_exporter.yamlcheck import Checker

_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_INFO_LEN = 104
_UNREACHABLE = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.EADDRNOTAVAIL,
}


def classify(err: int) -> str:
    """Map a connect errno to a ``netprobe_probes_total`` result."""
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in _UNREACHABLE:
        return "unreachable"
    if err == errno.ETIMEDOUT:
        return "timeout"
    return "error"


def strerror(err: int) -> str:
    return f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"


#: the kernel's handshake RTT, for every prober that connects over TCP (tcp, http, dns)
HANDSHAKE = Family(
    "netprobe_tcp_handshake_rtt_seconds", "histogram",
    "The kernel's smoothed RTT right after the TCP handshake (TCP_INFO), immune to "
    "scheduling delays in the exporter; successful connects only.", order=40,
)  # fmt: skip


@dataclass(slots=True)
class ConnectInfo:
    """What the TCP connect showed besides its duration (a core field): the kernel's view.

    Composed into the details of every prober that connects over TCP (tcp, http, dns), which
    hand it to ``connect`` and feed ``HANDSHAKE`` from it.
    """

    #: the kernel's smoothed RTT right after the handshake (TCP_INFO), when available
    handshake_rtt: float | None = None
    #: segments the kernel retransmitted before the handshake completed (TCP_INFO's
    #: ``total_retrans``: a lost SYN or SYN-ACK), when available
    retransmits: int | None = None

    def observe(self, out: SeriesSink) -> None:
        if self.handshake_rtt is not None:
            out.histogram(HANDSHAKE.name, self.handshake_rtt)


def handshake_rtt(sock: socket.socket) -> float | None:
    """The kernel's smoothed RTT (``tcpi_rtt``) in seconds, or None where unavailable."""
    found = tcp_info(sock)
    return None if found is None else found[0]


def tcp_info(sock: socket.socket) -> tuple[float, int] | None:
    """The kernel's smoothed RTT (``tcpi_rtt``, seconds) and segments retransmitted so far
    (``tcpi_total_retrans``), from one ``TCP_INFO`` read; None where unavailable."""
    if _TCP_INFO is None:
        return None
    try:
        buf = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(buf) < 8 + 16 * 4:
        return None
    fields = struct.unpack_from("8B24I", buf.ljust(_TCP_INFO_LEN, b"\0"))
    # a kernel too old for total_retrans (u32 field 23) pads it with zeros here
    return fields[8 + 15] / 1e6, fields[8 + 23]


async def resolve(
    ctx: ProbeContext,
    host: str,
    ip_version: int,
    preferred: str,
    fallback: bool,
    timeout: float,
    result: ProbeResult,
    dns_server: str | None = None,
    dns_timeout: float | None = None,
) -> str | None:
    """Choose the address to probe, as blackbox does; None (result failed) if there is none.

    An IP literal is its own answer, but still has to be of the preferred protocol unless
    fallback is allowed (blackbox's rule, so ``/probe`` answers agree). A module's
    ``dns_server`` is asked instead of the system's nameservers, within ``dns_timeout``.
    """
    clock = ctx.clock.monotonic
    started = clock()
    result.note("Resolving target address", target=host, ip_protocol=preferred)
    if ip_version:
        want = 6 if preferred == "ip6" else 4
        result.resolve_duration = clock() - started
        if ip_version != want and not fallback:
            result.fail("dns_error", f"resolve: {host}: no suitable address found")
            return None
        ip = host
    else:
        try:
            if dns_server is None:
                ip = await ctx.resolver.resolve(host, preferred, fallback, timeout)
            else:
                ip = await _resolve_via(ctx, host, preferred, fallback, timeout, result,
                                        dns_server, dns_timeout)  # fmt: skip
        except CancelledError:
            raise
        except Exception as exc:
            result.resolve_duration = clock() - started
            result.fail("dns_error", f"resolve: {exc}")
            return None
        result.resolve_duration = clock() - started
    if ctx.policy is not None:
        refused = ctx.policy(host, ip)
        if refused is not None:  # checked on the resolved address: no name can smuggle one in
            result.policy_refused = refused
            result.fail("error", f"refused by probe_policy: {refused}")
            return None
    result.ip = ip
    result.note("Resolved target address", target=host, ip=ip)
    return ip


def _resolve_via(
    ctx: ProbeContext, host: str, preferred: str, fallback: bool, timeout: float,
    result: ProbeResult, dns_server: str, dns_timeout: float | None,
) -> Deferred[str]:  # fmt: skip
    servers, limit = via_dns_server(dns_server, dns_timeout, timeout)
    result.note("Resolving target address with DNS server", dns_server=dns_server)
    return ctx.resolver.resolve(host, preferred, fallback, limit, servers=servers)


def via_dns_server(
    dns_server: str, dns_timeout: float | None, timeout: float
) -> tuple[list[tuple[str, int]], float]:
    """A module's ``dns_server`` as the resolver takes it, and the time a lookup through it
    may take: ``dns_timeout`` (DEFAULT_DNS_TIMEOUT), never more than the probe's."""
    server = parse_dns_server(dns_server)
    limit = min(timeout, DEFAULT_DNS_TIMEOUT if dns_timeout is None else dns_timeout)
    return [(server.host, server.port)], limit


@implementer(IReadDescriptor)
class ConnectEngine:
    """Every in-flight connect of one reactor in one epoll set, seen by the reactor as a reader.

    Registering each socket with the reactor costs a Twisted dispatch (and a DelayedCall for
    its timeout) per probe, more CPU than the connect itself. Here one ``doRead`` handles a
    whole batch of completions and one timer covers every deadline. Timing is unchanged: the
    clock stops when the reactor hands us the ready sockets, as it would per socket.
    """

    def __init__(self, reactor: ProbeReactor, clock: Callable[[], float]) -> None:
        self._reactor = reactor
        self.clock = clock
        self._ep = select.epoll()
        self._pending: dict[int, _Connector] = {}
        self._deadlines: list[tuple[float, int, _Connector]] = []
        self._seq = 0
        self._timer: Any = None
        self._reading = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    # IReadDescriptor
    def fileno(self) -> int:
        return self._ep.fileno()

    def logPrefix(self) -> str:
        return "tcp-probe"

    def doRead(self) -> None:
        ready = self._ep.poll(0)
        t1 = self.clock()  # clock stop for every connect in this batch: all were done
        for fd, _ in ready:
            conn = self._pending.pop(fd, None)
            if conn is not None:
                self._ep.unregister(fd)
                conn.completed(t1)
        self._settle()

    def connectionLost(self, reason: Failure) -> None:
        self._reading = False
        for conn in list(self._pending.values()):
            self.remove(conn)
            conn.failed("error", f"connect: {reason.getErrorMessage()}")

    # bookkeeping
    def add(self, conn: _Connector, timeout: float) -> None:
        fd = conn.fileno()
        self._ep.register(fd, select.EPOLLOUT)
        self._pending[fd] = conn
        deadline = self._reactor.seconds() + max(timeout, 0.0)
        self._seq += 1
        heapq.heappush(self._deadlines, (deadline, self._seq, conn))
        if not self._reading:
            self._reactor.addReader(self)
            self._reading = True
        self._arm()

    def remove(self, conn: _Connector) -> None:
        fd = conn.fileno()
        if self._pending.get(fd) is conn:
            del self._pending[fd]
            self._ep.unregister(fd)
        self._settle()

    def _arm(self) -> None:
        """Keep one timer, due at the earliest live deadline."""
        heap = self._deadlines
        while heap and self._pending.get(heap[0][2].fileno()) is not heap[0][2]:
            heapq.heappop(heap)
        if not heap:
            return
        delay = max(heap[0][0] - self._reactor.seconds(), 0.0)
        if self._timer is None or not self._timer.active():
            self._timer = self._reactor.callLater(delay, self._expire)
        elif self._timer.getTime() > heap[0][0]:
            self._timer.reset(delay)

    def _expire(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, conn = heapq.heappop(heap)
            if self._pending.get(conn.fileno()) is conn:
                del self._pending[conn.fileno()]
                self._ep.unregister(conn.fileno())
                conn.failed("timeout", "connect: timed out")
        self._settle()

    def _settle(self) -> None:
        if self._pending:
            self._arm()
            return
        self._deadlines.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._reading:
            self._reactor.removeReader(self)
            self._reading = False


class _Connector:
    """One connection attempt: the socket, its clock and the Deferred for its outcome."""

    def __init__(
        self,
        engine: ConnectEngine,
        ip: str,
        port: int,
        source: str | None,
        timeout: float,
        result: ProbeResult,
        info: ConnectInfo,
    ) -> None:
        self._engine = engine
        self._result = result
        self._info = info
        self.deferred: Deferred[socket.socket | None] = Deferred(self._cancel)
        self._sock: socket.socket | None = None
        self._fd = -1
        self._t0 = 0.0
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self.failed("error", f"socket: {exc.strerror}")
            return
        self._sock, self._fd = sock, sock.fileno()
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
        except OSError as exc:  # a local problem (address not ours, wrong family): not the path's
            self.failed("error", f"bind {source}: {exc.strerror}")
            return
        try:
            addr: tuple[Any, ...] = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
            # Clock start: the SYN leaves with this call.
            self._t0 = engine.clock()
            err = sock.connect_ex(addr)
        except OSError as exc:
            self.failed(classify(exc.errno or 0), f"connect: {exc.strerror}")
            return
        if err == 0:
            self._connected(engine.clock())
        elif err != errno.EINPROGRESS:
            self.failed(classify(err), f"connect: {strerror(err)}")
        else:
            engine.add(self, timeout)

    def fileno(self) -> int:
        return self._fd

    def completed(self, t1: float) -> None:
        """The socket became writable or failed (EPOLLOUT, EPOLLERR or EPOLLHUP) at ``t1``."""
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if self._sock else 0
        if err:
            self.failed(classify(err), f"connect: {strerror(err)}")
        else:
            self._connected(t1)

    def _connected(self, t1: float) -> None:
        r = self._result
        r.connect_duration = t1 - self._t0
        sock, self._sock = self._sock, None
        if sock is not None:
            found = tcp_info(sock)
            if found is not None:
                self._info.handshake_rtt, self._info.retransmits = found
            else:
                self._info.handshake_rtt = self._info.retransmits = None
        r.note("Successfully dialed", seconds=f"{r.connect_duration:.6f}")
        self.deferred.callback(sock)

    def _cancel(self, _: Deferred[socket.socket | None]) -> None:
        self._engine.remove(self)
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def failed(self, result: str, detail: str) -> None:
        self._close()
        self._result.fail(result, detail)
        if not self.deferred.called:
            self.deferred.callback(None)


def engine_of(ctx: ProbeContext) -> ConnectEngine:
    """The context's connect engine, made for its reactor and clock on first use."""
    found = engine(ctx, "connect", lambda reactor: ConnectEngine(reactor, ctx.clock.monotonic))
    assert isinstance(found, ConnectEngine)
    return found


def connect(
    ctx: ProbeContext,
    ip: str,
    port: int,
    source: str | None,
    timeout: float,
    result: ProbeResult,
    info: ConnectInfo,
) -> Deferred[socket.socket | None]:
    """Fire with the connected socket (the caller closes it), or None with ``result`` failed.

    ``result.connect_duration`` and ``info`` get what the connect showed.
    """
    result.note("Dialing TCP", address=ip, port=port)
    return _Connector(engine_of(ctx), ip, port, source, timeout, result, info).deferred


def adopt(ctx: ProbeContext, sock: socket.socket, factory: IProtocolFactory) -> IProtocol:
    """Hand a connected socket to the reactor as a transport; return the protocol built on it."""
    built: list[IProtocol] = []

    class _Capture:
        def __getattr__(self, name: str) -> Any:
            return getattr(factory, name)

        def buildProtocol(self, addr: Any) -> IProtocol | None:
            proto = factory.buildProtocol(addr)
            if proto is not None:
                built.append(proto)
            return proto

    try:
        capture = cast(IProtocolFactory, _Capture())
        ctx.reactor.adoptStreamConnection(sock.fileno(), sock.family, capture)
    finally:
        sock.close()  # the reactor works on its own duplicate of the descriptor
    return built[0]


#: the keys tcp, dns and icmp share: which IP protocol, and the source address
IP_PROTOCOL = (
    Opt("preferred_ip_protocol", Choice(("ip4", "ip6"), '"{}" must be ip4 or ip6')),
    Opt("ip_protocol_fallback", BOOL),
)
ADDRESSING = (*IP_PROTOCOL, Opt("source_ip_address", IP_ADDRESS))

#: a resolution without ``dns_timeout`` may take this long (blackbox PR #1542's default)
DEFAULT_DNS_TIMEOUT = 3.0


def _dns_server(c: Checker, node: yaml.Node, path: str) -> str | None:
    """An IP address with an optional port (53): the name of a server would itself need a
    resolver, and one looked up on the reactor thread would block it."""
    text = c.string(node, path)
    if text is None:
        return None
    try:
        server = parse_dns_server(text)
    except ValueError:
        server = None
    if server is None or not server.ip_version:
        c.error(node, path, f'"{text}" is not an IP address or IP:port')
        return None
    return text


def _dns_timeout(c: Checker, node: yaml.Node, path: str) -> float | None:
    return c.duration(node, path, minimum=0.001)


#: ``dns_server`` and ``dns_timeout`` (blackbox PR #1443): resolve the target through this
#: server instead of resolv.conf's, the hosts file still first; every prober that resolves
RESOLVING = (
    Opt("dns_server", Scalar(_dns_server)),
    Opt("dns_timeout", Scalar(_dns_timeout, lambda v: None if v is None else format_duration(v))),
)
