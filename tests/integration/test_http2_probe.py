"""The http prober over HTTP/2 against Twisted's own HTTP/2 server (TLS + ALPN) on loopback."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.model import Module
from netprobe_exporter.probes import ProbeContext, ProbeResult
from netprobe_exporter.probes import http as http_prober
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import LocalDNSServer, leftover_timers, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import BODY_OK, make_certs
from tests.support.web_peers import GZIP_TEXT, bb_values, twisted_site


def _module(certs: Any, extra: str = "") -> Module:
    text = (
        "modules:\n  m:\n    prober: http\n    http:\n"
        f"      preferred_ip_protocol: ip4\n      tls_config: {{ca_file: {certs.ca_cert}}}\n"
        f"{extra}"
    )
    return parse_config(text, "m.yml").modules["m"]


class HTTP2Probe(TestCase):
    def setUp(self) -> None:
        dns = LocalDNSServer({})
        self.addCleanup(dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[dns.address], hosts_path=str(hosts)), True
        )
        self.certs = make_certs(temp_path(self))

    def site(self, tls: bool = True, h2: bool = True) -> str:
        port = twisted_site(reactor, self.certs if tls else None, h2)
        self.addCleanup(port.stopListening)
        scheme = "https" if tls else "http"
        return f"{scheme}://localhost:{port.getHost().port}"

    def probe(self, url: str, extra: str = "", timeout: float = 5.0) -> Deferred[ProbeResult]:
        return http_prober.probe(self.ctx, url, _module(self.certs, extra), timeout)

    async def test_h2_when_enabled_and_offered(self) -> None:
        result = await self.probe(self.site() + "/ok")
        assert result.success, result.detail
        bb = bb_values(result)
        assert bb["probe_http_version"] == 2.0
        assert bb["probe_http_status_code"] == 200
        assert bb["probe_http_content_length"] == len(BODY_OK)
        assert bb["probe_http_ssl"] == 1.0
        # the server's own timers (Twisted's HTTP date, its idle timeout) are not the prober's
        server_side = ("HTTPFactory", "TimeoutMixin")
        assert [t for t in leftover_timers() if not any(s in t for s in server_side)] == []

    async def test_http11_when_disabled(self) -> None:
        result = await self.probe(self.site() + "/ok", "      enable_http2: false\n")
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 1.1

    async def test_http11_when_the_server_lacks_h2(self) -> None:
        result = await self.probe(self.site(h2=False) + "/ok")
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 1.1

    async def test_plain_http_is_never_h2(self) -> None:
        result = await self.probe(self.site(tls=False) + "/ok")
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 1.1

    async def test_redirect_and_body_regex_over_h2(self) -> None:
        extra = "      fail_if_body_not_matches_regexp: ['^hello']\n"
        result = await self.probe(self.site() + "/redirect", extra)
        assert result.success, result.detail
        bb = bb_values(result)
        assert (bb["probe_http_version"], bb["probe_http_redirects"]) == (2.0, 1.0)
        rule = "      fail_if_body_matches_regexp: [netprobe]\n"
        failing = await self.probe(self.site() + "/ok", rule)
        assert not failing.success
        assert bb_values(failing)["probe_failed_due_to_regex"] == 1.0

    async def test_gzip_over_h2(self) -> None:
        result = await self.probe(self.site() + "/gzip", "      compression: gzip\n")
        assert result.success, result.detail
        bb = bb_values(result)
        assert bb["probe_http_version"] == 2.0
        assert bb["probe_http_uncompressed_body_length"] == len(GZIP_TEXT)

    async def test_status_and_version_rules(self) -> None:
        result = await self.probe(self.site() + "/error")
        assert not result.success
        assert bb_values(result)["probe_http_status_code"] == 500
        only11 = await self.probe(self.site() + "/ok", "      valid_http_versions: [HTTP/1.1]\n")
        assert not only11.success and "HTTP/2.0" in only11.detail
        only2 = await self.probe(self.site() + "/ok", "      valid_http_versions: [HTTP/2.0]\n")
        assert only2.success, only2.detail

    async def test_body_size_limit_over_h2(self) -> None:
        result = await self.probe(self.site() + "/gzip", "      body_size_limit: 10B\n")
        assert not result.success
        assert "too large" in result.detail

    async def test_phases_are_set(self) -> None:
        result = await self.probe(self.site() + "/ok")
        assert result.success, result.detail
        assert isinstance(result.details, http_prober.HTTPDetails)
        assert result.details.phases is not None
        phases = dict(result.details.phases.items())
        assert phases["tls"] > 0 and phases["processing"] > 0

    async def test_h2_with_insecure_skip_verify(self) -> None:
        """The unverified path builds its own OpenSSL connection: it must offer ALPN too."""
        module = parse_config(
            "modules:\n  m: {prober: http, http: {preferred_ip_protocol: ip4, "
            "tls_config: {insecure_skip_verify: true}}}\n",
            "m.yml",
        ).modules["m"]
        result = await http_prober.probe(self.ctx, self.site() + "/ok", module, 5.0)
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 2.0
