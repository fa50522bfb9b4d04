"""The icmp prober: echo request, echo reply, timed by the kernel.

One socket per address family (and source address) serves every ICMP probe; replies are matched
by sequence number (and, on raw sockets, identifier). The socket is an unprivileged ICMP
datagram socket where ``net.ipv4.ping_group_range`` allows it, else a raw socket (root or
``CAP_NET_RAW``); where neither is allowed the probe fails with a message saying how to allow
one. The round trip is the kernel's receive timestamp (``SO_TIMESTAMPNS``) minus the wall clock
read just before ``sendto``: a late reactor does not make the RTT longer.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import probes
from netprobe_exporter.addresses import parse_host
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Clock,
    Family,
    ProbeContext,
    ProbeReactor,
    ProbeResult,
    ProberSpec,
    engine,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import packets as packets_
from netprobe_exporter.probes.connect import ADDRESSING, RESOLVING, resolve
from netprobe_exporter.probes.packets import DEFAULT_PACKET_INTERVAL, PACKET_OPTIONS, Burst, Packets
from netprobe_exporter.schema import BOOL, Int, Opt, Section


@dataclass(frozen=True, slots=True)
class ICMPProbe(Options):
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    #: bytes of echo data; 0 means blackbox's default payload
    payload_size: int = 0
    dont_fragment: bool = False
    #: IPv4 TTL or IPv6 hop limit of the request
    ttl: int = 64
    #: echo requests per probe, one every ``packet_interval`` (``probes.packets``)
    packets: int = 1
    packet_interval: float = DEFAULT_PACKET_INTERVAL
    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None


RTT = Family(
    "netprobe_icmp_rtt_seconds", "histogram",
    "icmp modules: echo round trip from the kernel's receive timestamp, replies only, every "
    "reply of a probe with packets > 1 (loss: netprobe_packets_*_total, or "
    "netprobe_probes_total{result=\"timeout\"} with one packet).", order=120,
)  # fmt: skip


@dataclass(slots=True)
class ICMPPhases:
    """Seconds per phase (blackbox's ``phase`` label values); one not reached stays 0."""

    resolve: float = 0.0
    #: the socket found and the request sent
    setup: float = 0.0
    #: the echo's round trip (kernel receive timestamp minus send time)
    rtt: float = 0.0

    def items(self) -> tuple[tuple[str, float], ...]:
        """(phase, seconds) in blackbox's order: every phase, always."""
        return (("resolve", self.resolve), ("setup", self.setup), ("rtt", self.rtt))


@dataclass(slots=True)
class ICMPDetails(Details):
    """What an echo showed: its phases and the reply's TTL / hop limit; with ``packets`` > 1
    the burst (``rtt`` is then the first reply's, ``hop_limit`` the last's)."""

    phases: ICMPPhases = field(default_factory=ICMPPhases)
    hop_limit: int | None = None
    packets: Packets | None = None

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        if self.packets is not None:
            self.packets.observe(out, RTT.name)
        elif result.success:
            out.histogram(RTT.name, self.phases.rtt)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        out["probe_icmp_duration_seconds"] = [
            ({"phase": p}, round(v, 9)) for p, v in self.phases.items()
        ]
        if result.success and self.hop_limit is not None:
            out["probe_icmp_reply_hop_limit"] = [({}, float(self.hop_limit))]
        if self.packets is not None:
            self.packets.blackbox(out)


BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_icmp_duration_seconds", "Duration of icmp request by phase"),
    BlackboxFamily("probe_icmp_reply_hop_limit", "Replied packet hop limit (TTL for ipv4)"),
    *packets_.BLACKBOX_FAMILIES,
)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL_CMSG = getattr(socket, "IP_TTL", 2)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO, IP_PMTUDISC_DONT = 2, 0
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
DEFAULT_PAYLOAD = b"Prometheus Blackbox Exporter"
RECEIVE_BUFFER = 8 * 1024 * 1024
NOT_PERMITTED = (
    "ICMP sockets are not permitted: allow unprivileged ping with "
    "sysctl net.ipv4.ping_group_range (covering this process's group), or run with CAP_NET_RAW"
)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


