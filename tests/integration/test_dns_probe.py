"""The dns prober against a real authoritative server on loopback (twisted.names)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet import defer, ssl
from twisted.names import server
from twisted.trial.unittest import TestCase

from netprobe_exporter.blackbox import render
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probes import dns as dns_prober
from netprobe_exporter.resolver import Resolver
from tests.support.dns_zone import ZONE, _Zone, _ZoneServer
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import make_certs

MODULES = parse_config(
    f"""
modules:
  a: {{prober: dns, dns: {{query_name: www.{ZONE}, query_type: A, preferred_ip_protocol: ip4}}}}
  aaaa: {{prober: dns, dns: {{query_name: www.{ZONE}, query_type: AAAA}}}}
  mx:
    prober: dns
    dns:
      query_name: {ZONE}
      query_type: MX
      validate_answer_rrs:
        fail_if_not_matches_regexp: ["{ZONE}\\\\.\\t300\\tIN\\tMX\\t10 mail\\\\.{ZONE}\\\\."]
  mx_forbidden:
    prober: dns
    dns:
      query_name: {ZONE}
      query_type: MX
      validate_answer_rrs: {{fail_if_matches_regexp: ["mail"]}}
  soa: {{prober: dns, dns: {{query_name: {ZONE}, query_type: SOA}}}}
  nxdomain: {{prober: dns, dns: {{query_name: nope.{ZONE}, query_type: A}}}}
  nxdomain_ok:
    prober: dns
    dns: {{query_name: nope.{ZONE}, query_type: A, valid_rcodes: [NXDOMAIN]}}
  servfail: {{prober: dns, dns: {{query_name: servfail.{ZONE}, query_type: A}}}}
  big_udp: {{prober: dns, dns: {{query_name: big.{ZONE}, query_type: TXT}}}}
  big_tcp:
    prober: dns
    dns: {{query_name: big.{ZONE}, query_type: TXT, transport_protocol: tcp}}
  a_tcp:
    prober: dns
    dns: {{query_name: www.{ZONE}, query_type: A, transport_protocol: tcp}}
