"""Name resolution that never blocks the reactor.

The hosts file is consulted first, as the system resolver does; a name found there is never
sent to DNS (so ``localhost`` works without a DNS server, and a missing AAAA for it does not
leak a query). Other names go to the ``nameserver`` entries of resolv.conf, without a cache:
each probe resolves afresh, so a DNS change is seen at the next probe (continuous mode's
``dnscache.CachingResolver`` keeps answers for their TTL on top of this one). The system resolver
(getaddrinfo in a thread) is avoided: it would hold the GIL and skew every latency measured on
the reactor thread.

The DNS client is our own, on ``twisted.names.dns`` messages: one UDP socket per query (a
fresh port and a random id, a reply checked against both and against the question), the
answer asked again over TCP when it comes back truncated, one deadline for the whole
resolution, and cancellation that closes the socket and disarms the timer at once. Each probe
asks on its own: cancelling one probe's lookup never touches another's, even for one name.
``Resolver.query`` asks one family's question and returns its ``Answer``; ``resolve`` (one
address, blackbox's family preference) and ``resolve_all`` (every address) are built on it, so
a subclass that answers ``query`` from a cache serves both.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    """The name did not resolve to an address of an allowed family.

    ``answered``: a server's answer (SERVFAIL, REFUSED, NXDOMAIN, no address), which holds for
    a while and may be cached briefly; False for a timeout, a socket or send failure, no
    nameserver: those say nothing about the name.
    """

    def __init__(self, text: str, answered: bool = False) -> None:
        super().__init__(text)
        self.answered = answered


@dataclass(frozen=True, slots=True)
class Answer:
    """One address family's DNS answer: what a cache keeps of it."""

    #: the addresses of that family, in answer order, each once
    addresses: tuple[str, ...]
    #: seconds it holds: the smallest TTL of the answer's records (CNAMEs included); for a
    #: negative answer RFC 2308's min(SOA TTL, SOA minimum); None: negative without an SOA
    ttl: float | None
    #: the name does not exist (no family has an address)
    nxdomain: bool = False


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


class _Query:
    """One family's question to the first nameserver it can be sent to, under one deadline,
    cancellable throughout.

    Plain callbacks rather than a coroutine: they cost a fraction of the CPU per lookup.
    """

    def __init__(
        self,
        resolver: Resolver,
        servers: Sequence[Server],
        host: str,
        name: bytes,
        family: int,
        timeout: float,
    ) -> None:
        self._resolver = resolver
        self._servers = servers
        self._host = host
        self._family = family
        self._question = _Question(name, dns.AAAA if family == 6 else dns.A)
        self._exchange: _UDPExchange | _TCPExchange | None = None
        self._connecting: Deferred[_TCPExchange] | None = None
        self.result: Deferred[Answer] = Deferred(self._cancelled)
        self._server: Server = servers[0]
        timeout = max(timeout, 0.001)
        self._deadline = resolver.clock.seconds() + timeout
        self._timer: IDelayedCall | None = resolver.clock.callLater(timeout, self._timed_out)
        self._send()

    def _send(self) -> None:
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
            self._resolver.queries += 1
            return
        self._fail(f"{self._host}: {why}")

    def _answered(self, message: dns.Message) -> None:
        self._exchange = None
        if message.trunc and self._connecting is None:
            self._over_tcp()
            return
        if message.rCode == dns.ENAME:
            self._succeed(Answer((), _negative_ttl(message), nxdomain=True))
        elif message.rCode != dns.OK:
            kind = _RCODE_NAMES.get(message.rCode, error.DNSUnknownError.__name__)
            self._fail(f"{self._host}: DNS error: {kind}", answered=True)
        else:
            found = _addresses(message.answers, self._family)
            if found:
                ttl: float | None = float(min(rr.ttl for rr in message.answers))
            else:
                ttl = _negative_ttl(message)
            self._succeed(Answer(found, ttl))

    def _over_tcp(self) -> None:
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

    def _succeed(self, answer: Answer) -> None:
        if not self.result.called:
            self._finish()
            self.result.callback(answer)

    def _fail(self, text: str, answered: bool = False) -> None:
        if not self.result.called:
            self._finish()
            self.result.errback(ResolveError(text, answered))

    def _cancelled(self, _: Deferred[Answer]) -> None:
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


def _unexpected(host: str, reason: Failure) -> ResolveError:
    """A query's failure as a ResolveError (a query fails with nothing else but a bug)."""
    if isinstance(reason.value, ResolveError):
        return reason.value
    return ResolveError(f"{host}: {reason.getErrorMessage()}")


class _Resolution:
    """``resolve``: each address family in turn under one deadline, the first address found;
    cancellable throughout (a cancel cancels the query in flight)."""

    def __init__(
        self,
        resolver: Resolver,
        host: str,
        order: list[int],
        timeout: float,
        servers: Sequence[Server] | None,
    ) -> None:
        self._resolver = resolver
        self._host = host
        self._order = order
        self._servers = servers
        self._family = 0
        self._pending: Deferred[Answer] | None = None
        self._last = f"{host}: no address"
        self.result: Deferred[str] = Deferred(self._cancelled)
        self._deadline = resolver.clock.seconds() + max(timeout, 0.001)
        self._next_family()

    def _next_family(self) -> None:
        if not self._order:
            self.result.errback(ResolveError(self._last, answered=True))
            return
        self._family = self._order.pop(0)
        left = self._deadline - self._resolver.clock.seconds()
        d = self._pending = self._resolver.query(self._host, self._family, left, self._servers)
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, answer: Answer) -> None:
        self._pending = None
        if answer.nxdomain:
            text = f"{self._host}: no such host (NXDOMAIN)"
            self.result.errback(ResolveError(text, answered=True))
        elif answer.addresses:
            self.result.callback(answer.addresses[0])
        else:
            self._last = f"{self._host}: no IPv{self._family} address"
            self._next_family()

    def _failed(self, reason: Failure) -> None:
        self._pending = None
        if not self.result.called and not reason.check(defer.CancelledError):
            self.result.errback(_unexpected(self._host, reason))

    def _cancelled(self, _: Deferred[str]) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()