class _Echo:
    """One outstanding echo request."""

    __slots__ = ("deferred", "sent_ns")

    def __init__(self, sent_ns: int, canceller: Callable[[object], None]) -> None:
        self.deferred: Deferred[tuple[int, int | None]] = Deferred(canceller)
        self.sent_ns = sent_ns


#: the wall clock an engine made without a context stamps packets with
_WALL_NS = Clock().wall_ns


@implementer(IReadDescriptor)
class IcmpSocket:
    """An ICMP socket shared by all probes of one family and source, read by the reactor."""

    def __init__(
        self,
        reactor: ProbeReactor,
        family: int,
        source: str | None,
        wall_ns: Callable[[], int] = _WALL_NS,
    ) -> None:
        self._reactor = reactor
        self._wall_ns = wall_ns
        self.family = family
        self.v6 = family == socket.AF_INET6
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        try:
            self.sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            self.raw = False
        except PermissionError:
            try:
                self.sock = socket.socket(family, socket.SOCK_RAW, proto)
            except PermissionError:
                raise OSError(errno.EPERM, NOT_PERMITTED) from None
            self.raw = True
        self.sock.setblocking(False)
        # Room for a burst of replies (a raw socket also sees every other ICMP packet).
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
                break
            except OSError:
                continue
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        if source:
            self.sock.bind((source, 0))
        self.ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)
        self.pending: dict[int, _Echo] = {}
        self._reading = False
        #: the (ttl, dont_fragment) the socket is set to, None until first set
        self._set: tuple[int, bool] | None = None

    # IReadDescriptor
    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "icmp-probe"

    def connectionLost(self, reason: Failure) -> None:
        self._reading = False
        for echo in list(self.pending.values()):
            if not echo.deferred.called:
                echo.deferred.errback(OSError(errno.EIO, reason.getErrorMessage()))
        self.pending.clear()

    def doRead(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error queued on the socket: not a reply
            self._reply(data, ancdata)
        self._settle()

    def _reply(self, data: bytes, ancdata: list[tuple[int, int, bytes]]) -> None:
        rx_ns = None
        hop: int | None = None
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack("qq", value[:16])
                rx_ns = sec * 1_000_000_000 + nsec
            elif (level, kind) in ((socket.IPPROTO_IP, IP_TTL_CMSG),
                                   (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):  # fmt: skip
                hop = struct.unpack("i", value[:4])[0] if len(value) >= 4 else value[0]
        if self.raw and not self.v6:  # a raw IPv4 socket hands us the IP header too
            if len(data) < 20:
                return
            ihl = (data[0] & 0x0F) * 4
            hop = data[8]
            data = data[ihl:]
        if len(data) < 8:
            return
        kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
        if kind != (129 if self.v6 else 0):
            return
        if self.raw and ident != self.ident:
            return  # another process's ping
        echo = self.pending.pop(seq, None)
        if echo is None or echo.deferred.called:
            return
        self._settle()  # before the callback: whoever waited may look at us at once
        now_ns = self._wall_ns()
        echo.deferred.callback(((rx_ns or now_ns) - echo.sent_ns, hop))

    def send(self, ip: str, opts: ICMPProbe) -> tuple[int, _Echo]:
        seq = next(self._seq) & 0xFFFF
        payload = DEFAULT_PAYLOAD
        if opts.payload_size:
            payload = (DEFAULT_PAYLOAD + bytes(opts.payload_size))[: opts.payload_size]
        kind = 128 if self.v6 else 8
        header = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq)
        packet = header + payload
        if not self.v6:  # the kernel sums ICMPv6 (and rewrites the id on datagram sockets)
            packet = struct.pack("!BBHHH", kind, 0, checksum(packet), self.ident, seq) + payload
        wanted = (opts.ttl, opts.dont_fragment)
        if wanted != self._set:  # two syscalls saved per echo while modules agree (bursts do)
            self._set = None
            if self.v6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, opts.ttl)
                self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, int(opts.dont_fragment))
            else:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, opts.ttl)
                self.sock.setsockopt(
                    socket.IPPROTO_IP, IP_MTU_DISCOVER,
                    IP_PMTUDISC_DO if opts.dont_fragment else IP_PMTUDISC_DONT,
                )  # fmt: skip
            self._set = wanted
        sent_ns = self._wall_ns()  # the clock starts as the request leaves
        echo = _Echo(sent_ns, lambda _: self.forget(seq))  # a cancelled echo is forgotten
        self.pending[seq] = echo
        try:
            self.sock.sendto(packet, (ip, 0))
        except OSError:
            del self.pending[seq]
            raise
        if not self._reading:
            self._reactor.addReader(self)
            self._reading = True
        return seq, echo

    def forget(self, seq: int) -> None:
        self.pending.pop(seq, None)
        self._settle()

    def _settle(self) -> None:
        if not self.pending and self._reading:
            self._reactor.removeReader(self)
            self._reading = False


