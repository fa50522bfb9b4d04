"""Name resolution that never blocks the reactor.

The hosts file is consulted first, as the system resolver does; a name found there is never
sent to DNS (so ``localhost`` works without a DNS server, and a missing AAAA for it does not
leak a query). Other names go to the ``nameserver`` entries of resolv.conf through
``twisted.names``, without a cache: each probe resolves afresh, so a DNS change is seen at the
next probe. The system resolver (getaddrinfo in a thread) is avoided: it would hold the GIL and
skew every latency measured on the reactor thread.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.names import client, dns, error


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


class _CancellableClient(client.Resolver):
    """``client.Resolver`` whose UDP queries can be cancelled without leaving timers behind.

    Twisted's DNSDatagramProtocol.query returns a Deferred with no canceller, so cancelling a
    probe mid-lookup would leave the query's timeout armed and its socket open until it fires.
    Each query has a protocol (and socket) of its own, so cancelling can tear down all of it.
    """

    def _query(self, *args: Any) -> Deferred[Any]:
        addr = args[0][0]
        interface = "::" if ":" in addr else ""
        protocol = self._connectedProtocol(interface=interface)

        def cancel(_: Deferred[Any]) -> None:
            for _, call in list(protocol.liveMessages.values()):
                if call.active():
                    call.cancel()
            protocol.liveMessages.clear()
            inner.cancel()

        inner: Deferred[Any] = protocol.query(*args)
        outer: Deferred[Any] = Deferred(cancel)

        def done(result: Any) -> None:
            protocol.transport.stopListening()
            if not outer.called:
                outer.callback(result)

        inner.addBoth(done)
        return outer

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        # Twisted merges identical queries in flight, so cancelling one probe's lookup would
        # cancel every other probe waiting on that name. Each probe asks on its own.
        d: Deferred[Any] = self.queryUDP([dns.Query(name, type, cls)], timeout)
        d.addCallback(self.filterAnswers)
        return d


class Resolver:
    """Resolve a host name to one IP address, honouring blackbox's ip protocol preference."""

    def __init__(
        self,
        reactor: Any,
        servers: Sequence[tuple[str, int]] | None = None,
        hosts_path: str = "/etc/hosts",
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self._reactor = reactor
        self._hosts = HostsFile(hosts_path)
        self._servers = list(servers) if servers is not None else None
        self._resolv_conf = resolv_conf
        self._client: client.Resolver | None = None

    def _dns(self) -> client.Resolver:
        if self._client is None:
            servers = self._servers
            if servers is None:
                servers = read_nameservers(self._resolv_conf)
            if not servers:
                raise ResolveError(f"no nameserver in {self._resolv_conf}")
            self._client = _CancellableClient(servers=servers, reactor=self._reactor)
        return self._client

    def resolve(self, host: str, preferred: str, fallback: bool, timeout: float) -> Deferred[str]:
        """Fire with an IP address string, or fail with ResolveError."""
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
            dns_client = self._dns()
        except ResolveError as exc:
            return defer.fail(exc)
        return self._query(dns_client, host, order, timeout)

    def _query(
        self, dns_client: client.Resolver, host: str, order: list[int], timeout: float
    ) -> Deferred[str]:
        return Deferred.fromCoroutine(self._lookup(dns_client, host, order, timeout))

    async def _lookup(
        self, dns_client: client.Resolver, host: str, order: list[int], timeout: float
    ) -> str:
        # One deadline for the whole resolution: twisted.names applies a timeout per
        # nameserver, so N dead nameservers would otherwise cost N timeouts.
        deadline = self._reactor.seconds() + timeout
        last = f"{host}: no address"
        for fam in order:
            lookup = dns_client.lookupIPV6Address if fam == 6 else dns_client.lookupAddress
            remaining = max(deadline - self._reactor.seconds(), 0.001)
            query = lookup(host, timeout=(remaining,))
            query.addTimeout(remaining, self._reactor)
            try:
                answers = await query
            except error.DNSNameError:
                raise ResolveError(f"{host}: no such host (NXDOMAIN)") from None
            except (defer.TimeoutError, error.DNSQueryTimeoutError):
                raise ResolveError(f"{host}: DNS timeout") from None
            except error.DomainError as exc:
                raise ResolveError(f"{host}: DNS error: {type(exc).__name__}") from None
            ip = _first_address(answers[0], fam)
            if ip is not None:
                return ip
            last = f"{host}: no IPv{fam} address"
        raise ResolveError(last)


def _first_address(records: Sequence[dns.RRHeader], fam: int) -> str | None:
    want = dns.A if fam == 4 else dns.AAAA
    for rr in records:
        if rr.type == want:
            packed: bytes = getattr(rr.payload, "address", b"")
            return socket.inet_ntop(socket.AF_INET if fam == 4 else socket.AF_INET6, packed)
    return None
