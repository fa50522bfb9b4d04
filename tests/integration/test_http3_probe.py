"""The http prober over HTTP/3 (``enable_http3``) against aioquic's HTTP/3 server on loopback.

The server runs in a thread of the test with its own asyncio loop; the prober drives QUIC from
the reactor alone. The module is blackbox 0.28's ``http_3xx`` of its ``blackbox.yml`` (as its
CONFIGURATION.md asks: ``enable_http3: true`` with ``enable_http2: false`` and only
``HTTP/3.0`` valid), plus the test CA.
"""

from __future__ import annotations

import socket
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
from tests.support.web_peers import GZIP_TEXT, H3Server, bb_values, twisted_site

HTTP_3XX = """modules:
  m:
    prober: http
    http:
      preferred_ip_protocol: "ip4"
      enable_http3: true
      enable_http2: false
      valid_http_versions: ["HTTP/3.0"]
"""


def _module(certs: Any, extra: str = "") -> Module:
    text = HTTP_3XX + f"      tls_config: {{ca_file: {certs.ca_cert}}}\n{extra}"
    return parse_config(text, "m.yml").modules["m"]


class HTTP3Probe(TestCase):
    def setUp(self) -> None:
        dns = LocalDNSServer({})
        self.addCleanup(dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[dns.address], hosts_path=str(hosts)), True
        )
        self.certs = make_certs(temp_path(self))

    def server(self) -> H3Server:
        found = H3Server(self.certs.leaf_chain, self.certs.leaf_key).start()
        self.addCleanup(found.stop)
        return found

    def probe(self, url: str, extra: str = "", timeout: float = 5.0) -> Deferred[ProbeResult]:
        return http_prober.probe(self.ctx, url, _module(self.certs, extra), timeout)

    async def test_h3_version_status_and_body(self) -> None:
        server = self.server()
        extra = "      fail_if_body_not_matches_regexp: ['^hello']\n"
        result = await self.probe(f"https://localhost:{server.port}/ok", extra)
        assert result.success, result.detail
        bb = bb_values(result)
        assert bb["probe_http_version"] == 3.0
        assert bb["probe_http_status_code"] == 200
        assert bb["probe_http_content_length"] == len(BODY_OK)
        assert bb["probe_http_ssl"] == 1.0
        assert bb["probe_ssl_earliest_cert_expiry"] > 0
        assert bb["probe_ssl_last_chain_expiry_timestamp_seconds"] > 0
        assert server.requests == [(b"GET", b"/ok")]
        assert leftover_timers() == []

    async def test_http_target_is_asked_over_https(self) -> None:
        server = self.server()
        result = await self.probe(f"http://localhost:{server.port}/ok")
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 3.0

    async def test_redirect_gzip_and_failing_rules(self) -> None:
        server = self.server()
        base = f"https://localhost:{server.port}"
        redirected = await self.probe(base + "/redirect")
        assert redirected.success, redirected.detail
        assert bb_values(redirected)["probe_http_redirects"] == 1.0
        squeezed = await self.probe(base + "/gzip", "      compression: gzip\n")
        assert squeezed.success, squeezed.detail
        assert bb_values(squeezed)["probe_http_uncompressed_body_length"] == len(GZIP_TEXT)
        error = await self.probe(base + "/error")
        assert not error.success and bb_values(error)["probe_http_status_code"] == 500
        regex = await self.probe(base + "/ok", "      fail_if_body_matches_regexp: [netprobe]\n")
        assert not regex.success and bb_values(regex)["probe_failed_due_to_regex"] == 1.0

    async def test_no_fallback_to_tcp(self) -> None:
        """An HTTPS server on TCP only: the UDP port is closed, so the probe is refused."""
        tcp = twisted_site(reactor, self.certs)
        self.addCleanup(tcp.stopListening)
        result = await self.probe(f"https://localhost:{tcp.getHost().port}/ok")
        assert not result.success
        assert result.result == "refused", (result.result, result.detail)

    async def test_phases(self) -> None:
        server = self.server()
        result = await self.probe(f"https://localhost:{server.port}/ok")
        assert result.success, result.detail
        assert isinstance(result.details, http_prober.HTTPDetails)
        assert result.details.phases is not None
        phases = dict(result.details.phases.items())
        assert phases["tls"] > 0 and phases["connect"] == phases["tls"]
        assert phases["processing"] > 0

    async def test_silent_udp_port_times_out(self) -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = await self.probe(f"https://localhost:{port}/ok", timeout=1.0)
        assert not result.success
        assert result.result == "timeout", (result.result, result.detail)
        assert leftover_timers() == []

    async def test_unknown_ca_is_a_tls_error(self) -> None:
        server = self.server()
        module = parse_config(HTTP_3XX, "m.yml").modules["m"]
        result = await http_prober.probe(
            self.ctx, f"https://localhost:{server.port}/ok", module, 5.0
        )
        assert not result.success
        assert result.result == "tls_error", (result.result, result.detail)