class IcmpEngine:
    """The shared ICMP sockets of one reactor, made on first use."""

    def __init__(self, reactor: ProbeReactor, wall_ns: Callable[[], int]) -> None:
        self._reactor = reactor
        self._wall_ns = wall_ns
        self._sockets: dict[tuple[int, str | None], IcmpSocket] = {}

    def socket_for(self, family: int, source: str | None) -> IcmpSocket:
        key = (family, source)
        sock = self._sockets.get(key)
        if sock is None:
            sock = self._sockets[key] = IcmpSocket(self._reactor, family, source, self._wall_ns)
        return sock


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Ping ``address`` (a host name or IP address) once within ``timeout`` seconds."""

    opts = options_of(module, ICMPProbe)

    async def work(result: ProbeResult, started: float) -> None:
        details = result.details = ICMPDetails()
        await _run(ctx, address, opts, timeout, started, details, result)

    return run_probe(ctx, work)


async def _run(
    ctx: ProbeContext, address: str, opts: ICMPProbe, timeout: float, started: float,
    details: ICMPDetails, result: ProbeResult,
) -> None:  # fmt: skip
    phases = details.phases
    clock = ctx.clock.monotonic
    try:
        version = parse_host(address)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    unfit = packets_.fit_error(opts.packets, opts.packet_interval, timeout, packets_.PROBE_TIMEOUT)
    if unfit is not None:  # a /probe scrape timeout shorter than the module's
        result.fail("error", f"icmp: {unfit}")
        return
    ip = await resolve(
        ctx, address, version, opts.preferred_ip_protocol, opts.ip_protocol_fallback, timeout,
        result, dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    phases.resolve = result.resolve_duration or 0.0
    if ip is None:
        return
    t0 = clock()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if opts.packets > 1:
        await _burst(ctx, ip, family, opts, timeout - (t0 - started), details, result)
        return
    try:
        sock = engine_of(ctx).socket_for(family, opts.source_ip_address)
        seq, echo = sock.send(ip, opts)
    except OSError as exc:
        phases.setup = clock() - t0
        result.fail("error", f"icmp: {exc.strerror or exc}")
        return
    phases.setup = clock() - t0
    result.note("Waiting for reply packets", kind="raw" if sock.raw else "datagram", seq=seq)
    remaining = timeout - (clock() - started)
    timer = ctx.reactor.callLater(max(remaining, 0.0), echo.deferred.cancel)
    try:
        rtt_ns, hop = await echo.deferred
    except CancelledError:
        sock.forget(seq)
        result.fail("timeout", "icmp: no echo reply in time")
        return
    except OSError as exc:
        result.fail("error", f"icmp: {exc.strerror or exc}")
        return
    finally:
        if timer.active():
            timer.cancel()
    phases.rtt = rtt_ns / 1e9
    details.hop_limit = hop
    result.note("Found matching reply packet", rtt_seconds=phases.rtt, hop_limit=hop)
    result.success, result.result = True, "success"


async def _burst(
    ctx: ProbeContext, ip: str, family: int, opts: ICMPProbe, remaining: float,
    details: ICMPDetails, result: ProbeResult,
) -> None:  # fmt: skip
    """``opts.packets`` echoes, one every ``packet_interval``, answered within ``remaining``."""
    clock = ctx.clock.monotonic
    t0 = clock()
    try:
        sock = engine_of(ctx).socket_for(family, opts.source_ip_address)
    except OSError as exc:
        details.phases.setup = clock() - t0
        result.fail("error", f"icmp: {exc.strerror or exc}")
        return
    details.phases.setup = clock() - t0
    errors: list[str] = []

    def send(i: int) -> Deferred[float | None]:
        seq, echo = sock.send(ip, opts)
        result.note("Sent echo request", "debug", packet=i, seq=seq)
        return echo.deferred.addCallback(replied)  # cancelling it forgets the echo

    def replied(reply: tuple[int, int | None]) -> float:
        rtt_ns, hop = reply
        details.hop_limit = hop
        rtt = rtt_ns / 1e9
        if not details.phases.rtt:
            details.phases.rtt = rtt
        return rtt

    def on_error(i: int, exc: OSError) -> None:
        errors.append(f"icmp: {exc.strerror or exc}")

    result.note("Sending echo requests", kind="raw" if sock.raw else "datagram",
                packets=opts.packets, interval_seconds=opts.packet_interval)  # fmt: skip
    burst = Burst(
        ctx.reactor, opts.packets, opts.packet_interval, remaining, send, on_error, sock.doRead
    )
    got = details.packets = await burst.done
    result.note("Echo replies", sent=got.sent, received=got.received)
    if got.received:
        result.success, result.result = True, "success"
    elif not got.sent and errors:
        result.fail("error", errors[0])
    else:
        result.fail("timeout", f"icmp: no echo reply in time to any of {got.sent} requests")


def engine_of(ctx: ProbeContext) -> IcmpEngine:
    """The context's ICMP sockets, made for its reactor and wall clock on first use."""
    found = engine(ctx, "icmp", lambda reactor: IcmpEngine(reactor, ctx.clock.wall_ns))
    assert isinstance(found, IcmpEngine)
    return found


OPTIONS = Section(
    ICMPProbe(),
    (
        *ADDRESSING,
        *RESOLVING,
        Opt("payload_size", Int(0, 65000)),
        Opt("dont_fragment", BOOL),
        Opt("ttl", Int(0, 255, zero_unset=True)),  # 0: the default, as blackbox
        *PACKET_OPTIONS,
    ),
)


def check_address(address: str) -> str | None:
    try:
        parse_host(address)
    except ValueError as exc:
        return str(exc)
    return None


def _families(options: Options) -> tuple[Family, ...]:
    assert isinstance(options, ICMPProbe)
    return (RTT, *packets_.FAMILIES) if options.packets > 1 else (RTT,)


def _check_timeout(options: Options, timeout: float, whose: str) -> str | None:
    assert isinstance(options, ICMPProbe)
    return packets_.fit_error(options.packets, options.packet_interval, timeout, whose)


PROBER = probes.register(
    ProberSpec(
        name="icmp",
        options=OPTIONS,
        check_address=check_address,
        target_host=str,
        probe=probe,
        families=(RTT, *packets_.FAMILIES),
        families_for=_families,
        blackbox_families=BLACKBOX_FAMILIES,
        check_timeout=_check_timeout,
    )
)