""",
    "dns.yml",
).modules


class DNSProbeTests(TestCase):
    def setUp(self) -> None:
        self.server = _ZoneServer()
        self.addCleanup(self.server.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        silent = SilentDNSServer()  # the prober must not need any resolver for an IP target
        self.addCleanup(silent.stop)
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        )

    def probe(self, module: str, timeout: float = 2.0, target: str | None = None) -> Any:
        return dns_prober.probe(self.ctx, target or self.server.address, MODULES[module], timeout)

    @defer.inlineCallbacks
    def test_a_and_aaaa(self) -> Any:
        for module in ("a", "aaaa", "a_tcp"):
            r = yield self.probe(module)
            self.assertEqual((r.result, r.success), ("success", True), r.detail)
            self.assertEqual(r.details.answer_rrs, 1)
            self.assertTrue(r.details.query_succeeded)
            self.assertGreater(r.details.phases.request, 0)
            self.assertEqual(
                {p for p, _ in r.details.phases.items()}, {"resolve", "connect", "request"}
            )
        self.assertGreater(r.details.phases.connect, 0)  # tcp: a real connect

    @defer.inlineCallbacks
    def test_mx_records_are_matched_as_blackbox_writes_them(self) -> Any:
        r = yield self.probe("mx")
        self.assertEqual(r.result, "success", r.detail)
        r = yield self.probe("mx_forbidden")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("Answer RRs validation failed", r.detail)

    @defer.inlineCallbacks
    def test_soa_serial(self) -> Any:
        r = yield self.probe("soa")
        self.assertEqual(r.result, "success", r.detail)
        self.assertEqual(r.details.serial, 2026112501)
        self.assertIn("probe_dns_serial 2.026112501e+09\n", render(r))

    @defer.inlineCallbacks
    def test_nxdomain_and_servfail_are_rcode_failures_unless_allowed(self) -> Any:
        r = yield self.probe("nxdomain")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("NXDOMAIN", r.detail)
        self.assertTrue(r.details.query_succeeded)  # the query itself worked
        r = yield self.probe("nxdomain_ok")
        self.assertEqual(r.result, "success", r.detail)
        r = yield self.probe("servfail")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("SERVFAIL", r.detail)
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_truncated_udp_answer_is_what_is_checked_and_tcp_gets_it_all(self) -> Any:
        udp = yield self.probe("big_udp")
        tcp = yield self.probe("big_tcp")
        self.assertEqual(tcp.details.answer_rrs, 10)
        self.assertEqual(tcp.result, "success")
        # truncated, and no retry over TCP (as blackbox): the partial answer is what is checked
        self.assertLess(udp.details.answer_rrs, 10)
        self.assertEqual(udp.result, "success")

    @defer.inlineCallbacks
    def test_a_server_that_never_answers_times_out(self) -> Any:
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        r = yield self.probe("a", timeout=0.3, target=f"127.0.0.1:{silent.port}")
        self.assertEqual(r.result, "timeout")
        self.assertFalse(r.details.query_succeeded)
        self.assertIn("probe_dns_query_succeeded 0\n", render(r))

    @defer.inlineCallbacks
    def test_closed_port_is_refused(self) -> Any:
        silent = SilentDNSServer()
        port = silent.port
        yield silent.stop()
        r = yield self.probe("a", timeout=1.0, target=f"127.0.0.1:{port}")
        self.assertEqual(r.result, "refused", r.detail)

    def test_config_needs_a_query_name(self) -> None:
        from netprobe_exporter.config import ConfigError

        with self.assertRaises(ConfigError) as info:
            parse_config("modules:\n  d:\n    prober: dns\n", "d.yml")
        self.assertIn("query name must be set for DNS module", str(info.exception))


class DNSOverTLSTests(TestCase):
    """dns_over_tls: the TCP exchange inside TLS, checked against a DoT server on loopback."""

    def setUp(self) -> None:
        self.certs = make_certs(temp_path(self))
        factory = server.DNSServerFactory(authorities=[_Zone()])
        factory.noisy = False
        pem = Path(self.certs.leaf_key).read_bytes() + Path(self.certs.leaf_cert).read_bytes()
        options = ssl.PrivateCertificate.loadPEM(pem).options()
        self.port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.address = f"127.0.0.1:{self.port.getHost().port}"
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        )

    def module(self, extra: str = "", transport: str = "tcp") -> Any:
        text = (
            "modules:\n  dot:\n    prober: dns\n    dns:\n"
            f"      query_name: www.{ZONE}\n      query_type: A\n"
            f"      transport_protocol: {transport}\n      dns_over_tls: true\n{extra}"
        )
        return parse_config(text, "dot.yml")

    @defer.inlineCallbacks
    def test_a_query_over_tls(self) -> Any:
        cfg = self.module(f"      tls_config: {{ca_file: {self.certs.ca_cert}}}\n")
        r = yield dns_prober.probe(self.ctx, self.address, cfg.modules["dot"], 3.0)
        self.assertEqual((r.result, r.success), ("success", True), r.detail)
        self.assertEqual(r.details.answer_rrs, 1)
        # the handshake counts as connecting: well over a bare loopback connect
        self.assertGreater(r.details.phases.connect, r.connect_duration)
        self.assertGreater(r.details.phases.request, 0)

    @defer.inlineCallbacks
    def test_an_unknown_ca_is_a_tls_error(self) -> Any:
        r = yield dns_prober.probe(self.ctx, self.address, self.module().modules["dot"], 3.0)
        self.assertEqual(r.result, "tls_error", r.detail)
        self.assertIn("TLS handshake failed", r.detail)
        self.assertFalse(r.details.query_succeeded)

    @defer.inlineCallbacks
    def test_udp_is_refused_and_the_default_port_is_853(self) -> Any:
        udp = self.module(transport="udp")
        self.assertTrue(any("needs transport_protocol: tcp" in w for w in udp.warnings))
        r = yield dns_prober.probe(self.ctx, self.address, udp.modules["dot"], 1.0)
        self.assertEqual(r.result, "error")
        self.assertIn("Expected transport protocol tcp for DoT", r.detail)
        ctx = dataclasses.replace(self.ctx, debug=True)
        r = yield dns_prober.probe(ctx, "127.0.0.1", self.module().modules["dot"], 1.0)
        log = "\n".join(str(line) for line in r.log)
        self.assertIn("127.0.0.1:853", log)
        self.assertIn("tcp-tls", log)
