"""The websocket prober in memory: RFC 6455's frame and handshake examples, targets, options.

Frames and keys are RFC 6455's own examples (sections 1.3 and 5.7); the option cases are
blackbox_exporter's ``<websocket_probe>`` (CONFIGURATION.md of its main branch), its example.yml
modules and its config testdata (``invalid-websocket-query-response-regexp.yml``).
"""

from __future__ import annotations

import textwrap

import pytest

from netprobe_exporter.config import Config, ConfigError, parse_config
from netprobe_exporter.model import ProbeResult
from netprobe_exporter.probes import websocket as ws
from netprobe_exporter.redact import module_doc

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "ws.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_accept_key_is_rfc_6455s_example() -> None:
    assert ws.accept_key(RFC_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_keys_are_16_random_bytes() -> None:
    import base64

    keys = {ws.new_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(base64.b64decode(k)) == 16 for k in keys)


def test_frames_encode_as_rfc_6455_section_5_7() -> None:
    assert ws.encode_frame(ws.OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert ws.encode_frame(ws.OP_TEXT, b"Hello", RFC_MASK) == bytes.fromhex(
        "818537fa213d7f9f4d5158"
    )
    assert ws.encode_frame(ws.OP_BINARY, b"\0" * 256)[:4] == bytes.fromhex("827e0100")
    assert ws.encode_frame(ws.OP_BINARY, b"\0" * 65536)[:10] == bytes.fromhex(
        "827f0000000000010000"
    )


def test_decoder_reads_fragments_and_control_frames_in_pieces() -> None:
    d = ws.FrameDecoder()
    stream = bytes.fromhex("010348656c8a0080026c6f890548656c6c6f")
    frames = []
    for i in range(len(stream)):  # one byte at a time: every header split is exercised
        d.feed(stream[i : i + 1])
        while (f := d.next()) is not None:
            frames.append(f)
    assert frames == [
        ws.Frame(False, ws.OP_TEXT, b"Hel"),
        ws.Frame(True, ws.OP_PONG, b""),
        ws.Frame(True, ws.OP_CONTINUATION, b"lo"),
        ws.Frame(True, ws.OP_PING, b"Hello"),
    ]
    assert d.buffered == 0


@pytest.mark.parametrize(
    ("raw", "why", "code"),
    [
        ("818537fa213d7f9f4d5158", "masked", 1002),
        ("c10548656c6c6f", "reserved bits", 1002),
        ("830548656c6c6f", "opcode 3", 1002),
        ("097e0080", "control frame", 1002),
        ("897e007e" + "00" * 126, "control frame", 1002),
        ("817f8000000000000000", "top bit", 1002),
        ("817f0000000000100001", "over the", 1009),
    ],
)
def test_decoder_refuses_what_a_server_may_not_send(raw: str, why: str, code: int) -> None:
    d = ws.FrameDecoder()
    d.feed(bytes.fromhex(raw))
    with pytest.raises(ws.FrameError) as info:
        d.next()
    assert why in str(info.value)
    assert info.value.code == code


def test_masking_round_trips() -> None:
    data = bytes(range(256)) * 3
    assert ws.apply_mask(ws.apply_mask(data, RFC_MASK), RFC_MASK) == data
    assert ws.apply_mask(b"", RFC_MASK) == b""


def test_close_payloads() -> None:
    assert ws.parse_close(ws.close_payload(1001, "going away")) == (1001, "going away")
    assert ws.parse_close(b"") == (1005, "")


def test_handshake_response_checks() -> None:
    accept = ws.accept_key(RFC_KEY)
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
        f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}"
    ).encode()
    good = ws.parse_response_head(head)
    assert ws.upgraded(good, RFC_KEY) is None
    assert "not match" in (ws.upgraded(good, ws.new_key()) or "")
    assert "status 200" in (ws.upgraded(ws.parse_response_head(b"HTTP/1.1 200 OK"), RFC_KEY) or "")
    with pytest.raises(ValueError, match="status line"):
        ws.parse_response_head(b"SSH-2.0-OpenSSH\r\nx: y")


@pytest.mark.parametrize(
    ("target", "secure", "port", "host_header", "path"),
    [
        ("ws://example.org/chat", False, 80, "example.org", "/chat"),
        ("wss://example.org", True, 443, "example.org", "/"),
        ("wss://example.org:443/a?b=c", True, 443, "example.org:443", "/a?b=c"),
        ("ws://u:p@[::1]:8080/x", False, 8080, "[::1]:8080", "/x"),
        ("WS://example.org/", False, 80, "example.org", "/"),
    ],
)
def test_targets(target: str, secure: bool, port: int, host_header: str, path: str) -> None:
    t = ws.parse_target(target)
    assert (t.secure, t.url.port, t.host_header, t.url.path) == (secure, port, host_header, path)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("example.org:80", "ws:// or wss://"),
        ("https://example.org/", "ws:// or wss://"),
        ("ws://user:hunter2@/x", "no host"),
        ("ws://example.org:99999/", "out of range"),
    ],
)
def test_bad_targets_say_why_without_the_password(target: str, why: str) -> None:
    problem = ws.check_address(target)
    assert problem is not None and why in problem
    assert "hunter2" not in problem


