"""In-process helpers on the real reactor: DNS servers on 127.0.0.1, timers and temp files.

Every DNS query of a test goes to a twisted.names server started here on 127.0.0.1; the system's
nameserver is never used.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.names import common, dns, error, server
from twisted.trial.unittest import TestCase

from tests.support.reactor import reactor

_LISTEN_TRIES = 20


class _RecordResolver(common.ResolverBase):
    """Answers A and AAAA from a dict, NXDOMAIN for unknown names, and counts the queries."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.records = {k.lower().rstrip("."): list(v) for k, v in records.items()}
        self.queries: list[tuple[str, int]] = []

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Any
    ) -> Deferred[tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]]:
        text = name.decode("ascii", "replace")
        self.queries.append((text, type))
        ips = self.records.get(text.lower().rstrip("."))
        if ips is None:
            return defer.fail(error.DNSNameError(text))
        answers: list[dns.RRHeader] = []
        for ip in ips:
            version = ipaddress.ip_address(ip).version
            if type == dns.A and version == 4:
                payload: Any = dns.Record_A(ip, 60)
            elif type == dns.AAAA and version == 6:
                payload = dns.Record_AAAA(ip, 60)
            else:
                continue
            answers.append(dns.RRHeader(name, type, dns.IN, 60, payload, auth=True))
        return defer.succeed((answers, [], []))


class LocalDNSServer:
    """A twisted.names server on 127.0.0.1 (UDP and TCP, same port) serving ``records``."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.resolver = _RecordResolver(records)
        factory = server.DNSServerFactory(authorities=[self.resolver])
        factory.noisy = False
        self._ports: list[Any] = []
        for _ in range(_LISTEN_TRIES):
            udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
            port: int = udp.getHost().port
            try:
                tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
            except CannotListenError:
                udp.stopListening()
                continue
            self._ports = [udp, tcp]
            self.port = port
            return
        raise RuntimeError("could not bind a DNS server on 127.0.0.1")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def queries(self) -> list[tuple[str, int]]:
        return self.resolver.queries

    def stop(self) -> Deferred[Any]:
        ports, self._ports = self._ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


class _Drop(DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1


class SilentDNSServer:
    """A UDP socket on 127.0.0.1 that reads queries and never answers."""

    def __init__(self) -> None:
        self.protocol = _Drop()
        self._port = reactor.listenUDP(0, self.protocol, interface="127.0.0.1")
        self.port: int = self._port.getHost().port

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> Deferred[Any]:
        return defer.maybeDeferred(self._port.stopListening)


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def leftover_timers() -> list[str]:
    """Active timers other than trial's own test timeout and calls due now (callLater(0))."""
    soon = reactor.seconds() + 0.01
    return [
        repr(c)
        for c in reactor.getDelayedCalls()
        if c.active() and c.getTime() > soon and "onTimeout" not in repr(c.func)
    ]


def temp_path(case: TestCase) -> Path:
    """A fresh path in a private temp directory removed after the test.

    (``TestCase.mktemp`` would create directories under the current directory when run by pytest.)
    """
    d = Path(tempfile.mkdtemp(prefix="netprobe-test-"))
    case.addCleanup(shutil.rmtree, d, True)
    return d / "file"


def write_file(path: Path, text: str, mtime: float | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
