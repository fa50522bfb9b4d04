"""``dns_server``/``dns_timeout`` per prober section (blackbox PR #1443, docs of PR #1542): the
target's name is resolved through that server instead of the system's.

The system resolver here is a DNS server that knows no name; the test zone (tests/support/
dns_zone.py) knows ``loopback.example.test`` (127.0.0.1). A target of that name resolves in a
module with ``dns_server`` pointing at the zone, and fails without it. The modules follow
PR #1542's example (``http_custom_dns_server``: ``dns_server: "IP:53"``, ``dns_timeout: 10s``),
pointed at the loopback zone.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter import blackbox
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, dns, http, tcp, websocket
from netprobe_exporter.resolver import Resolver
from tests.support.dns_zone import LOOPBACK, _ZoneServer
from tests.support.loopback import LocalDNSServer, SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import Conn, WSConn, http_server, tcp_server, websocket_server


def _modules(zone: str, silent: str) -> Any:
    return parse_config(
        f"""
modules:
  http_custom_dns_server:
    prober: http
    http:
      method: GET
      preferred_ip_protocol: ip4
      dns_server: "{zone}"
      dns_timeout: 10s
  http_system_dns:
    prober: http
    http: {{preferred_ip_protocol: ip4}}
  tcp_custom_dns_server:
    prober: tcp
    tcp: {{preferred_ip_protocol: ip4, dns_server: "{zone}"}}
  tcp_system_dns:
    prober: tcp
    tcp: {{preferred_ip_protocol: ip4}}
  tcp_silent_dns_server:
    prober: tcp
    tcp: {{preferred_ip_protocol: ip4, dns_server: "{silent}", dns_timeout: 300ms}}
  ws_custom_dns_server:
    prober: websocket
    websocket: {{preferred_ip_protocol: ip4, dns_server: "{zone}"}}
  dns_custom_dns_server:
    prober: dns
    dns:
      query_name: www.example.test
      query_type: A
      preferred_ip_protocol: ip4
      dns_server: "{zone}"
""",
        "dns_server.yml",
    ).modules


def _hold(conn: Conn) -> None:
    conn.drain(2.0)


class DNSServerOptionTests(TestCase):
    def setUp(self) -> None:
        self.zone = _ZoneServer()
        self.addCleanup(self.zone.stop)
        self.system = LocalDNSServer({})  # the system's nameserver: it knows no name
        self.addCleanup(self.system.stop)
        self.silent = SilentDNSServer()
        self.addCleanup(self.silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.system.address], hosts_path=str(hosts))
        )
        silent = f"{self.silent.address[0]}:{self.silent.address[1]}"
        self.modules = _modules(self.zone.address, silent)

    @defer.inlineCallbacks
    def test_http_target_resolves_through_the_modules_dns_server(self) -> Any:
        with http_server() as server:
            url = f"http://{LOOPBACK}:{server.port}/"
            via = yield http.probe(self.ctx, url, self.modules["http_custom_dns_server"], 5)
            system = yield http.probe(self.ctx, url, self.modules["http_system_dns"], 5)
        self.assertTrue(via.success, via.detail)
        self.assertEqual(via.ip, "127.0.0.1")
        self.assertEqual((system.success, system.result), (False, "dns_error"), system.detail)
        self.assertIn("probe_dns_lookup_time_seconds", blackbox.render(via))

    @defer.inlineCallbacks
    def test_tcp_target_resolves_through_the_modules_dns_server(self) -> Any:
        with tcp_server(_hold) as server:
            target = f"{LOOPBACK}:{server.port}"
            via = yield tcp.probe(self.ctx, target, self.modules["tcp_custom_dns_server"], 5)
            system = yield tcp.probe(self.ctx, target, self.modules["tcp_system_dns"], 5)
        self.assertTrue(via.success, via.detail)
        self.assertEqual(system.result, "dns_error", system.detail)
        self.assertIn("no such host", system.detail)

    @defer.inlineCallbacks
    def test_the_hosts_file_still_comes_first(self) -> Any:
        with tcp_server(_hold) as server:
            target = f"localhost:{server.port}"
            r = yield tcp.probe(self.ctx, target, self.modules["tcp_silent_dns_server"], 5)
        self.assertTrue(r.success, r.detail)

    @defer.inlineCallbacks
    def test_dns_timeout_bounds_the_lookup(self) -> Any:
        started = time.monotonic()
        target = f"{LOOPBACK}:9"
        r = yield tcp.probe(self.ctx, target, self.modules["tcp_silent_dns_server"], 5)
        took = time.monotonic() - started
        self.assertEqual(r.result, "dns_error", r.detail)
        self.assertIn("DNS timeout", r.detail)
        self.assertLess(took, 3.0)  # 300ms, not the probe's 5s

    @defer.inlineCallbacks
    def test_websocket_target_resolves_through_the_modules_dns_server(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.until_closed(5.0)

        with websocket_server(peer) as server:
            url = f"ws://{LOOPBACK}:{server.port}/"
            r = yield websocket.probe(self.ctx, url, self.modules["ws_custom_dns_server"], 5)
        self.assertTrue(r.success, r.detail)

    @defer.inlineCallbacks
    def test_dns_prober_finds_its_server_through_dns_server(self) -> Any:
        port = self.zone.address.rsplit(":", 1)[1]
        target = f"{LOOPBACK}:{port}"
        r = yield dns.probe(self.ctx, target, self.modules["dns_custom_dns_server"], 5)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(r.ip, "127.0.0.1")
        self.assertEqual(r.details.answer_rrs, 1)
