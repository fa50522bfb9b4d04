"""The http prober's client keys in memory: how they read, what they show, and the pieces that
decide at probe time (proxy choice, no_proxy, the environment, CEL, brotli, http_headers, the
oauth2 token cache)."""

from __future__ import annotations

import base64
from typing import Any

import brotli
import pytest
from twisted.internet.defer import Deferred

from netprobe_exporter.blackbox import module_yaml
from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.probes import http
from netprobe_exporter.probes.httpcel import check_body, compile_cel
from netprobe_exporter.probes.httpproxy import ProxyChoice, parse_no_proxy, parse_proxy
from netprobe_exporter.probes.oauth2 import (
    EXPIRY_MARGIN,
    OAuth2,
    TokenCache,
    TokenError,
    TokenReply,
    parse_token,
    token_form,
)

EVERY_KEY = """
modules:
  m:
    prober: http
    http:
      method: POST
      body_file: /nonexistent/body.json
      compression: br
      fail_if_body_json_matches_cel: "body.status == 'down'"
      fail_if_body_json_not_matches_cel: "body.foo == 'bar' && body.baz.startsWith('q')"
      proxy_url: "http://proxyuser:proxy-pw@127.0.0.1:3128"
      no_proxy: "example.com,10.0.0.0/8"
      proxy_connect_header:
        Proxy-Authorization: [Bearer connect-token]
      skip_resolve_phase_with_proxy: true
      source_ip_address: 127.0.0.2
      http_headers:
        X-Api:
          values: [plain-value]
          secrets: [header-secret]
          files: [/nonexistent/header]
      oauth2:
        client_id: client_id
        client_secret: oauth-secret
        scopes: [a, b]
        token_url: https://127.0.0.1:8443/token
        endpoint_params: {audience: x}
        tls_config: {insecure_skip_verify: true}
"""
SECRETS = ("proxy-pw", "connect-token", "header-secret", "oauth-secret")


def _module(section: str) -> Any:
    text = "modules:\n  m:\n    prober: http\n    http:\n" + "".join(
        f"      {line}\n" for line in section.strip("\n").splitlines()
    )
    return parse_config(text, "m.yml").modules["m"]


def _errors(section: str) -> str:
    with pytest.raises(ConfigError) as info:
        _module(section)
    return "\n".join(info.value.errors)


def test_every_key_reads_into_the_options() -> None:
    opts = parse_config(EVERY_KEY, "m.yml").modules["m"].options
    assert isinstance(opts, http.HTTPProbe)
    assert opts.body_file == "/nonexistent/body.json" and opts.compression == "br"
    assert opts.proxy_url is not None and opts.proxy_url.port == 3128
    assert opts.proxy_url.username == "proxyuser"
    assert opts.no_proxy == "example.com,10.0.0.0/8" and opts.skip_resolve_phase_with_proxy
    assert [(n, [v.reveal() for v in vs]) for n, vs in opts.proxy_connect_header] == [
        ("Proxy-Authorization", ["Bearer connect-token"])
    ]
    assert opts.source_ip_address == "127.0.0.2"
    [(name, source)] = opts.http_headers
    assert name == "X-Api" and source.values == ("plain-value",)
    assert opts.oauth2 is not None and opts.oauth2.scopes == ("a", "b")
    assert opts.oauth2.endpoint_params == (("audience", "x"),)
    assert opts.oauth2.tls_config.insecure_skip_verify
    assert opts.fail_if_body_json_matches_cel is not None


def test_the_module_shown_keeps_every_secret_hidden() -> None:
    text = module_yaml(parse_config(EVERY_KEY, "m.yml").modules["m"])
    for secret in SECRETS:
        assert secret not in text, secret
    assert "proxy_url: http://proxyuser:<secret>@127.0.0.1:3128" in text
    assert "body.status == 'down'" in text and "plain-value" in text
    assert "client_id: client_id" in text


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("body: x\nbody_file: /etc/hostname", "setting body and body_file both are not allowed"),
        ("proxy_connect_header: {X: [y]}", "if proxy_connect_header is configured, proxy_url or "
         "proxy_from_environment must also be configured"),
        ("no_proxy: example.com", "if no_proxy is configured, proxy_url must also be configured"),
        ("proxy_from_environment: true\nproxy_url: http://127.0.0.1:1",
         "if proxy_from_environment is configured, proxy_url must not be configured"),
        ("proxy_url: ftp://127.0.0.1:1", 'proxy URL scheme "ftp" is not supported'),
        ("http_headers: {Authorization: {values: [x]}}",
         'setting header "Authorization" is not allowed'),
        ("http_headers: {user-agent: {values: [x]}}", 'setting header "User-Agent" is not allowed'),
        ("fail_if_body_json_matches_cel: 'body.a =='", "Could not compile CEL program"),
        ("oauth2: {token_url: 'http://127.0.0.1/t'}", "oauth2 client_id must be configured"),
        ("oauth2: {client_id: c}", "oauth2 token_url must be configured"),
        ("oauth2: {client_id: c, token_url: t, grant_type: password}",
         'grant type "password" is not supported'),
        ("basic_auth: {username: u}\noauth2: {client_id: c, token_url: t}",
         "at most one of basic_auth, oauth2 may be set"),
        ("source_ip_address: nowhere", '"nowhere" is not an IP address'),
    ],
)  # fmt: skip
def test_wrong_combinations_are_refused_with_blackbox_wording(section: str, expected: str) -> None:
    assert expected in _errors(section)