def test_upgrade_request_carries_auth_headers_and_host_override() -> None:
    cfg = parse(
        """
        modules:
          m:
            prober: websocket
            websocket:
              http_config:
                basic_auth: {username: user, password: password}
              headers:
                X-Multi: {values: [a, b], secrets: [c]}
                Host: {values: [other.example]}
        """
    )
    opts = cfg.modules["m"].options
    assert isinstance(opts, ws.WebsocketProbe)
    target = ws.parse_target("ws://u:p@example.org:8080/path")
    headers = ws.request_headers(opts, target, ProbeResult(False, "error", 0.0))
    text = ws.upgrade_request(target, RFC_KEY, headers).decode()
    lines = text.split("\r\n")
    assert lines[0] == "GET /path HTTP/1.1"
    assert "Host: other.example" in lines
    assert "Authorization: Basic dXNlcjpwYXNzd29yZA==" in lines  # http_config wins over userinfo
    assert [ln for ln in lines if ln.startswith("X-Multi")] == [
        "X-Multi: a", "X-Multi: b", "X-Multi: c"
    ]  # fmt: skip
    assert f"Sec-WebSocket-Key: {RFC_KEY}" in lines
    assert "Sec-WebSocket-Version: 13" in lines
    assert text.endswith("\r\n\r\n")


def test_url_userinfo_is_basic_auth_without_http_config() -> None:
    cfg = parse("modules: {m: {prober: websocket}}")
    opts = cfg.modules["m"].options
    assert isinstance(opts, ws.WebsocketProbe)
    target = ws.parse_target("ws://u:p@example.org/")
    headers = ws.request_headers(opts, target, ProbeResult(False, "error", 0.0))
    assert ("Authorization", "Basic dTpw") in headers


def test_example_yml_modules_load_without_warning() -> None:
    cfg = parse(
        r"""
        modules:
          websocket_example_basic_auth:
            prober: websocket
            websocket:
              http_config:
                basic_auth:
                  username: "user"
                  password: "password"
                tls_config:
                  insecure_skip_verify: true
              headers:
                X-Some-Header: "my_header"
              query_response:
                - expect: ^Hello,\s(.+)"
                  send: "Hello server, i'am ${1}"
                - expect: ^Welcome
          websocket_example_bearer_token:
            prober: websocket
            websocket:
              http_config:
                authorization:
                  credentials: "secret_token"
                tls_config:
                  insecure_skip_verify: true
              headers:
                X-Some-Header: "my_header"
              query_response:
                - expect: ^Hello,\s(.+)"
                  send: "Hello server, i'am ${1}"
                - expect: ^Welcome
        """
    )
    assert cfg.warnings == ()
    doc = module_doc(cfg.modules["websocket_example_bearer_token"])
    section = doc["websocket"]
    assert section["http_config"]["authorization"] == {"type": "Bearer", "credentials": "<secret>"}
    assert section["headers"] == {"X-Some-Header": {"values": ["my_header"]}}
    assert "secret_token" not in repr(doc)


def test_blackbox_invalid_regexp_testdata_is_refused() -> None:
    found = errors(
        """
        modules:
          websocket_test:
            prober: websocket
            timeout: 5s
            websocket:
              query_response:
                - expect: ":["
                - send: "test message"
        """
    )
    assert any("query_response[0].expect" in e and "regular expression" in e for e in found)


def test_secrets_in_headers_are_redacted_and_never_echoed() -> None:
    cfg = parse(
        """
        modules:
          m:
            prober: websocket
            websocket:
              headers:
                X-Api-Key: {secrets: [topsecret1]}
                Authorization: {values: [Bearer topsecret2]}
              http_config:
                bearer_token: topsecret3
        """
    )
    doc = repr(module_doc(cfg.modules["m"]))
    for secret in ("topsecret1", "topsecret2", "topsecret3"):
        assert secret not in doc


def test_option_errors_and_warnings() -> None:
    found = errors(
        """
        modules:
          m:
            prober: websocket
            websocket:
              http_config:
                basic_auth: {username: u}
                authorization: {credentials: c}
              preferred_ip_protocol: ip5
              headers:
                "bad name": {values: [x]}
                X-Twice: {values: [a]}
                X-Twice: {values: [b]}
        """
    )
    assert any("headers.X-Twice" in e for e in found)
    assert any("at most one of basic_auth, authorization" in e for e in found)
    assert any("ip5" in e for e in found)
    assert any("is not a header name" in e for e in found)
    cfg = parse(
        """
        modules:
          m:
            prober: websocket
            websocket:
              http_config: {follow_redirects: false, proxy_url: "http://proxy:3128"}
              headers:
                Upgrade: {values: [h2c]}
              query_response:
                - {expect: "x", starttls: true}
        """
    )
    text = "\n".join(cfg.warnings)
    assert "follow_redirects: has no effect on a websocket probe" in text
    assert "proxy_url: has no effect" in text
    assert "Upgrade is set by the upgrade itself" in text
    assert "starttls, expect_bytes and labels have no effect" in text


def test_header_names_are_canonical_and_authorizations_add_up() -> None:
    cfg = parse(
        """
        modules:
          m:
            prober: websocket
            websocket:
              http_config: {bearer_token: t0ken}
              headers:
                x-lower-case: {values: ["1"]}
                authorization: {values: [Extra one]}
                host: {values: [first.example, second.example]}
        """
    )
    opts = cfg.modules["m"].options
    assert isinstance(opts, ws.WebsocketProbe)
    target = ws.parse_target("ws://u:p@example.org/")
    headers = ws.request_headers(opts, target, ProbeResult(False, "error", 0.0))
    assert ("X-Lower-Case", "1") in headers
    # as blackbox's http.Header.Add: both sent; the URL's userinfo gives way to them
    assert [v for n, v in headers if n == "Authorization"] == ["Bearer t0ken", "Extra one"]
    lines = ws.upgrade_request(target, RFC_KEY, headers).decode().split("\r\n")
    assert "Host: first.example" in lines
    assert ws.canonical("sec-websocket-protocol") == "Sec-Websocket-Protocol"
