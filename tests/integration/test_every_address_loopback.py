"""``every_address`` on loopback with the real resolver, tcp and http probers: no namespace.

A DNS server on 127.0.0.1 answers ``every.example.test`` with 127.0.0.1, 127.0.0.2, 127.0.0.3
(and ::1 where the machine has IPv6 loopback); a twisted.web site listens on one port on
127.0.0.1, 127.0.0.2 (and ::1), so 127.0.0.3 refuses. The module comes from YAML with
``every_address: true`` and no ``dns_server``: the Resolver's own servers are that DNS server.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from netprobe_exporter.config import parse_config
from netprobe_exporter.model import Module, ProbeResult
from netprobe_exporter.probes import ProbeContext, registry
from netprobe_exporter.probes.everyaddress import run_module
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import LocalDNSServer, temp_path, write_file
from tests.support.reactor import reactor

NAME = "every.example.test"
LISTENING = ["127.0.0.1", "127.0.0.2"]
REFUSING = "127.0.0.3"
_PORT_TRIES = 20

MODULES = """
modules:
  tcp_every:
    prober: tcp
    timeout: 5s
    every_address: true
  http_every:
    prober: http
    timeout: 5s
    every_address: true
    http: {preferred_ip_protocol: ip4}
"""


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _HostRecorder(resource.Resource):
    """Answers 200 and records (local address, Host header) of every request."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def render_GET(self, request: Any) -> bytes:
        host = request.getHeader(b"host")
        self.seen.append((request.getHost().host, host.decode() if host else ""))
        return b"ok"


class EveryAddressLoopbackTests(TestCase):
    def setUp(self) -> None:
        self.v6 = has_ipv6_loopback()
        self.listening = [*LISTENING, *(["::1"] if self.v6 else [])]
        self.dns = LocalDNSServer({NAME: [*LISTENING, REFUSING, *(["::1"] if self.v6 else [])]})
        self.addCleanup(self.dns.stop)
        self.site = _HostRecorder()
        self.port = self._listen(server.Site(self.site))
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        resolver = Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        self.ctx = ProbeContext(reactor, resolver)
        self.modules = parse_config(MODULES, "every.yml").modules

    def _listen(self, factory: server.Site) -> int:
        """One port on every listening address (refused on 127.0.0.3)."""
        for _ in range(_PORT_TRIES):
            first = reactor.listenTCP(0, factory, interface=self.listening[0])
            port: int = first.getHost().port
            ports = [first]
            try:
                for ip in self.listening[1:]:
                    ports.append(reactor.listenTCP(port, factory, interface=ip))
            except CannotListenError:
                for p in ports:
                    p.stopListening()
                continue
            for p in ports:
                self.addCleanup(p.stopListening)
            return port
        raise RuntimeError("no port free on every loopback address")

    def probe(self, target: str, module: str) -> Any:
        m: Module = self.modules[module]
        return run_module(registry(), self.ctx, target, m, m.timeout)

    def assert_per_address(self, r: ProbeResult) -> dict[str, ProbeResult]:
        self.assertIsNotNone(r.addresses)
        by_ip = dict(r.addresses or [])
        self.assertEqual(set(by_ip), {*self.listening, REFUSING})
        for ip in self.listening:
            self.assertTrue(by_ip[ip].success, (ip, by_ip[ip].detail))
            self.assertEqual(by_ip[ip].ip, ip)
        refused = by_ip[REFUSING]
        self.assertEqual((refused.success, refused.result), (False, "refused"), refused.detail)
        self.assertFalse(r.success)
        self.assertEqual(r.result, "refused")
        self.assertIn(f"1 of {len(by_ip)} addresses failed", r.detail)
        return by_ip

    @defer.inlineCallbacks
    def test_tcp_probes_every_address_and_names_the_refused_one(self) -> Any:
        r = yield self.probe(f"{NAME}:{self.port}", "tcp_every")
        self.assert_per_address(r)
        self.assertIn(REFUSING, r.detail)
        # one question per family, not one per address
        self.assertEqual(sorted(t for _, t in self.dns.queries), [1, 28])

    @defer.inlineCallbacks
    def test_http_keeps_the_name_in_the_host_header_at_every_address(self) -> Any:
        r = yield self.probe(f"http://{NAME}:{self.port}/", "http_every")
        by_ip = self.assert_per_address(r)
        for ip in self.listening:
            self.assertEqual(by_ip[ip].result, "success")
        # each listening address got one request, and its Host header was the name
        self.assertEqual(sorted(ip for ip, _ in self.site.seen), sorted(self.listening))
        self.assertEqual({h for _, h in self.site.seen}, {f"{NAME}:{self.port}"})
