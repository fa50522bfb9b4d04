"""The traceroute prober: packets with rising TTL / hop limit, MTR-style figures per hop.

Each hop gets ``packets_per_hop`` packets (UDP to rising ports, ICMP echoes, or TCP SYNs to the
target's port) with that TTL; the router where the TTL runs out answers with ICMP time exceeded,
the target with an answer of its own (port unreachable, echo reply, SYN-ACK or RST). Hops are
sent in a window of ``WINDOW`` at a time, in order, and nothing past the hop where the target
answered is sent: a target rate-limits its ICMP as much as any router.

Two ways to hear the routers, chosen per probe and named in its debug log:

* ``errqueue`` (no privilege, Linux): the sending socket has ``IP_RECVERR`` / ``IPV6_RECVERR``,
  so the kernel queues each ICMP error about its packets, with the offender's address, on the
  socket's error queue (``recvmsg(MSG_ERRQUEUE)``). Used for udp and tcp always, and for icmp
  where ``net.ipv4.ping_group_range`` allows ICMP datagram sockets.
* ``raw`` (root or ``CAP_NET_RAW``): an ICMP raw socket sends the echoes and reads every ICMP
  packet, matching the quoted echo's identifier and sequence. Used for icmp when ping sockets
  are not allowed.

Error-queue events are ``EPOLLERR`` alone, which Twisted's epoll reactor reports as a lost
connection, not a read. So every traceroute socket sits in one inner ``select.epoll`` set and
only that set's descriptor is registered with the reactor, as one reader: it turns readable
when any socket in it has an event, ``EPOLLERR`` included, and ``doRead`` drains them all.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import probes
from netprobe_exporter.addresses import parse_host, parse_host_port
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeReactor,
    ProbeResult,
    ProberSpec,
    engine,
    options_of,
    run_probe,
)
from netprobe_exporter.probes.connect import ADDRESSING, RESOLVING, resolve
from netprobe_exporter.probes.icmp import checksum
from netprobe_exporter.schema import Check, Choice, Duration, Int, Opt, Reading, Section

log = Logger()

#: the most hops a module may ask for: the ``hop`` label's values are bounded by it
MAX_HOPS = 64
#: hops in flight at once
WINDOW = 8
UDP_BASE_PORT = 33434
TCP_DEFAULT_PORT = 80
PAYLOAD = b"netprobe-exporter traceroute...."  # 32 bytes

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
#: ICMP types that mean "the TTL ran out here" (v4 time exceeded, v6 time exceeded)
_TIME_EXCEEDED = {False: 11, True: 3}
#: ICMP types that mean "unreachable" (v4 and v6 destination unreachable)
_UNREACHABLE = {False: 3, True: 1}

PING_NOT_PERMITTED = (
    "ICMP sockets are not permitted: allow unprivileged ping with sysctl "
    "net.ipv4.ping_group_range (covering this process's group), or run with CAP_NET_RAW"
)
NO_RECVERR = (
    "the kernel refused {option} (Linux only): {protocol} traceroute needs it to hear the "
    "routers; use protocol: icmp with CAP_NET_RAW instead"
)


@dataclass(frozen=True, slots=True)
class TracerouteProbe(Options):
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    protocol: str = "udp"
    max_hops: int = 30
    first_hop: int = 1
    packets_per_hop: int = 3
    #: how long a hop's packets are waited for once sent
    hop_timeout: float = 1.0
    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None


HOP_LABELS = tuple(str(h) for h in range(1, MAX_HOPS + 1))

HOP_RTT = Family(
    "netprobe_traceroute_hop_rtt_seconds", "histogram",
    "traceroute modules: round trip to each hop, answers only (the hop label is the TTL).",
    order=121, label="hop", label_values=HOP_LABELS,
)  # fmt: skip
HOP_SENT = Family(
    "netprobe_traceroute_hop_sent_total", "counter",
    "traceroute modules: packets sent to each hop (up to the hop where the target answered).",
    order=122, label="hop", label_values=HOP_LABELS,
)  # fmt: skip
HOP_LOST = Family(
    "netprobe_traceroute_hop_lost_total", "counter",
    "traceroute modules: packets to each hop that got no answer in time.",
    order=123, label="hop", label_values=HOP_LABELS,
)  # fmt: skip
HOPS = Family(
    "netprobe_traceroute_hops", "gauge",
    "traceroute modules: hops of the last probe's path (the last hop that answered).",
    order=124,
)  # fmt: skip
ROUTE_HASH = Family(
    "netprobe_traceroute_route_hash", "gauge",
    "traceroute modules: FNV-1a hash of the last path's hop addresses ('*' for a silent hop).",
    order=125,
)  # fmt: skip
PATH = Family(
    "netprobe_traceroute_path_info", "info",
    "traceroute modules: the last path, hop addresses in order ('*' for a silent hop).",
    order=126, label="path",
)  # fmt: skip
PATH_CHANGES = Family(
    "netprobe_traceroute_path_changes_total", "counter",
    "traceroute modules: probes whose path differed from the one before.", order=127,
)  # fmt: skip
FAMILIES = (HOP_RTT, HOP_SENT, HOP_LOST, HOPS, ROUTE_HASH, PATH, PATH_CHANGES)

BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_traceroute_hops", "Hops of the path (the last hop that answered)"),
    BlackboxFamily("probe_traceroute_destination_reached",
                   "Whether the target answered (1) or not (0)"),
    BlackboxFamily("probe_traceroute_route_hash",
                   "FNV-1a hash of the hop addresses, to see when the path changes"),
    BlackboxFamily("probe_traceroute_hop_rtt_seconds", "Mean round trip to each hop"),
    BlackboxFamily("probe_traceroute_hop_loss_ratio",
                   "Packets to each hop that got no answer, as a ratio of those sent"),
    BlackboxFamily("probe_traceroute_hop_info", "The address that answered at each hop"),
)  # fmt: skip


def fnv32a(text: str) -> int:
    """32-bit FNV-1a, as blackbox's ``probe_ip_addr_hash``: stable across processes."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(slots=True)
