"""The http prober's client keys over HTTP/2 and HTTP/3 on loopback: an oauth2 token,
``http_headers``, ``body_file``, ``source_ip_address``, CEL and br bodies, and a CONNECT tunnel
to an ``h2`` target (Twisted's HTTP/2 site); HTTP/3 (aioquic's server) with the same request
keys, its UDP socket bound to the source address, and proxies left out as blackbox 0.28 does.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.model import Module
from netprobe_exporter.probes import ProbeContext, ProbeResult
from netprobe_exporter.probes import http as http_prober
from netprobe_exporter.resolver import Resolver
from tests.support import http_peers
from tests.support.http_peers import CLIENT_ID, CLIENT_SECRET, SCOPE
from tests.support.loopback import LocalDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import make_certs
from tests.support.web_peers import GZIP_TEXT, H3Server, bb_values, twisted_site

VERSION_2 = 'fail_if_body_not_matches_regexp: [\'"version": "HTTP/2"\']\n'
H3 = "enable_http3: true\nenable_http2: false\nvalid_http_versions: [HTTP/3.0]\n"


class _Base(TestCase):
    def setUp(self) -> None:
        dns = LocalDNSServer({})
        self.addCleanup(dns.stop)
        self.dir = temp_path(self).parent
        write_file(self.dir / "hosts", "127.0.0.1 localhost\n")
        hosts = str(self.dir / "hosts")
        self.ctx = ProbeContext(reactor, Resolver(reactor, servers=[dns.address],
                                                  hosts_path=hosts), True)  # fmt: skip
        self.certs = make_certs(self.dir / "certs")

    def module(self, section: str = "") -> Module:
        lines = f"preferred_ip_protocol: ip4\ntls_config: {{ca_file: {self.certs.ca_cert}}}\n"
        body = "".join(f"      {line}\n" for line in (lines + section).strip("\n").splitlines())
        text = "modules:\n  m:\n    prober: http\n    http:\n" + body
        return parse_config(text, "m.yml").modules["m"]

    def probe(self, url: str, section: str = "") -> Deferred[ProbeResult]:
        return http_prober.probe(self.ctx, url, self.module(section), 5.0)

    def oauth2(self, token_url: str) -> str:
        return (f"oauth2:\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n"
                f"  scopes: [{SCOPE}]\n  token_url: {token_url}\n")  # fmt: skip


class HTTP2ClientKeys(_Base):
    def site(self) -> str:
        port = twisted_site(reactor, self.certs)
        self.addCleanup(port.stopListening)
        return f"https://localhost:{port.getHost().port}"

    async def test_request_keys_as_the_h2_server_saw_them(self) -> None:
        body_file = self.dir / "body"
        body_file.write_bytes(b'{"probe": 1}')
        with http_peers.token_endpoint(3600) as tokens:
            section = self.oauth2(tokens.url("/token")) + (
                f"method: POST\nbody_file: {body_file}\nsource_ip_address: 127.0.0.2\n"
                "http_headers:\n  X-Multi:\n    values: [a, b]\n    secrets: [s3]\n"
                "fail_if_body_json_not_matches_cel: >-\n"
                '  body.version == "HTTP/2" && body.client == "127.0.0.2"'
                ' && body.body == "{\\"probe\\": 1}"'
                ' && ["authorization", "Bearer tok-1"] in body.headers'
                ' && ["x-multi", "s3"] in body.headers\n'
            )
            result = await self.probe(self.site() + "/echo", section)
        assert result.success, result.detail
        assert bb_values(result)["probe_failed_due_to_cel"] == 0.0
        assert bb_values(result)["probe_http_version"] == 2.0

    async def test_cel_failure_on_an_h2_body(self) -> None:
        section = 'fail_if_body_json_matches_cel: body.version == "HTTP/2"\n'
        result = await self.probe(self.site() + "/echo", section)
        assert not result.success
        assert bb_values(result)["probe_failed_due_to_cel"] == 1.0

    async def test_brotli_over_h2(self) -> None:
        result = await self.probe(self.site() + "/br", "compression: br\n")
        assert result.success, result.detail
        bb = bb_values(result)
        assert bb["probe_http_version"] == 2.0
        assert bb["probe_http_uncompressed_body_length"] == len(GZIP_TEXT)

    async def test_connect_tunnel_to_an_h2_target_speaks_h2_inside(self) -> None:
        url = self.site() + "/echo"
        with http_peers.proxy() as proxy:
            section = f"proxy_url: http://127.0.0.1:{proxy.port}\n" + VERSION_2
            result = await self.probe(url, section)
        assert result.success, result.detail
        [asked] = proxy.seen.requests
        assert asked["method"] == "CONNECT"
        bb = bb_values(result)
        assert bb["probe_http_version"] == 2.0
        assert bb["probe_http_ssl"] == 1.0
        assert result.details.phases.tls > 0.0  # type: ignore[union-attr]

    async def test_connect_tunnel_without_http2_stays_http11(self) -> None:
        with http_peers.proxy() as proxy:
            section = f"proxy_url: http://127.0.0.1:{proxy.port}\nenable_http2: false\n"
            result = await self.probe(self.site() + "/version", section)
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 1.1
        assert len(proxy.seen.requests) == 1


class HTTP3ClientKeys(_Base):
    def server(self) -> H3Server:
        found = H3Server(self.certs.leaf_chain, self.certs.leaf_key).start()
        self.addCleanup(found.stop)
        return found

    async def test_source_address_oauth2_and_http_headers_over_h3(self) -> None:
        server = self.server()
        with http_peers.token_endpoint(3600) as tokens:
            section = (
                H3
                + self.oauth2(tokens.url("/token"))
                + (
                    "source_ip_address: 127.0.0.2\n"
                    "http_headers:\n  X-Multi:\n    values: [a]\n"
                    'fail_if_body_json_not_matches_cel: body.client == "127.0.0.2"\n'
                )
            )
            result = await self.probe(f"https://localhost:{server.port}/echo", section)
        assert result.success, result.detail
        assert bb_values(result)["probe_http_version"] == 3.0
        [(headers, client)] = server.heads
        assert client == "127.0.0.2"
        assert (b"authorization", b"Bearer tok-1") in headers
        assert (b"x-multi", b"a") in headers

    async def test_source_address_of_the_wrong_family_fails_before_sending(self) -> None:
        server = self.server()
        result = await self.probe(f"https://localhost:{server.port}/ok",
                                  H3 + "source_ip_address: '::1'\n")  # fmt: skip
        assert not result.success
        assert result.result == "error"
        assert "bind ::1" in result.detail
        assert server.heads == []

    async def test_proxy_is_not_used_for_h3(self) -> None:
        """blackbox 0.28's QUIC transport has no proxy: even one whose name cannot be found is
        not looked for, and the request goes straight to the target."""
        server = self.server()
        section = H3 + "proxy_url: http://proxy.invalid:3128\n"
        result = await self.probe(f"https://localhost:{server.port}/ok", section)
        assert result.success, result.detail
        assert server.requests == [(b"GET", b"/ok")]
