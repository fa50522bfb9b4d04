"""DNS over HTTPS in memory: RFC 8484's encodings, the target forms, the response reader and
the dns section's new keys."""

from __future__ import annotations

import textwrap

import pytest
from twisted.internet.testing import StringTransport
from twisted.names import dns

from netprobe_exporter.config import Config, ConfigError, parse_config
from netprobe_exporter.probes import ProbeFailure, doh
from netprobe_exporter.probes import dns as dns_prober

#: RFC 8484 section 4.1.1: www.example.com A, id 0, RD, as GET's ``dns=`` parameter
RFC_GET = "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"


def _query(qid: int = 0xBEEF) -> bytes:
    m = dns.Message(id=qid, recDes=1)
    m.queries = [dns.Query(b"www.example.com", dns.A, dns.IN)]
    return m.toStr()


def test_get_is_rfc_8484s_example_with_the_id_zeroed() -> None:
    target = doh.parse_target("https://dnsserver.example.net/dns-query")
    wire = doh.request(target, "GET", _query()).decode()
    assert wire.startswith(f"GET /dns-query?dns={RFC_GET} HTTP/1.1\r\n")
    assert "Host: dnsserver.example.net\r\n" in wire
    assert "Accept: application/dns-message\r\n" in wire
    assert wire.endswith("\r\n\r\n")


def test_post_carries_the_message_with_id_zero() -> None:
    target = doh.parse_target("https://[::1]:8443/q?x=1")
    wire = doh.request(target, "POST", _query())
    head, body = wire.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /q?x=1 HTTP/1.1\r\n")
    assert b"Host: [::1]:8443" in head
    assert b"Content-Type: application/dns-message" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b"\0\0" + _query()[2:]


def test_get_appends_to_a_query_the_url_has() -> None:
    target = doh.parse_target("https://doh.example/resolve?ct=1")
    assert doh.request(target, "GET", _query()).startswith(b"GET /resolve?ct=1&dns=")


@pytest.mark.parametrize(
    ("address", "host", "port", "path"),
    [
        ("https://dns.example", "dns.example", 443, "/dns-query"),
        ("https://dns.example/", "dns.example", 443, "/dns-query"),
        ("https://dns.example:8443/custom", "dns.example", 8443, "/custom"),
        ("HTTPS://127.0.0.1/dns-query", "127.0.0.1", 443, "/dns-query"),
        ("dns.example", "dns.example", 443, "/dns-query"),
        ("127.0.0.1:8443", "127.0.0.1", 8443, "/dns-query"),
    ],
)
def test_targets(address: str, host: str, port: int, path: str) -> None:
    t = doh.parse_target(address)
    assert (t.host, t.port, t.path) == (host, port, path)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://dns.example/dns-query", "https:// URL"),
        ("https://user:pw@dns.example/", "no userinfo"),
        ("https:///dns-query", "no host"),
    ],
)
def test_bad_targets(address: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        doh.parse_target(address)
    assert why in (dns_prober.check_address(address) or "")


def _exchange() -> tuple[doh.Exchange, list[object]]:
    ex = doh.Exchange(b"request", lambda: 1.0)
    ex.makeConnection(StringTransport())
    ex.handshakeCompleted()
    got: list[object] = []
    ex.done.addBoth(got.append)
    return ex, got


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\n"


def test_reader_takes_content_length_chunked_and_close_delimited_bodies() -> None:
    ex, got = _exchange()
    assert ex.transport.value() == b"request"  # type: ignore[union-attr]
    ex.dataReceived(HEAD + b"Content-Length: 5\r\n\r\nab")
    assert got == []
    ex.dataReceived(b"cdeXTRA")
    assert got == [b"abcde"]
    ex, got = _exchange()
    ex.dataReceived(
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )
    assert got == [b"abcde"]
    ex, got = _exchange()
    ex.dataReceived(HEAD + b"\r\nabc")
    assert got == []
    ex.connectionLost()
    assert got == [b"abc"]


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP status 404"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "Content-Type text/plain"),
        (HEAD + b"Content-Length: 70000\r\n\r\n", "Content-Length 70000"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"SSH-2.0-x\r\n\r\n", "malformed HTTP status line"),
    ],
)
def test_reader_refuses_what_is_no_doh_answer(response: bytes, why: str) -> None:
    ex, got = _exchange()
    ex.dataReceived(response)
    [failure] = got
    assert why in str(failure.value)  # type: ignore[attr-defined]
    assert isinstance(failure.value, ProbeFailure)  # type: ignore[attr-defined]


def test_reader_bounds_a_head_that_never_ends() -> None:
    ex, got = _exchange()
    for _ in range(17):
        ex.dataReceived(b"X-Filler: " + b"y" * 65536 + b"\r\n")
        if got:
            break
    assert "head too long" in str(got[0].value)  # type: ignore[attr-defined]


def test_a_short_body_at_the_close_is_an_error() -> None:
    ex, got = _exchange()
    ex.dataReceived(HEAD + b"Content-Length: 9\r\n\r\nabc")
    ex.connectionLost()
    assert "closed before a whole response" in str(got[0].value)  # type: ignore[attr-defined]


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "c.yml")


def test_options() -> None:
    cfg = parse(
        """
        modules:
          doh:
            prober: dns
            dns: {query_name: example.org, dns_over_https: true, dns_over_https_method: get}
        """
    )
    opts = cfg.modules["doh"].options
    assert isinstance(opts, dns_prober.DNSProbe)
    assert (opts.dns_over_https, opts.dns_over_https_method) == (True, "GET")
    with pytest.raises(ConfigError) as info:
        parse(
            """
            modules:
              both:
                prober: dns
                dns: {query_name: x, dns_over_https: true, dns_over_tls: true,
                      transport_protocol: tcp}
              put:
                prober: dns
                dns: {query_name: x, dns_over_https: true, dns_over_https_method: PUT}
            """
        )
    text = "\n".join(info.value.errors)
    assert "only one of dns_over_tls and dns_over_https may be true" in text
    assert '"PUT" must be POST or GET' in text
    warned = parse(
        """
        modules:
          a: {prober: dns, dns: {query_name: x, dns_over_https_method: GET}}
          b: {prober: dns, dns: {query_name: x, dns_over_https: true, transport_protocol: udp}}
        """
    ).warnings
    assert any("takes effect only with dns_over_https: true" in w for w in warned)
    assert any("DNS over HTTPS runs over TCP" in w for w in warned)


def test_doh_modules_feed_the_tcp_and_tls_families() -> None:
    cfg = parse("modules: {d: {prober: dns, dns: {query_name: x, dns_over_https: true}}}")
    spec = dns_prober.PROBER
    names = {f.name for f in spec.module_families(cfg.modules["d"].options)}
    assert "netprobe_tcp_handshake_rtt_seconds" in names
    assert "netprobe_tls_version_info" in names


def test_doh_keys_are_shown_for_doh_modules_only() -> None:
    from netprobe_exporter.redact import module_doc

    cfg = parse(
        """
        modules:
          plain: {prober: dns, dns: {query_name: x}}
          doh: {prober: dns, dns: {query_name: x, dns_over_https: true}}
        """
    )
    plain = module_doc(cfg.modules["plain"])["dns"]
    assert "dns_over_https" not in plain and "dns_over_https_method" not in plain
    shown = module_doc(cfg.modules["doh"])["dns"]
    assert (shown["dns_over_https"], shown["dns_over_https_method"]) == (True, "POST")