class HopStats:
    """What one hop's packets showed."""

    ttl: int
    sent: int = 0
    rtts: list[float] = field(default_factory=list)
    #: the first address that answered (None: silent)
    address: str | None = None

    @property
    def lost(self) -> int:
        return self.sent - len(self.rtts)


@dataclass(slots=True)
class TracerouteDetails(Details):
    """The hops of one traceroute, in TTL order, up to the last one that counts."""

    hops: list[HopStats] = field(default_factory=list)
    reached: bool = False
    #: how routers were heard: "errqueue" or "raw"
    method: str = ""

    def path(self) -> str:
        return " ".join(h.address or "*" for h in self.hops)

    def route_hash(self) -> float:
        return float(fnv32a(self.path()))

    def hop_count(self) -> int:
        answered = [h.ttl for h in self.hops if h.address is not None]
        return max(answered, default=0)

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        if not self.hops:
            return
        for hop in self.hops:
            index = hop.ttl - 1
            for rtt in hop.rtts:
                out.histogram(HOP_RTT.name, rtt, index)
            out.counter(HOP_SENT.name, float(hop.sent), index)
            out.counter(HOP_LOST.name, float(hop.lost), index)
        out.gauge(HOPS.name, float(self.hop_count()))
        out.gauge(ROUTE_HASH.name, self.route_hash())
        path = self.path()
        before = out.info(PATH.name, path)
        out.counter(PATH_CHANGES.name, 0.0 if before in (None, path) else 1.0)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        out["probe_traceroute_destination_reached"] = [({}, 1.0 if self.reached else 0.0)]
        if not self.hops:
            return
        out["probe_traceroute_hops"] = [({}, float(self.hop_count()))]
        out["probe_traceroute_route_hash"] = [({}, self.route_hash())]
        out["probe_traceroute_hop_loss_ratio"] = [
            ({"hop": str(h.ttl)}, h.lost / h.sent) for h in self.hops if h.sent
        ]
        out["probe_traceroute_hop_rtt_seconds"] = [
            ({"hop": str(h.ttl)}, round(sum(h.rtts) / len(h.rtts), 9)) for h in self.hops if h.rtts
        ]
        out["probe_traceroute_hop_info"] = [
            ({"hop": str(h.ttl), "ip": h.address}, 1.0) for h in self.hops if h.address
        ]


# -- sockets ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """An ICMP (or TCP) answer to one of our packets."""

    #: who answered
    address: str
    #: the kernel's receive time (wall ns), or None: read the clock now
    rx_ns: int | None
    #: whether the TTL ran out there (a router); else the answer ends the path
    time_exceeded: bool