class _Gather:
    """``resolve_all``: every family asked at once under one deadline; their addresses in
    ``families`` order once all have answered; one family's failure fails the whole."""

    def __init__(
        self,
        resolver: Resolver,
        host: str,
        families: tuple[int, ...],
        timeout: float,
        servers: Sequence[Server] | None,
    ) -> None:
        self._host = host
        self._families = families
        self._outcomes: dict[int, Answer | ResolveError] = {}
        self._pending: dict[int, Deferred[Answer]] = {}
        self.result: Deferred[list[str]] = Deferred(self._cancelled)
        for family in families:
            d = self._pending[family] = resolver.query(host, family, timeout, servers)
            d.addCallbacks(
                self._answered, self._failed, callbackArgs=(family,), errbackArgs=(family,)
            )

    def _answered(self, answer: Answer, family: int) -> None:
        self._done(family, answer)

    def _failed(self, reason: Failure, family: int) -> None:
        if not self.result.called and not reason.check(defer.CancelledError):
            self._done(family, _unexpected(self._host, reason))

    def _done(self, family: int, outcome: Answer | ResolveError) -> None:
        self._pending.pop(family, None)
        self._outcomes[family] = outcome
        if len(self._outcomes) < len(self._families):
            return
        answers = [self._outcomes[f] for f in self._families]
        found = [ip for a in answers if isinstance(a, Answer) for ip in a.addresses]
        errors = [a for a in answers if isinstance(a, ResolveError)]
        if any(isinstance(a, Answer) and a.nxdomain for a in answers):
            text = f"{self._host}: no such host (NXDOMAIN)"
            self.result.errback(ResolveError(text, answered=True))
        elif errors:
            # every address means every family's answer: one family's timeout or server error
            # fails the whole, rather than making that family's addresses look gone
            self.result.errback(errors[0])
        elif found:
            self.result.callback(found)
        else:
            text = f"{self._host}: no {_family_names(self._families)} address"
            self.result.errback(ResolveError(text, answered=True))

    def _cancelled(self, _: Deferred[list[str]]) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.cancel()


def _family_names(families: Sequence[int]) -> str:
    return " or ".join(f"IPv{f}" for f in families)


class Resolver:
    """Resolve a host name to one IP address, honouring blackbox's ip protocol preference,
    or to every address of some families (``resolve_all``)."""

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
        #: DNS queries sent (one per family asked; the TCP retry of a truncated one is not)
        self.queries = 0

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
        return _Resolution(self, host, order, timeout, servers).result

    def resolve_all(
        self,
        host: str,
        families: tuple[int, ...],
        timeout: float,
        servers: Sequence[Server] | None = None,
    ) -> Deferred[list[str]]:
        """Fire with every address of ``host`` of ``families`` (4, 6), in ``families`` order
        and each family's in answer order, or fail with ResolveError.

        The families are asked at once, under one deadline; one that fails (a timeout, a
        server's error) fails the whole, so that its addresses never look gone. The hosts
        file comes first, as in ``resolve``; an IP address is its own answer.
        """
        wanted = tuple(dict.fromkeys(families))
        names = _family_names(wanted)
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            pass
        else:
            if literal.version in wanted:
                return defer.succeed([host])
            return defer.fail(ResolveError(f"{host}: not an {names} address"))
        if not wanted:
            return defer.fail(ResolveError(f"{host}: no address family asked for"))
        listed = self._hosts.lookup(host)
        if listed:
            found = [ip for fam in wanted for ip in listed if _version(ip) == fam]
            if found:
                return defer.succeed(list(dict.fromkeys(found)))
            return defer.fail(ResolveError(f"{host} in hosts file has no {names} address"))
        return _Gather(self, host, wanted, timeout, servers).result

    def query(
        self,
        host: str,
        family: int,
        timeout: float,
        servers: Sequence[Server] | None = None,
    ) -> Deferred[Answer]:
        """One DNS question: ``host``'s addresses of ``family`` (4 or 6), within ``timeout``.
        NXDOMAIN and no address are Answers; a
        server's error, a timeout or a socket problem fail with ResolveError. The hosts
        file is not read here."""
        try:
            asked = list(servers) if servers else self._nameservers()
            name = dns.domainString(host)
        except ResolveError as exc:
            return defer.fail(exc)
        except UnicodeError as exc:
            return defer.fail(ResolveError(f"{host}: not a valid DNS name: {exc}"))
        return _Query(self, asked, host, name, family, timeout).result


def _version(ip: str) -> int:
    return 6 if ":" in ip else 4


def _addresses(records: Sequence[dns.RRHeader], fam: int) -> tuple[str, ...]:
    """The answer's addresses of family ``fam``, in answer order, each once."""
    want = dns.A if fam == 4 else dns.AAAA
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    found: dict[str, None] = {}
    for rr in records:
        if rr.type == want:
            packed: bytes = getattr(rr.payload, "address", b"")
            found[socket.inet_ntop(af, packed)] = None
    return tuple(found)


def _negative_ttl(message: dns.Message) -> float | None:
    """RFC 2308 section 5: a negative answer holds for min(SOA TTL, SOA minimum) of the
    authority section's SOA; None without one."""
    for rr in message.authority:
        if rr.type == dns.SOA:
            minimum: int = getattr(rr.payload, "minimum", 0)
            return float(min(rr.ttl, minimum))
    return None
