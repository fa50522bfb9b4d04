"""The http prober's client keys against real loopback peers: oauth2 (a token endpoint that
checks the client's credentials and scope), proxy_url (a forward proxy for http, CONNECT for
https, proxy_connect_header), proxy_from_environment, body_file, compression br, CEL body
checks, http_headers and source_ip_address."""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, http, oauth2
from netprobe_exporter.resolver import Resolver
from tests.support import http_peers
from tests.support.http_peers import CLIENT_ID, CLIENT_SECRET, SCOPE
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import http_server, make_certs

TIMEOUT = 5.0


class HTTPClientKeyTests(TestCase):
    def setUp(self) -> None:
        self.dns = SilentDNSServer()
        self.addCleanup(self.dns.stop)
        self.dir = temp_path(self).parent
        hosts = self.dir / "hosts"
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )

    def module(self, http_section: str) -> Any:
        text = "modules:\n  m:\n    prober: http\n    http:\n" + "".join(
            f"      {line}\n" for line in http_section.strip("\n").splitlines()
        )
        return parse_config(text, "m.yml").modules["m"]

    def probe(self, url: str, module: Any, ctx: ProbeContext | None = None) -> Any:
        return http.probe(ctx or self.ctx, url, module, TIMEOUT)

    # oauth2

    def oauth2_module(self, token_url: str, secret_line: str | None = None) -> Any:
        secret = secret_line or f"client_secret: {CLIENT_SECRET}"
        return self.module(f"""
oauth2:
  client_id: {CLIENT_ID}
  {secret}
  scopes: [{SCOPE}]
  token_url: {token_url}
  endpoint_params: {{audience: probes}}
""")

    @defer.inlineCallbacks
    def test_oauth2_token_is_fetched_with_the_client_credentials_and_reused(self) -> Any:
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site:
            module = self.oauth2_module(tokens.url("/token"))
            first = yield self.probe(site.url("/protected"), module)
            second = yield self.probe(site.url("/protected"), module)
        self.assertTrue(first.success, first.detail)
        self.assertTrue(second.success, second.detail)
        self.assertEqual(len(tokens.seen.requests), 1, "the cached token was not reused")
        asked = tokens.seen.requests[0]
        self.assertEqual(asked["form"]["grant_type"], "client_credentials")
        self.assertEqual(asked["form"]["scope"], SCOPE)
        self.assertEqual(asked["form"]["audience"], "probes")
        pair = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        self.assertEqual(asked["authorization"], f"Basic {pair}")
        self.assertEqual([r["headers"]["Authorization"] for r in site.seen.requests],
                         ["Bearer tok-1", "Bearer tok-1"])  # fmt: skip

    @defer.inlineCallbacks
    def test_oauth2_token_takes_the_place_of_url_userinfo(self) -> Any:
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site:
            module = self.oauth2_module(tokens.url("/token"))
            r = yield self.probe(f"http://u:p@127.0.0.1:{site.port}/protected", module)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(site.seen.requests[0]["headers"]["Authorization"], "Bearer tok-1")

    @defer.inlineCallbacks
    def test_oauth2_token_past_its_expiry_is_fetched_again(self) -> Any:
        # expires_in under the margin: already due for renewal at the next probe
        with http_peers.token_endpoint(oauth2.EXPIRY_MARGIN / 2) as tokens, \
                http_peers.site() as site:  # fmt: skip
            module = self.oauth2_module(tokens.url("/token"))
            for _ in range(2):
                r = yield self.probe(site.url("/protected"), module)
                self.assertTrue(r.success, r.detail)
        self.assertEqual([r["headers"]["Authorization"] for r in site.seen.requests],
                         ["Bearer tok-1", "Bearer tok-2"])  # fmt: skip

    @defer.inlineCallbacks
    def test_oauth2_concurrent_probes_share_one_token_request(self) -> Any:
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site:
            module = self.oauth2_module(tokens.url("/token"))
            results = yield defer.gatherResults(
                [self.probe(site.url("/protected"), module) for _ in range(5)]
            )
        self.assertTrue(all(r.success for r in results), [r.detail for r in results])
        self.assertEqual(len(tokens.seen.requests), 1)

    @defer.inlineCallbacks
    def test_oauth2_credentials_in_the_form_when_basic_is_refused(self) -> Any:
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site:
            tokens.state["params"] = True
            module = self.oauth2_module(tokens.url("/token"))
            r = yield self.probe(site.url("/protected"), module)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(len(tokens.seen.requests), 2)
        self.assertEqual(tokens.seen.requests[1]["form"]["client_secret"], CLIENT_SECRET)

    @defer.inlineCallbacks
    def test_oauth2_wrong_secret_fails_the_probe_without_showing_it(self) -> Any:
        secret_file = self.dir / "secret"
        secret_file.write_text("not-the-secret\n")
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site:
            module = self.oauth2_module(tokens.url("/token"), f"client_secret_file: {secret_file}")
            r = yield self.probe(site.url("/protected"), module)
        self.assertFalse(r.success)
        self.assertEqual(r.result, "error")
        self.assertIn("oauth2: cannot fetch token: HTTP 401", r.detail)
        self.assertIn("invalid_client", r.detail)
        self.assertNotIn("not-the-secret", r.detail)
        self.assertEqual(site.seen.requests, [], "the target was asked without a token")

    @defer.inlineCallbacks
    def test_oauth2_unreachable_token_endpoint_fails_with_a_clear_detail(self) -> Any:
        with http_peers.site() as site:
            module = self.oauth2_module("http://127.0.0.1:9/token")
            r = yield self.probe(site.url("/protected"), module)
        self.assertFalse(r.success)
        self.assertIn("oauth2: cannot fetch token:", r.detail)
        self.assertIn("refused", r.detail.lower())

    @defer.inlineCallbacks
    def test_oauth2_token_request_goes_through_its_own_proxy(self) -> Any:
        with http_peers.token_endpoint(3600) as tokens, http_peers.site() as site, \
                http_peers.proxy() as proxy:  # fmt: skip
            module = self.module(f"""
oauth2:
  client_id: {CLIENT_ID}
  client_secret: {CLIENT_SECRET}
  scopes: [{SCOPE}]
  token_url: {tokens.url("/token")}
  proxy_url: http://127.0.0.1:{proxy.port}
""")
            debug = ProbeContext(self.ctx.reactor, self.ctx.resolver, debug=True)
            r = yield self.probe(site.url("/protected"), module, debug)
        self.assertTrue(r.success, r.detail)
        self.assertEqual([(a["method"], a["target"]) for a in proxy.seen.requests],
                         [("POST", tokens.url("/token"))])  # fmt: skip
        self.assertEqual(len(site.seen.requests), 1, "the target itself is not proxied")
        shown = repr(r.log) + r.detail
        self.assertNotIn(CLIENT_SECRET, shown)
        self.assertNotIn("tok-1", shown)

    # proxies

    @defer.inlineCallbacks
    def test_proxy_url_forwards_plain_http_in_absolute_form(self) -> Any:
        with http_peers.proxy() as proxy, http_peers.site() as site:
            module = self.module(f"proxy_url: http://user:pw@127.0.0.1:{proxy.port}")
            r = yield self.probe(f"http://localhost:{site.port}/echo", module)
        self.assertTrue(r.success, r.detail)
        [asked] = proxy.seen.requests
        self.assertEqual(asked["method"], "GET")
        # Go's transport writes the Host (the target's name) in the absolute-form request line
        self.assertEqual(asked["target"], f"http://localhost:{site.port}/echo")
        headers = {k.lower(): v for k, v in asked["headers"]}
        self.assertEqual(headers["host"], f"localhost:{site.port}")
        self.assertEqual(headers["proxy-authorization"],
                         "Basic " + base64.b64encode(b"user:pw").decode())  # fmt: skip
        self.assertEqual(len(site.seen.requests), 1)

    @defer.inlineCallbacks
    def test_proxy_url_tunnels_https_with_proxy_connect_header(self) -> Any:
        certs = make_certs(self.dir / "certs")
        with http_peers.proxy() as proxy, http_server(certs.server_context("valid")) as site:
            module = self.module(f"""
proxy_url: http://127.0.0.1:{proxy.port}
proxy_connect_header:
  X-Proxy-Token: [abc123]
tls_config: {{ca_file: {certs.ca_cert}}}
""")
            r = yield self.probe(f"https://localhost:{site.port}/ok", module)
        self.assertTrue(r.success, r.detail)
        [asked] = proxy.seen.requests
        self.assertEqual((asked["method"], asked["target"]), ("CONNECT", f"127.0.0.1:{site.port}"))
        self.assertIn(("X-Proxy-Token", "abc123"), asked["headers"])
        self.assertTrue(r.details.ssl)
        self.assertGreater(r.details.phases.tls, 0.0)

    @defer.inlineCallbacks
    def test_a_proxy_refusing_connect_fails_the_probe(self) -> Any:
        with http_peers.proxy(refuse=True) as proxy:
            module = self.module(f"proxy_url: http://127.0.0.1:{proxy.port}")
            r = yield self.probe("https://127.0.0.1:9/ok", module)
        self.assertFalse(r.success)
        self.assertIn("proxyconnect", r.detail)
        self.assertIn("403", r.detail)

    @defer.inlineCallbacks
    def test_skip_resolve_phase_with_proxy_sends_the_name_to_the_proxy(self) -> Any:
        with http_peers.proxy() as proxy, http_peers.site() as site:
            module = self.module(f"""
proxy_url: http://127.0.0.1:{proxy.port}
skip_resolve_phase_with_proxy: true
""")
            r = yield self.probe(f"http://localhost:{site.port}/echo", module)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(proxy.seen.requests[0]["target"], f"http://localhost:{site.port}/echo")
        self.assertIsNone(r.ip)

    @defer.inlineCallbacks
    def test_proxy_from_environment_leaves_loopback_direct_as_go_does(self) -> Any:
        """Go's environment proxy rules never proxy loopback: the request goes direct."""
        with http_peers.proxy() as proxy, http_peers.site() as site:
            old = os.environ.get("HTTP_PROXY")
            os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.port}"
            try:
                module = self.module("proxy_from_environment: true")
                r = yield self.probe(site.url("/echo"), module)
            finally:
                if old is None:
                    del os.environ["HTTP_PROXY"]
                else:
                    os.environ["HTTP_PROXY"] = old
        self.assertTrue(r.success, r.detail)
        self.assertEqual(proxy.seen.requests, [])
        self.assertEqual(len(site.seen.requests), 1)

    # request and body keys

    @defer.inlineCallbacks
    def test_body_file_is_sent(self) -> Any:
        body = self.dir / "body.json"
        body.write_bytes(b'{"from": "a file"}\n')
        with http_peers.site() as site:
            module = self.module(f"method: POST\nbody_file: {body}")
            r = yield self.probe(site.url("/echo"), module)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(site.seen.requests[0]["body"], b'{"from": "a file"}\n')

    @defer.inlineCallbacks
    def test_missing_body_file_fails_the_probe_naming_the_key(self) -> Any:
        with http_peers.site() as site:
            module = self.module(f"method: POST\nbody_file: {self.dir / 'none'}")
            r = yield self.probe(site.url("/echo"), module)
        self.assertFalse(r.success)
        self.assertEqual(r.result, "error")
        self.assertIn("body_file", r.detail)
        self.assertEqual(site.seen.requests, [])

    @defer.inlineCallbacks
    def test_brotli_bodies_are_decoded_and_a_broken_one_fails(self) -> Any:
        with http_peers.site() as site:
            module = self.module("compression: br\nfail_if_body_not_matches_regexp: [hello]")
            good = yield self.probe(site.url("/br"), module)
            broken = yield self.probe(site.url("/br-broken"), module)
        self.assertTrue(good.success, good.detail)
        self.assertEqual(good.details.body_length, len(http_peers.BR_BODY))
        self.assertEqual(site.seen.requests[0]["headers"]["Accept-Encoding"], "br")
        self.assertFalse(broken.success)
        self.assertIn("decompress", broken.detail)

    @defer.inlineCallbacks
    def test_cel_rules_on_a_json_body(self) -> Any:
        cases = [
            ("fail_if_body_json_not_matches_cel: \"body.status == 'up'\"", "/json", True),
            ("fail_if_body_json_not_matches_cel: \"body.status == 'down'\"", "/json", False),
            ("fail_if_body_json_matches_cel: 'body.checks.exists(c, !c.ok)'", "/json", True),
            ("fail_if_body_json_matches_cel: 'body.version > 2'", "/json", False),
            ("fail_if_body_json_not_matches_cel: 'body.status == 1'", "/echo", False),  # not JSON
            ("fail_if_body_json_not_matches_cel: 'body.nope'", "/json", False),  # eval error
        ]
        with http_peers.site() as site:
            for line, path, success in cases:
                r = yield self.probe(site.url(path), self.module(line))
                self.assertEqual(r.success, success, (line, r.detail))
                self.assertEqual(r.details.failed_due_to_cel, not success, line)
                shown: dict[str, Any] = {}
                r.details.blackbox(shown, r)
                self.assertEqual(shown["probe_failed_due_to_cel"], [({}, 0.0 if success else 1.0)])

    @defer.inlineCallbacks
    def test_cel_example_of_blackbox_documentation(self) -> Any:
        """example.yml's http_json_cel_match module on the body its comment gives."""
        line = (
            "fail_if_body_json_not_matches_cel: \"body.foo == 'bar' && body.baz.startsWith('q')\""
        )
        with http_peers.site() as site:
            good = yield self.probe(site.url("/doc-example"), self.module(line))
            other = yield self.probe(site.url("/json"), self.module(line))
        self.assertTrue(good.success, good.detail)
        self.assertFalse(other.success)  # no foo: an evaluation error fails the probe
        self.assertTrue(other.details.failed_due_to_cel)

    @defer.inlineCallbacks
    def test_http_headers_values_secrets_and_files_are_all_sent(self) -> Any:
        token = self.dir / "token"
        token.write_text("from-file\n")
        with http_peers.site() as site:
            module = self.module(f"""
headers: {{X-Plain: one}}
http_headers:
  X-Multi:
    values: [a, b]
    secrets: [s3]
    files: [{token}]
""")
            r = yield self.probe(site.url("/echo"), module)
        self.assertTrue(r.success, r.detail)
        lines = site.seen.requests[0]["header_lines"]
        self.assertEqual([v for k, v in lines if k == "X-Multi"], ["a", "b", "s3", "from-file"])
        self.assertIn(("X-Plain", "one"), lines)

    @defer.inlineCallbacks
    def test_source_ip_address_is_the_one_the_server_sees(self) -> Any:
        with http_peers.site() as site:
            module = self.module("source_ip_address: 127.0.0.2\npreferred_ip_protocol: ip4")
            r = yield self.probe(site.url("/echo"), module)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(site.seen.requests[0]["client"], "127.0.0.2")