def extended_error(
    ancdata: list[tuple[int, int, bytes]], v6: bool
) -> tuple[int, int, str, int | None] | None:
    """(ICMP type, code, offender, rx ns) from a ``MSG_ERRQUEUE`` read, None if not ICMP.

    The control message is a ``sock_extended_err`` followed by the offender's sockaddr.
    """
    found: tuple[int, int, str] | None = None
    rx_ns: int | None = None
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            rx_ns = sec * 1_000_000_000 + nsec
        elif (level, kind) in (
            (socket.IPPROTO_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
        ):
            if len(value) < _EE.size:
                continue
            _, origin, icmp_type, code, _, _, _ = _EE.unpack_from(value)
            if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                continue  # a local error (message too long...), no router said it
            addr = value[_EE.size :]
            if v6 and len(addr) >= 24:
                offender = socket.inet_ntop(socket.AF_INET6, addr[8:24])
            elif not v6 and len(addr) >= 8:
                offender = socket.inet_ntop(socket.AF_INET, addr[4:8])
            else:
                continue
            found = (icmp_type, code, offender)
    if found is None:
        return None
    return (*found, rx_ns)


def _recv_error(
    sock: socket.socket, v6: bool
) -> tuple[bytes, Any, tuple[int, int, str, int | None]] | None:
    """One error-queue entry: (payload, address, ICMP details); None when the queue is empty."""
    while True:
        try:
            data, ancdata, _, addr = sock.recvmsg(512, 1024, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return None
        err = extended_error(ancdata, v6)
        if err is not None:
            return data, addr, err


@implementer(IReadDescriptor)
class TraceEngine:
    """Every traceroute socket of one reactor in one epoll set, seen by the reactor as one
    reader: error-queue events (``EPOLLERR``) become reads instead of lost connections."""

    def __init__(self, reactor: ProbeReactor) -> None:
        self._reactor = reactor
        self._ep = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._reading = False
        self._announced: set[tuple[str, bool, str]] = set()

    @property
    def watched(self) -> int:
        return len(self._handlers)

    def fileno(self) -> int:
        return self._ep.fileno()

    def logPrefix(self) -> str:
        return "traceroute-probe"

    def doRead(self) -> None:
        for fd, events in self._ep.poll(0, 256):  # at most 256: the rest on the next turn
            handler = self._handlers.get(fd)
            if handler is not None:
                handler(events)

    def connectionLost(self, reason: Failure) -> None:
        self._reading = False
        for handler in list(self._handlers.values()):
            handler(-1)  # each owner fails its probe and unwatches

    def announce(self, transport: _Transport) -> None:
        """Log once per protocol, IP version and method how the routers are heard."""
        key = (transport.protocol, transport.v6, transport.method)
        if key not in self._announced:
            self._announced.add(key)
            version = "ip6" if transport.v6 else "ip4"
            log.info("traceroute sockets", protocol=transport.protocol, ip_protocol=version,
                     method=transport.method)  # fmt: skip

    def watch(self, sock: socket.socket, mask: int, handler: Callable[[int], None]) -> None:
        fd = sock.fileno()
        self._ep.register(fd, mask)
        self._handlers[fd] = handler
        if not self._reading:
            self._reactor.addReader(self)
            self._reading = True

    def unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # closed already
                self._ep.unregister(fd)
        if not self._handlers and self._reading:
            self._reactor.removeReader(self)
            self._reading = False


_idents = itertools.count(os.getpid() * 7919)


class _Transport:
    """How one traceroute sends its packets and hears the answers: ``open()``,
    ``send(ttl, seq)`` and a callback ``on_answer(seq, Answer)``."""

    protocol = ""
    method = "errqueue"

    def __init__(
        self, eng: TraceEngine, ip: str, port: int, source: str | None,
        on_answer: Callable[[int, Answer], None],
    ) -> None:  # fmt: skip
        self.eng = eng
        self.ip = ip
        self.port = port
        self.source = source
        self.v6 = ":" in ip
        self.family = socket.AF_INET6 if self.v6 else socket.AF_INET
        self.on_answer = on_answer
        self.socks: list[socket.socket] = []
        #: set by close(), which an answer may cause: a handler stops reading at once
        self.closed = False

    def _prepare(self, sock: socket.socket, recverr: bool = True) -> None:
        """Non-blocking, bound to the source, with kernel timestamps and the error queue."""
        self.socks.append(sock)
        sock.setblocking(False)
        if recverr:
            level, option, name = (
                (socket.IPPROTO_IPV6, IPV6_RECVERR, "IPV6_RECVERR") if self.v6
                else (socket.IPPROTO_IP, IP_RECVERR, "IP_RECVERR")
            )  # fmt: skip
            try:
                sock.setsockopt(level, option, 1)
            except OSError:
                why = NO_RECVERR.format(option=name, protocol=self.protocol)
                raise OSError(errno.ENOPROTOOPT, why) from None
        with contextlib.suppress(OSError):  # else the clock is read on arrival
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if self.source:
            sock.bind((self.source, 0))

    def _ttl(self, sock: socket.socket, ttl: int) -> None:
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)

    def _answer_from_error(self, seq: int, err: tuple[int, int, str, int | None]) -> None:
        icmp_type, _, offender, rx_ns = err
        exceeded = icmp_type == _TIME_EXCEEDED[self.v6] and offender != self.ip
        self.on_answer(seq, Answer(offender, rx_ns, exceeded))

    def open(self) -> None:
        raise NotImplementedError

    def send(self, ttl: int, seq: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True
        for sock in self.socks:
            self.eng.unwatch(sock)
            sock.close()
        self.socks.clear()


class _UDP(_Transport):
    """One UDP socket; packet ``seq`` goes to port ``port + seq - 1``, which the error names."""

    protocol = "udp"

    def open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock = sock
        try:
            self._prepare(sock)
        except OSError:
            sock.close()
            self.socks.clear()
            raise
        self.eng.watch(sock, select.EPOLLIN | select.EPOLLERR, self._ready)

    def send(self, ttl: int, seq: int) -> None:
        self._ttl(self.sock, ttl)
        port = (self.port + seq - 1) % 65536 or 1
        for _ in range(2):  # an earlier answer's error may be reported by this send: retry
            try:
                self.sock.sendto(PAYLOAD, (self.ip, port))
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    raise

    def _ready(self, events: int) -> None:
        if events < 0:
            self.on_answer(-1, Answer("", None, False))
            return
        for _ in range(1024):
            found = None if self.closed else _recv_error(self.sock, self.v6)
            if found is None:
                break
            _, addr, err = found
            seq = (addr[1] - self.port) % 65536 + 1 if addr else 0
            self._answer_from_error(seq, err)
        for _ in range(0 if self.closed else 64):  # a datagram back (a listener): dropped
            try:
                self.sock.recv(2048)
            except OSError:
                break


class _ICMP(_Transport):
    """ICMP echoes, sequence ``seq``: an ICMP datagram socket with the error queue, else a
    raw socket reading every ICMP packet (``method`` says which)."""

    protocol = "icmp"

    def open(self) -> None:
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.ident = next(_idents) & 0xFFFF
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM, proto)
            self.raw = False
        except PermissionError:
            try:
                sock = socket.socket(self.family, socket.SOCK_RAW, proto)
            except PermissionError:
                raise OSError(errno.EPERM, PING_NOT_PERMITTED) from None
            self.raw = True
            self.method = "raw"
        self.sock = sock
        try:
            self._prepare(sock, recverr=not self.raw)
        except OSError:
            sock.close()
            self.socks.clear()
            raise
        self.eng.watch(sock, select.EPOLLIN | select.EPOLLERR, self._ready)

    def send(self, ttl: int, seq: int) -> None:
        kind = 128 if self.v6 else 8
        packet = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq) + PAYLOAD
        if not self.v6:  # the kernel sums ICMPv6
            packet = struct.pack("!BBHHH", kind, 0, checksum(packet), self.ident, seq) + PAYLOAD
        self._ttl(self.sock, ttl)
        for _ in range(2):
            try:
                self.sock.sendto(packet, (self.ip, 0))
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    raise

    def _ready(self, events: int) -> None:
        if events < 0:
            self.on_answer(-1, Answer("", None, False))
            return
        if not self.raw:
            for _ in range(1024):
                found = None if self.closed else _recv_error(self.sock, self.v6)
                if found is None:
                    break
                data, _, err = found
                if len(data) >= 8:
                    self._answer_from_error(struct.unpack_from("!H", data, 6)[0], err)
        for _ in range(1024):
            if self.closed:
                break
            try:
                data, ancdata, _, addr = self.sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an error reported on the normal queue: read it again from the other
            rx_ns = _timestamp(ancdata)
            if self.raw:
                self._raw_packet(data, addr[0], rx_ns)
            elif len(data) >= 8 and data[0] == (129 if self.v6 else 0):
                self.on_answer(struct.unpack_from("!H", data, 6)[0], Answer(addr[0], rx_ns, False))

    def _raw_packet(self, data: bytes, source: str, rx_ns: int | None) -> None:
        """An ICMP packet a raw socket saw: ours if it is our echo's reply or quotes it."""
        if not self.v6:  # a raw IPv4 socket hands us the IP header too
            if len(data) < 20:
                return
            data = data[(data[0] & 0x0F) * 4 :]
        if len(data) < 8:
            return
        kind = data[0]
        if kind == (129 if self.v6 else 0):
            ident, seq = struct.unpack_from("!HH", data, 4)
            if ident == self.ident:
                self.on_answer(seq, Answer(source, rx_ns, False))
            return
        if kind not in (_TIME_EXCEEDED[self.v6], _UNREACHABLE[self.v6]):
            return
        quoted = data[8:]
        if self.v6:
            if len(quoted) < 48 or quoted[6] != socket.IPPROTO_ICMPV6:
                return
            inner = quoted[40:]
        else:
            if len(quoted) < 28 or quoted[9] != socket.IPPROTO_ICMP:
                return
            inner = quoted[(quoted[0] & 0x0F) * 4 :]
        if len(inner) < 8 or inner[0] != (128 if self.v6 else 8):
            return
        ident, seq = struct.unpack_from("!HH", inner, 4)
        if ident == self.ident:
            exceeded = kind == _TIME_EXCEEDED[self.v6] and source != self.ip
            self.on_answer(seq, Answer(source, rx_ns, exceeded))


