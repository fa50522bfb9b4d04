"""DNS over HTTPS (``dns_over_https``; blackbox #647, RFC 8484) against a DoH server on loopback:
twisted.web over TLS answering from the test zone (tests/support/dns_zone.py ``DoHServer``).

blackbox has no DoH; what is checked is the RFC's exchange (POST ``application/dns-message``, or
GET ``?dns=``, DNS id 0) and that the answer is checked and reported as the dns prober's other
transports are: ``probe_dns_*`` from the DNS message, phases resolve/connect/request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter import blackbox
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probes import dns as dns_prober
from netprobe_exporter.resolver import Resolver
from tests.support.blackbox import parse_metrics
from tests.support.dns_zone import ZONE, DoHServer
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import make_certs


class DNSOverHTTPSTests(TestCase):
    def setUp(self) -> None:
        self.certs = make_certs(temp_path(self).parent / "certs")
        self.server = DoHServer(self.certs)
        self.addCleanup(self.server.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        )

    def module(self, extra: str = "", name: str = f"www.{ZONE}", ca: bool = True) -> Any:
        tls = f"      tls_config: {{ca_file: {self.certs.ca_cert}}}\n" if ca else ""
        text = (
            "modules:\n  doh:\n    prober: dns\n    dns:\n"
            f"      query_name: {name}\n      query_type: A\n"
            f"      preferred_ip_protocol: ip4\n      dns_over_https: true\n{tls}{extra}"
        )
        return parse_config(text, "doh.yml").modules["doh"]

    def probe(self, module: Any, target: str | None = None, timeout: float = 5.0) -> Any:
        return dns_prober.probe(self.ctx, target or self.server.url, module, timeout)

    @defer.inlineCallbacks
    def test_post_query_is_answered_and_reported_as_any_dns_answer(self) -> Any:
        r = yield self.probe(self.module())
        self.assertEqual((r.result, r.success), ("success", True), r.detail)
        [(method, path, kind, qid)] = self.server.requests
        self.assertEqual((method, path, kind, qid), ("POST", "/dns-query",
                         "application/dns-message", 0))  # fmt: skip
        metrics = parse_metrics(blackbox.render(r))
        self.assertEqual(metrics["probe_dns_answer_rrs"].samples[frozenset()], 1)
        self.assertEqual(metrics["probe_dns_query_succeeded"].samples[frozenset()], 1)
        phases = {dict(k)["phase"] for k in metrics["probe_dns_duration_seconds"].samples}
        self.assertEqual(phases, {"resolve", "connect", "request"})
        # the server's certificate, as https shows it
        self.assertIn("probe_ssl_earliest_cert_expiry", metrics)
        self.assertEqual(r.details.tls.version, "TLS 1.3")
        # the TLS handshake counts as connecting, as for DNS over TLS
        self.assertGreater(r.details.phases.connect, r.connect_duration)
        self.assertGreater(r.details.phases.request, 0)

    @defer.inlineCallbacks
    def test_get_sends_the_query_base64url_in_dns(self) -> Any:
        self.server.sized = True
        r = yield self.probe(self.module("      dns_over_https_method: GET\n"))
        self.assertTrue(r.success, r.detail)
        [(method, path, _, qid)] = self.server.requests
        self.assertEqual(method, "GET")
        self.assertTrue(path.startswith("/dns-query?dns="), path)
        self.assertNotIn("=", path.split("dns=", 1)[1])  # no padding (RFC 8484 section 4.1)
        self.assertEqual(qid, 0)

    @defer.inlineCallbacks
    def test_a_url_without_a_path_goes_to_dns_query(self) -> Any:
        base = self.server.url.removesuffix("/dns-query")
        r = yield self.probe(self.module(), target=base)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(self.server.requests[0][1], "/dns-query")

    @defer.inlineCallbacks
    def test_nxdomain_fails_on_the_rcode_with_the_answer_counted(self) -> Any:
        r = yield self.probe(self.module(name=f"nope.{ZONE}"))
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("rcode NXDOMAIN", r.detail)
        self.assertTrue(r.details.query_succeeded)

    @defer.inlineCallbacks
    def test_an_http_error_status_fails_the_query(self) -> Any:
        self.server.status = 500
        r = yield self.probe(self.module())
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("HTTP status 500", r.detail)
        self.assertFalse(r.details.query_succeeded)

    @defer.inlineCallbacks
    def test_an_answer_of_another_media_type_fails(self) -> Any:
        self.server.content_type = "text/html"
        r = yield self.probe(self.module())
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("Content-Type text/html", r.detail)

    @defer.inlineCallbacks
    def test_an_unknown_ca_is_a_tls_error(self) -> Any:
        r = yield self.probe(self.module(ca=False))
        self.assertEqual(r.result, "tls_error", r.detail)
        self.assertEqual(self.server.requests, [])

    @defer.inlineCallbacks
    def test_a_url_target_needs_dns_over_https(self) -> Any:
        text = f"modules:\n  d:\n    prober: dns\n    dns: {{query_name: www.{ZONE}}}\n"
        module = parse_config(text, "d.yml").modules["d"]
        r = yield self.probe(module)
        self.assertEqual(r.result, "error")
        self.assertIn("needs dns_over_https: true", r.detail)