def test_errors_under_secret_keys_never_quote_them() -> None:
    found = _errors("oauth2: {client_id: c, token_url: t, client_secret: [hunter2]}")
    assert "hunter2" not in found
    found = _errors("proxy_url: 'http://u:hunter2@[bad'")
    assert "hunter2" not in found
    found = _errors("http_headers: {X-A: {secrets: {hunter2: 1}}}")
    assert "hunter2" not in found


def test_blackbox_0_28_example_modules_load() -> None:
    """The current release's example.yml modules for these keys, as written there."""
    parse_config("""
modules:
  http_with_proxy:
    prober: http
    http:
      proxy_url: "http://127.0.0.1:3128"
      skip_resolve_phase_with_proxy: true
  http_with_proxy_and_headers:
    prober: http
    http:
      proxy_url: "http://127.0.0.1:3128"
      proxy_connect_header:
        Proxy-Authorization:
          - Bearer token
  http_post_body_file:
    prober: http
    timeout: 5s
    http:
      method: POST
      body_file: "/files/body.txt"
  http_json_cel_match:
    prober: http
    timeout: 5s
    http:
      method: GET
      fail_if_body_json_not_matches_cel: "body.foo == 'bar' && body.baz.startsWith('q')"
  http_2xx_oauth_client_credentials:
    prober: http
    timeout: 5s
    http:
      valid_http_versions: ["HTTP/1.1", "HTTP/2"]
      follow_redirects: true
      preferred_ip_protocol: "ip4"
      valid_status_codes:
        - 200
        - 201
      oauth2:
        client_id: "client_id"
        client_secret: "client_secret"
        token_url: "https://api.example.com/token"
        endpoint_params:
          grant_type: "client_credentials"
""", "example.yml")  # fmt: skip


# proxy choice


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("", "10.1.2.3", 80, False),
        ("*", "10.1.2.3", 80, True),
        ("example.com", "example.com", 80, True),
        ("example.com", "www.example.com", 80, True),
        ("example.com", "notexample.com", 80, False),
        (".example.com", "example.com", 80, False),
        (".example.com", "a.example.com", 80, True),
        ("*.example.com", "a.example.com", 80, True),
        ("example.com:8080", "example.com", 80, False),
        ("example.com:8080", "example.com", 8080, True),
        ("10.0.0.0/8", "10.9.9.9", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("10.1.2.3:80", "10.1.2.3", 443, False),
        ("[2001:db8::1]:443", "2001:db8::1", 443, True),
        ("2001:db8::/32", "2001:db8::5", 80, True),
        ("other.org", "localhost", 80, True),  # never proxied (Go's rule)
        ("other.org", "127.0.0.5", 80, True),
        ("other.org", "::1", 80, True),
        (" Example.COM , other.org", "EXAMPLE.com", 80, True),
    ],
)
def test_no_proxy_matches_as_go_httpproxy(no_proxy: str, host: str, port: int,
                                          direct: bool) -> None:  # fmt: skip
    assert parse_no_proxy(no_proxy).bypass(host, port) is direct


def test_proxy_url_alone_proxies_even_loopback() -> None:
    proxy = parse_proxy("http://127.0.0.1:3128")
    assert ProxyChoice(proxy).proxy_for("http", "127.0.0.1", 80) == proxy
    with_list = ProxyChoice(proxy, no_proxy="example.com")
    assert with_list.proxy_for("http", "127.0.0.1", 80) is None
    assert with_list.proxy_for("http", "10.0.0.1", 80) == proxy