class _TCP(_Transport):
    """One TCP socket per packet: a SYN with that TTL, from ``connect``. A router's ICMP
    arrives on its error queue; a SYN-ACK (connected) or RST (refused) is the target's."""

    protocol = "tcp"

    def open(self) -> None:
        self._by_seq: dict[int, socket.socket] = {}

    def send(self, ttl: int, seq: int) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            self._prepare(sock)
            self._ttl(sock, ttl)
            # close with a RST, not a FIN: a connected probe leaves nothing behind at the target
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            self.socks.remove(sock)
            sock.close()
            raise
        err = sock.connect_ex((self.ip, self.port))
        if err not in (0, errno.EINPROGRESS):
            self._drop(sock)
            raise OSError(err, os.strerror(err))
        self._by_seq[seq] = sock
        self.eng.watch(sock, select.EPOLLOUT | select.EPOLLERR, lambda ev: self._ready(seq, ev))

    def _ready(self, seq: int, events: int) -> None:
        sock = self._by_seq.pop(seq, None)
        if sock is None:
            return
        if events < 0:
            self._drop(sock)
            self.on_answer(-1, Answer("", None, False))
            return
        found = _recv_error(sock, self.v6)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._drop(sock)  # before the answer, which may close every socket
        if found is not None:
            self._answer_from_error(seq, found[2])
        elif err in (0, errno.ECONNREFUSED):  # SYN-ACK or RST: the target answered
            self.on_answer(seq, Answer(self.ip, None, False))

    def _drop(self, sock: socket.socket) -> None:
        self.eng.unwatch(sock)
        if sock in self.socks:
            self.socks.remove(sock)
        sock.close()


