"""Name resolution that never blocks the reactor.

The hosts file is consulted first, as the system resolver does; a name found there is never
sent to DNS (so ``localhost`` works without a DNS server, and a missing AAAA for it does not
leak a query). Other names go to the ``nameserver`` entries of resolv.conf, without a cache:
each probe resolves afresh, so a DNS change is seen at the next probe. The system resolver
(getaddrinfo in a thread) is avoided: it would hold the GIL and skew every latency measured on
the reactor thread.

The DNS client is our own, on ``twisted.names.dns`` messages: one UDP socket per query (a
fresh port and a random id, a reply checked against both and against the question), the
answer asked again over TCP when it comes back truncated, one deadline for the whole
resolution, and cancellation that closes the socket and disarms the timer at once. Each probe
asks on its own: cancelling one probe's lookup never touches another's, even for one name.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFDSet,
    IReactorTCP,
    IReactorTime,
    IReadDescriptor,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.names import dns, error
from twisted.python.failure import Failure
from zope.interface import implementer

#: bytes read per datagram: a query without EDNS gets at most 512 back (as twisted.names reads)
_MAX_UDP_REPLY = 8192
#: datagrams read per wake-up, so a flood of stray replies cannot hold the reactor
_READS_PER_WAKEUP = 16

#: how a reply's RCODE is named in errors (the names twisted.names gives them)
_RCODE_NAMES = {
    dns.EFORMAT: error.DNSFormatError.__name__,
    dns.ESERVER: error.DNSServerError.__name__,
    dns.ENOTIMP: error.DNSNotImplementedError.__name__,
    dns.EREFUSED: error.DNSQueryRefusedError.__name__,
}

Server = tuple[str, int]


class ResolveError(Exception):
    """The name did not resolve to an address of an allowed family."""


def _family(preferred: str) -> int:
    return 6 if preferred == "ip6" else 4


def read_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        ipaddress.ip_address(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    servers.append((parts[1], 53))
    except OSError:
        pass
    return servers


class HostsFile:
    """``/etc/hosts``, re-read when its mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: float | None = None
        self._names: dict[str, list[str]] = {}

    def lookup(self, name: str) -> list[str]:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return []
        if mtime != self._mtime:
            self._names = self._parse()
            self._mtime = mtime
        return self._names.get(name.lower().rstrip("."), [])

    def _parse(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    fields = line.split("#", 1)[0].split()
                    if len(fields) < 2:
                        continue
                    try:
                        ip = str(ipaddress.ip_address(fields[0].split("%")[0]))
                    except ValueError:
                        continue
                    for name in fields[1:]:
                        names.setdefault(name.lower(), []).append(ip)
        except OSError:
            pass
        return names


def _canonical(host: str) -> str:
    """An address in one spelling (compressed, no zone index), to compare two of them."""
    return str(ipaddress.ip_address(host.split("%", 1)[0]))


class _Question:
    """One query, and what a reply must match to be its answer (RFC 5452 section 9.1).

    A reply with another id, not flagged as a response or for another question is not the
    answer, as in Go's resolver: a stray or spoofed datagram cannot end the lookup, and the
    real answer may still come before the deadline.
    """

    __slots__ = ("name", "qid", "qtype", "wire")

    def __init__(self, name: bytes, qtype: int) -> None:
        self.qid = secrets.randbits(16)
        self.name = name.lower().rstrip(b".")
        self.qtype = qtype
        message = dns.Message(id=self.qid, recDes=1)
        message.queries = [dns.Query(name, qtype, dns.IN)]
        self.wire: bytes = message.toStr()

    def answer(self, data: bytes) -> dns.Message | None:
        """The reply decoded, if it answers this query; None otherwise."""
        if len(data) < 12 or int.from_bytes(data[:2], "big") != self.qid:
            return None
        message = dns.Message()
        try:
            message.fromStr(data)
        except Exception:  # a malformed datagram is treated as a stray one
            return None
        if not message.answer or len(message.queries) != 1:
            return None
        q = message.queries[0]
        if q.type != self.qtype or q.cls != dns.IN or q.name.name.lower().rstrip(b".") != self.name:
            return None
        return message


@implementer(IReadDescriptor)
class _UDPExchange:
    """A query on a UDP socket of its own; the first reply from that server that answers it.

    A plain non-blocking socket read by the reactor: Twisted's UDP port would add about 35 µs
    of CPU per query (log lines, address checks), a quarter of a lookup. The socket is not
    connected: an ICMP port unreachable is not reported to it (on Linux), so a nameserver that
    is down costs the rest of the deadline rather than failing at once, and the reactor never
    sees a socket error it would turn into ``connectionLost``.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        server: Server,
        question: _Question,
        answered: Callable[[dns.Message], None],
        lost: Callable[[str], None],
    ) -> None:
        """Send the query; raises OSError (socket left closed) if it cannot be sent."""
        self._reactor = reactor
        self._host, self._port = server
        self._question = question
        self._answered = answered
        self._lost = lost
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.sendto(question.wire, server)
        except OSError:
            self._sock.close()
            self._sock = None
            raise
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:
        return "dns-resolver"

    def doRead(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if self._sock is None:
                return
            try:
                data, addr = self._sock.recvfrom(_MAX_UDP_REPLY)
            except OSError:  # nothing left to read (or a transient error): wait for more
                return
            if not self._from_server(addr):
                continue
            message = self._question.answer(data)
            if message is not None:
                self.close()
                self._answered(message)
                return

    def _from_server(self, addr: tuple[str, int]) -> bool:
        if addr[1] != self._port:
            return False
        if addr[0] == self._host:
            return True
        try:
            return _canonical(addr[0]) == _canonical(self._host)
        except ValueError:  # a nameserver given by name, not address: only exact matches
            return False

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the socket (shutting down, or a socket error)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._lost(f"DNS socket lost: {reason.getErrorMessage()}")

    def close(self) -> None:
        if self._sock is not None:
            self._reactor.removeReader(self)
            self._sock.close()
            self._sock = None


class _TCPExchange(Protocol):
    """A query over TCP (RFC 1035 section 4.2.2 framing), for an answer truncated over UDP."""

    def __init__(
        self,
        question: _Question,
        answered: Callable[[dns.Message], None],
        lost: Callable[[str], None],
    ) -> None:
        self._question = question
        self._answered = answered
        self._lost = lost
        self._buffer = b""
        self._done = False

    def connectionMade(self) -> None:
        wire = self._question.wire
        assert self.transport is not None
        self.transport.write(len(wire).to_bytes(2, "big") + wire)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._done or len(self._buffer) < 2:
            return
        size = int.from_bytes(self._buffer[:2], "big")
        if len(self._buffer) < 2 + size:
            return
        self._done = True
        self.close()
        message = self._question.answer(self._buffer[2 : 2 + size])
        if message is None:
            self._lost("DNS over TCP: the reply does not answer the query")
        else:
            self._answered(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._done:
            self._done = True
            self._lost("DNS over TCP: connection closed before an answer")

    def close(self) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.loseConnection()


class _Lookup:
    """One resolution: each address family in turn, under one deadline, cancellable throughout.

    Plain callbacks rather than a coroutine: they cost a fraction of the CPU per lookup.
    """

    def __init__(
        self,
        resolver: Resolver,
        servers: Sequence[Server],
        host: str,
        name: bytes,
        order: list[int],
        timeout: float,
    ) -> None:
        self._resolver = resolver
        self._servers = servers
        self._host = host
        self._name = name
        self._order = order
        self._family = 0
        self._question: _Question | None = None
        self._exchange: _UDPExchange | _TCPExchange | None = None
        self._connecting: Deferred[_TCPExchange] | None = None
        self._last = f"{host}: no address"
        self.result: Deferred[str] = Deferred(self._cancelled)
        self._server: Server = servers[0]
        timeout = max(timeout, 0.001)
        self._deadline = resolver.clock.seconds() + timeout
        self._timer: IDelayedCall | None = resolver.clock.callLater(timeout, self._timed_out)
        self._next_family()

    def _next_family(self) -> None:
        if not self._order:
            self._fail(self._last)
            return
        self._family = self._order.pop(0)
        self._question = _Question(self._name, dns.AAAA if self._family == 6 else dns.A)
        why = "no nameserver"
        for server in self._servers:
            try:
                self._exchange = _UDPExchange(
                    self._resolver.fds, server, self._question, self._answered, self._fail_on
                )
            except OSError as exc:  # no route, no socket: the next nameserver, at once
                why = f"DNS query to {server[0]} not sent: {exc.strerror or type(exc).__name__}"
                continue
            self._server = server
            return
        self._fail(f"{self._host}: {why}")

    def _answered(self, message: dns.Message) -> None:
        self._exchange = None
        if message.trunc and self._connecting is None:
            self._over_tcp()
            return
        host = self._host
        if message.rCode == dns.ENAME:
            self._fail(f"{host}: no such host (NXDOMAIN)")
        elif message.rCode != dns.OK:
            kind = _RCODE_NAMES.get(message.rCode, error.DNSUnknownError.__name__)
            self._fail(f"{host}: DNS error: {kind}")
        else:
            ip = _first_address(message.answers, self._family)
            if ip is not None:
                self._finish()
                self.result.callback(ip)
                return
            self._last = f"{host}: no IPv{self._family} address"
            self._connecting = None
            self._next_family()

    def _over_tcp(self) -> None:
        assert self._question is not None
        host, port = self._server
        reactor = self._resolver.tcp
        timeout = max(self._deadline - self._resolver.clock.seconds(), 0.001)
        endpoint = (
            TCP6ClientEndpoint(reactor, host, port, timeout)
            if ":" in host
            else TCP4ClientEndpoint(reactor, host, port, timeout)
        )
        exchange = _TCPExchange(self._question, self._answered, self._fail_on)
        self._exchange = exchange
        self._connecting = connectProtocol(endpoint, exchange)
        self._connecting.addErrback(self._connect_failed)

    def _connect_failed(self, reason: Failure) -> None:
        if not reason.check(defer.CancelledError):
            self._fail_on(f"DNS over TCP to {self._server[0]}: {reason.getErrorMessage()}")

    def _fail_on(self, why: str) -> None:
        self._fail(f"{self._host}: {why}")

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(f"{self._host}: DNS timeout")

    def _fail(self, text: str) -> None:
        if not self.result.called:
            self._finish()
            self.result.errback(ResolveError(text))

    def _cancelled(self, _: Deferred[str]) -> None:
        self._finish()

    def _finish(self) -> None:
        """Close whatever is still open: the timer, the socket, a TCP connection (attempt)."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.close()
        connecting = self._connecting
        if connecting is not None and not connecting.called:
            connecting.cancel()


class Resolver:
    """Resolve a host name to one IP address, honouring blackbox's ip protocol preference."""

    def __init__(
        self,
        reactor: IReactorTime,
        servers: Sequence[Server] | None = None,
        hosts_path: str = "/etc/hosts",
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self.clock = reactor
        self.fds = IReactorFDSet(reactor)
        self.tcp = IReactorTCP(reactor)
        self._hosts = HostsFile(hosts_path)
        self._servers = list(servers) if servers is not None else None
        self._resolv_conf = resolv_conf

    def _nameservers(self) -> list[Server]:
        if self._servers is None:
            found = read_nameservers(self._resolv_conf)
            if found:  # read once; a resolv.conf without nameservers is read again next time
                self._servers = found
            servers = found
        else:
            servers = self._servers
        if not servers:
            raise ResolveError(f"no nameserver in {self._resolv_conf}")
        return servers

    def resolve(
        self,
        host: str,
        preferred: str,
        fallback: bool,
        timeout: float,
        servers: Sequence[Server] | None = None,
    ) -> Deferred[str]:
        """Fire with an IP address string, or fail with ResolveError.

        ``servers`` (a module's ``dns_server``) are asked instead of resolv.conf's; the hosts
        file still comes first, as Go's resolver reads it whatever server it dials.
        """
        want = _family(preferred)
        order = [want, 10 - want] if fallback else [want]
        listed = self._hosts.lookup(host)
        if listed:
            for fam in order:
                for ip in listed:
                    if ipaddress.ip_address(ip).version == fam:
                        return defer.succeed(ip)
            return defer.fail(ResolveError(f"{host} in hosts file has no IPv{want} address"))
        try:
            servers = list(servers) if servers else self._nameservers()
            name = dns.domainString(host)
        except ResolveError as exc:
            return defer.fail(exc)
        except UnicodeError as exc:
            return defer.fail(ResolveError(f"{host}: not a valid DNS name: {exc}"))
        return _Lookup(self, servers, host, name, order, timeout).result


def _first_address(records: Sequence[dns.RRHeader], fam: int) -> str | None:
    want = dns.A if fam == 4 else dns.AAAA
    for rr in records:
        if rr.type == want:
            packed: bytes = getattr(rr.payload, "address", b"")
            return socket.inet_ntop(socket.AF_INET if fam == 4 else socket.AF_INET6, packed)
    return None