def test_proxy_from_environment_reads_the_scheme_variable_upper_case_first() -> None:
    choice = ProxyChoice(from_environment=True)
    env = {"HTTP_PROXY": "proxy.test:3128", "http_proxy": "http://lower.test:1",
           "https_proxy": "http://tls-proxy.test:8080", "NO_PROXY": "skip.test"}  # fmt: skip
    plain = choice.proxy_for("http", "10.0.0.1", 80, env)
    assert plain is not None and (plain.host, plain.port) == ("proxy.test", 3128)
    tls = choice.proxy_for("https", "10.0.0.1", 443, env)
    assert tls is not None and (tls.host, tls.port) == ("tls-proxy.test", 8080)
    assert choice.proxy_for("http", "a.skip.test", 80, env) is None
    assert choice.proxy_for("http", "127.0.0.1", 80, env) is None
    assert choice.proxy_for("http", "10.0.0.1", 80, {}) is None
    with pytest.raises(ValueError, match="HTTP_PROXY from the environment"):
        choice.proxy_for("http", "10.0.0.1", 80, {"HTTP_PROXY": "socks5://x:1"})


# CEL

DOC = b'{"status": "up", "items": [1, 2, 3], "nested": {"ok": true}}'


@pytest.mark.parametrize(
    ("matches", "not_matches", "failed", "why"),
    [
        (None, "body.status == 'up'", False, ""),
        (None, "body.status == 'down'", True, "did not match"),
        ("size(body.items) == 3", None, True, "matched"),
        ("body.items[0] == 1", None, True, "matched"),
        ("body.items[0] == 1.0", None, True, "error evaluating"),  # an int here, not a double
        ("body.nested.ok == false", "body.nested.ok", False, ""),
        (None, "body.missing", True, "error evaluating CEL expression"),
        (None, "body.status", True, "not a boolean"),
    ],
)
def test_cel_rules(matches: str | None, not_matches: str | None, failed: bool, why: str) -> None:
    verdict = check_body(
        DOC,
        None if matches is None else compile_cel(matches),
        None if not_matches is None else compile_cel(not_matches),
        5.0,
    )
    assert verdict.failed is failed, verdict.reason
    assert why in verdict.reason


def test_cel_on_a_body_that_is_not_json_fails() -> None:
    verdict = check_body(b"<html>", None, compile_cel("true"), 5.0)
    assert verdict.failed and "not JSON" in verdict.reason


def test_cel_evaluation_stops_at_the_deadline() -> None:
    """A clock that has passed the deadline at its second reading: the evaluation is stopped
    from inside, whatever the expression would have cost."""
    readings = iter([0.0] + [100.0] * 1_000_000)
    program = compile_cel("body.items.all(x, body.items.all(y, x + y > 0))")
    body = b'{"items": [' + b",".join(b"1" for _ in range(3000)) + b"]}"
    verdict = check_body(body, program, None, 1.0, clock=lambda: next(readings))
    assert verdict.failed and "deadline" in verdict.reason


# brotli


def test_brotli_output_comes_in_bounded_pieces() -> None:
    decoder = http._Unbrotli()
    packed = brotli.compress(b"\0" * (8 << 20))
    pieces = list(decoder.pieces(packed))
    assert sum(map(len, pieces)) == 8 << 20
    # brotli's output limit is where its buffer stops growing (a block may pass it): not the
    # whole 8 MiB at once, so the body limits stop a bomb early
    assert len(pieces) >= 4 and max(map(len, pieces)) <= (2 << 20) + (1 << 16)
    assert decoder.flush() == b""