def _timestamp(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return int(sec * 1_000_000_000 + nsec)
    return None


TRANSPORTS: dict[str, type[_Transport]] = {"udp": _UDP, "icmp": _ICMP, "tcp": _TCP}


# -- one traceroute --------------------------------------------------------------------------


class _Trace:
    """The hops of one probe: a window of hops in flight, each waited for ``hop_timeout``."""

    def __init__(
        self, ctx: ProbeContext, transport: _Transport, opts: TracerouteProbe, deadline: float,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.t = transport
        self.opts = opts
        self.deadline = deadline  # monotonic
        self.hops: dict[int, HopStats] = {}
        #: seq -> (hop, wall ns at send)
        self.packets: dict[int, tuple[int, int]] = {}
        #: hop -> monotonic time its wait ends
        self.waiting: dict[int, float] = {}
        self.next_hop = opts.first_hop
        #: the lowest hop where the target (or an unreachable) answered: nothing past it
        self.end_hop: int | None = None
        self.reached = False
        self.seq = 0
        self.done: Deferred[None] = Deferred()
        self.timer: IDelayedCall | None = None
        self.error: str | None = None
        self.finished = False

    def start(self) -> None:
        self._pump()

    def _limit(self) -> int:
        return self.opts.max_hops if self.end_hop is None else self.end_hop

    def _pump(self) -> None:
        """Send hops while the window has room, then wait, or finish."""
        clock = self.ctx.clock.monotonic
        while (
            len(self.waiting) < WINDOW
            and self.next_hop <= self._limit()
            and clock() < self.deadline
        ):
            self._send_hop(self.next_hop)
            self.next_hop += 1
            if self.error is not None:
                break
        if self.error is not None or not self.waiting:
            self._finish()
            return
        wake = min(min(self.waiting.values()), self.deadline)
        delay = max(wake - clock(), 0.0)
        if self.timer is not None and self.timer.active():
            self.timer.reset(delay)
        else:
            self.timer = self.ctx.reactor.callLater(delay, self._expire)

    def _send_hop(self, ttl: int) -> None:
        hop = self.hops[ttl] = HopStats(ttl)
        for _ in range(self.opts.packets_per_hop):
            self.seq += 1
            self.packets[self.seq] = (ttl, self.ctx.clock.wall_ns())
            try:
                self.t.send(ttl, self.seq)
            except OSError as exc:
                del self.packets[self.seq]
                self.error = f"traceroute: send at ttl {ttl}: {exc.strerror or exc}"
                return
            hop.sent += 1
        self.waiting[ttl] = self.ctx.clock.monotonic() + self.opts.hop_timeout

    def answer(self, seq: int, ans: Answer) -> None:
        if self.finished:
            return
        if seq < 0:
            self.error = "traceroute: the reactor dropped the sockets"
            self._finish()
            return
        found = self.packets.pop(seq, None)
        if found is None:
            return  # an answer to a packet already given up on, or not ours
        ttl, sent_ns = found
        hop = self.hops[ttl]
        rx_ns = ans.rx_ns if ans.rx_ns is not None else self.ctx.clock.wall_ns()
        hop.rtts.append(max(rx_ns - sent_ns, 0) / 1e9)
        if hop.address is None:
            hop.address = ans.address
        if not ans.time_exceeded:
            if ans.address == self.t.ip:
                self.reached = True
            if self.end_hop is None or ttl < self.end_hop:
                self.end_hop = ttl
        if len(hop.rtts) >= hop.sent:
            self.waiting.pop(ttl, None)
        self._drop_past_end()
        self._pump()

    def _drop_past_end(self) -> None:
        if self.end_hop is None:
            return
        for ttl in [t for t in self.waiting if t > self.end_hop]:
            del self.waiting[ttl]

    def _expire(self) -> None:
        self.timer = None
        now = self.ctx.clock.monotonic()
        if now >= self.deadline:
            # a packet whose wait the deadline cut short is neither lost nor counted
            for ttl in self.waiting:
                hop = self.hops[ttl]
                hop.sent = len(hop.rtts)
            self.waiting.clear()
            self.next_hop = self._limit() + 1
        for ttl in [t for t, end in self.waiting.items() if end <= now]:
            del self.waiting[ttl]
        self._pump()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.t.close()
        if not self.done.called:  # a cancelled probe's was errbacked already
            self.done.callback(None)

    def cancel(self) -> None:
        self.waiting.clear()
        self._finish()

    def result_hops(self) -> list[HopStats]:
        """Hops sent, up to where the path ended (the target or an unreachable answer)."""
        limit = self._limit()
        return [self.hops[t] for t in sorted(self.hops) if t <= limit and self.hops[t].sent]


def engine_of(ctx: ProbeContext) -> TraceEngine:
    found = engine(ctx, "traceroute", TraceEngine)
    assert isinstance(found, TraceEngine)
    return found


def split_target(address: str, protocol: str) -> tuple[str, int]:
    """The host and port of ``host`` or ``host:port`` (tcp: the SYNs' port; udp: the first
    destination port); raise ValueError naming what is wrong."""
    try:
        parse_host(address)
        host, port = address, 0
    except ValueError:
        hp = parse_host_port(address)
        host, port = hp.host, hp.port
    if port and protocol == "icmp":
        raise ValueError(f"{address!r}: an icmp traceroute takes a host, not host:port")
    default = TCP_DEFAULT_PORT if protocol == "tcp" else UDP_BASE_PORT
    return host, port or default


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Trace the path to ``address`` within ``timeout`` seconds."""
    opts = options_of(module, TracerouteProbe)

    async def work(result: ProbeResult, started: float) -> None:
        details = result.details = TracerouteDetails()
        await _run(ctx, address, opts, timeout, started, details, result)

    return run_probe(ctx, work)


async def _run(
    ctx: ProbeContext, address: str, opts: TracerouteProbe, timeout: float, started: float,
    details: TracerouteDetails, result: ProbeResult,
) -> None:  # fmt: skip
    try:
        host, port = split_target(address, opts.protocol)
        version = parse_host(host)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    ip = await resolve(
        ctx, host, version, opts.preferred_ip_protocol, opts.ip_protocol_fallback, timeout, result,
        dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    if ip is None:
        return
    trace: _Trace | None = None

    def on_answer(seq: int, ans: Answer) -> None:
        if trace is not None:
            trace.answer(seq, ans)

    transport = TRANSPORTS[opts.protocol](engine_of(ctx), ip, port, opts.source_ip_address,
                                          on_answer)  # fmt: skip
    try:
        transport.open()
    except OSError as exc:
        transport.close()
        result.fail("error", f"traceroute {opts.protocol}: {exc.strerror or exc}")
        return
    details.method = transport.method
    engine_of(ctx).announce(transport)
    result.note("Tracing", protocol=opts.protocol, method=transport.method, ip=ip, port=port,
                max_hops=opts.max_hops)  # fmt: skip
    trace = _Trace(ctx, transport, opts, started + timeout)
    trace.start()
    try:
        await trace.done
    except CancelledError:
        trace.cancel()
        raise
    details.hops = trace.result_hops()
    details.reached = trace.reached
    for hop in details.hops:
        result.note("Hop", hop=hop.ttl, ip=hop.address or "*", sent=hop.sent,
                    answered=len(hop.rtts))  # fmt: skip
    if trace.error is not None:
        result.fail("error", trace.error)
    elif trace.reached:
        result.success, result.result = True, "success"
    elif trace.end_hop is not None:
        last = details.hops[-1].address if details.hops else "?"
        result.fail("unreachable", f"traceroute: {last} answered that {ip} is unreachable")
    else:
        result.fail("timeout", f"traceroute: {ip} did not answer within {opts.max_hops} hops")


def _hops_in_order(r: Reading) -> None:
    first = r.values.get("first_hop", OPTIONS.default.first_hop)
    most = r.values.get("max_hops", OPTIONS.default.max_hops)
    if isinstance(first, int) and isinstance(most, int) and first > most:
        r.error("first_hop", f"must not be above max_hops ({most})")
        r.values.pop("first_hop", None)


OPTIONS = Section(
    TracerouteProbe(),
    (
        *ADDRESSING,
        *RESOLVING,
        Opt("protocol", Choice(tuple(TRANSPORTS), '"{}" must be udp, icmp or tcp')),
        Opt("max_hops", Int(1, MAX_HOPS)),
        Opt("first_hop", Int(1, MAX_HOPS)),
        Opt("packets_per_hop", Int(1, 10)),
        Opt("hop_timeout", Duration(0.001)),
        Check(_hops_in_order),
    ),
)


def _families(options: Options) -> tuple[Family, ...]:
    """The per-hop families hold at most ``max_hops`` label values for one target."""
    hops = options.max_hops if isinstance(options, TracerouteProbe) else MAX_HOPS
    return tuple(
        replace(f, label_values=f.label_values[:hops]) if f.label == "hop" else f for f in FAMILIES
    )


def target_host(address: str) -> str:
    return split_target(address, "udp")[0]


def check_address(address: str) -> str | None:
    try:
        host, _ = split_target(address, "udp")
        parse_host(host)
    except ValueError as exc:
        return str(exc)
    return None


PROBER = probes.register(
    ProberSpec(
        name="traceroute",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        families=FAMILIES,
        families_for=_families,
        blackbox_families=BLACKBOX_FAMILIES,
    )
)