def test_a_cut_brotli_stream_is_an_error_at_its_end() -> None:
    decoder = http._Unbrotli()
    packed = brotli.compress(b"hello " * 1000)
    list(decoder.pieces(packed[: len(packed) // 2]))
    with pytest.raises(brotli.error):
        decoder.flush()


# http_headers


def test_http_headers_follow_the_module_headers_in_order(tmp_path: Any) -> None:
    f = tmp_path / "v"
    f.write_text("  from-file \n")
    opts = _module(f"""
headers: {{X-A: first}}
http_headers:
  X-A: {{values: [v1], secrets: [s1], files: [{f}]}}
  X-B: {{values: [b]}}
""").options
    headers = http._headers(opts)
    assert headers.getRawHeaders(b"x-a") == [b"first", b"v1", b"s1", b"from-file"]
    assert headers.getRawHeaders(b"x-b") == [b"b"]


# oauth2 tokens


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ok(expires_in: object = 60, token: str = "t1") -> TokenReply:
    body = f'{{"access_token": "{token}", "token_type": "bearer", "expires_in": {expires_in}}}'
    return TokenReply(200, body.encode(), "application/json")


CFG = OAuth2(client_id="c", token_url="http://127.0.0.1/token")


def test_a_token_is_reused_until_its_expiry_minus_the_margin() -> None:
    clock, cache = _Clock(), TokenCache(_Clock())
    cache = TokenCache(clock)
    calls: list[bytes] = []

    async def fetch(cfg: OAuth2, form: bytes, basic: bytes | None, timeout: float) -> TokenReply:
        calls.append(form)
        return _ok(60, f"t{len(calls)}")

    def token() -> bytes:
        got: list[Any] = []
        cache.token(CFG, fetch, 5.0).addCallback(got.append)
        return got[0].header()

    assert token() == b"Bearer t1"
    clock.now += 60 - EXPIRY_MARGIN - 1
    assert token() == b"Bearer t1"
    clock.now += 2
    assert token() == b"Bearer t2"
    assert len(calls) == 2
    assert calls[0] == b"grant_type=client_credentials"


def test_one_fetch_in_flight_and_a_failure_is_not_kept() -> None:
    cache = TokenCache(_Clock())
    pending: list[Deferred[TokenReply]] = []

    async def fetch(cfg: OAuth2, form: bytes, basic: bytes | None, timeout: float) -> TokenReply:
        d: Deferred[TokenReply] = Deferred()
        pending.append(d)
        return await d

    outcomes: list[Any] = []
    for _ in range(3):
        cache.token(CFG, fetch, 5.0).addBoth(outcomes.append)
    assert len(pending) == 1 and outcomes == []
    pending[0].callback(TokenReply(0, error="connect: Connection refused"))
    assert len(outcomes) == 3
    assert all(o.check(TokenError) for o in outcomes)
    assert "Connection refused" in outcomes[0].getErrorMessage()
    cache.token(CFG, fetch, 5.0).addBoth(outcomes.append)
    assert len(pending) == 2, "the failure was kept instead of fetching again"


def test_a_changed_client_secret_file_fetches_a_new_token(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("one\n")
    cfg = OAuth2(client_id="c", client_secret_file=str(secret), token_url="http://127.0.0.1/t")
    cache = TokenCache(_Clock())
    sent: list[bytes | None] = []

    async def fetch(cfg: OAuth2, form: bytes, basic: bytes | None, timeout: float) -> TokenReply:
        sent.append(basic)
        return _ok(3600, f"t{len(sent)}")

    for _ in range(2):
        cache.token(cfg, fetch, 5.0)
    secret.write_text("two\n")
    got: list[Any] = []
    cache.token(cfg, fetch, 5.0).addCallback(got.append)
    assert got[0].header() == b"Bearer t2"
    assert sent == [b"Basic " + base64.b64encode(p) for p in (b"c:one", b"c:two")]


def test_token_form_follows_go_clientcredentials() -> None:
    cfg = OAuth2(client_id="c", token_url="t", scopes=("a", "b"),
                 endpoint_params=(("grant_type", "custom"), ("audience", "x")))  # fmt: skip
    assert token_form(cfg) == [("grant_type", "custom"), ("scope", "a b"), ("audience", "x")]
    clash = OAuth2(client_id="c", token_url="t", scopes=("a",), endpoint_params=(("scope", "z"),))
    with pytest.raises(TokenError, match='cannot overwrite parameter "scope"'):
        token_form(clash)
    alone = OAuth2(client_id="c", token_url="t", endpoint_params=(("scope", "z"),))
    assert token_form(alone) == [("grant_type", "client_credentials"), ("scope", "z")]


@pytest.mark.parametrize(
    ("reply", "header", "expires"),
    [
        (_ok(60), b"Bearer t1", 1000.0 + 60 - EXPIRY_MARGIN),
        (_ok('"60"'), b"Bearer t1", 1000.0 + 60 - EXPIRY_MARGIN),
        (TokenReply(200, b'{"access_token": "x"}', "application/json"), b"Bearer x", None),
        (TokenReply(200, b"access_token=y&token_type=mac", "application/x-www-form-urlencoded"),
         b"MAC y", None),
    ],
)  # fmt: skip
def test_token_answers_parse(reply: TokenReply, header: bytes, expires: float | None) -> None:
    token = parse_token(reply, 1000.0)
    assert token.header() == header
    assert token.renew_at == expires


def test_a_token_answer_without_a_token_is_refused() -> None:
    with pytest.raises(TokenError, match="missing access_token"):
        parse_token(TokenReply(200, b"{}", "application/json"), 0.0)
    with pytest.raises(TokenError, match="not JSON"):
        parse_token(TokenReply(200, b"<html>", "text/html"), 0.0)
