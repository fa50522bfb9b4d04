"""HTTP/2 and HTTP/3 option semantics, the ALPN offer, and the HTTP/2 client's bounds, in memory.

The HTTP/2 peer is ``h2``'s own server-side ``H2Connection`` fed through a ``StringTransport``;
the TLS handshake that shows the ALPN offer runs between two memory-BIO OpenSSL connections.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived
from OpenSSL import SSL
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.probes import http as http_prober
from netprobe_exporter.probes import http2
from netprobe_exporter.probes.tls import TLSConfig, client_creator
from tests.support.pki import make_certs

# options


def _http(body: str) -> Any:
    return parse_config(f"modules:\n  m: {{prober: http, http: {body}}}\n", "m.yml").modules["m"]


def test_http2_is_on_by_default_and_http3_off() -> None:
    opts = _http("{}").options
    assert isinstance(opts, http_prober.HTTPProbe)
    assert (opts.enable_http2, opts.enable_http3) == (True, False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{enable_http3: true}", "when enable_http3 is true, enable_http2 must be set to false"),
        ("{enable_http3: true, enable_http2: true}", "enable_http2 must be set to false"),
        ("{valid_http_versions: [HTTP/3.0]}",
         "HTTP/3 cannot be used as a valid HTTP version when enable_http3 is false"),
        ("{enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/1.1]}",
         "only HTTP/3.0 is allowed when enable_http3 is true"),
        ("{enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/2.0, HTTP/3.0]}",
         "only HTTP/3.0 is allowed when enable_http3 is true"),
    ],
    ids=["http2_default_on", "http2_on", "h3_version_without_h3", "h11_with_h3", "h2_with_h3"],
)  # fmt: skip
def test_http3_rules_of_blackbox_0_28(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _http(body)


def test_http3_alone_is_accepted() -> None:
    opts = _http(
        "{enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/3.0]}"
    ).options
    assert isinstance(opts, http_prober.HTTPProbe)
    assert opts.enable_http3 and not opts.enable_http2


# ALPN: what the client offers in its hello


def _offered(cfg: TLSConfig | None, alpn: tuple[bytes, ...], tmp: Any) -> list[bytes] | None:
    """Run a memory handshake against a server context; return the client's ALPN list.
    ``cfg`` None: verify against the test CA."""
    certs = make_certs(tmp)
    cfg = cfg or TLSConfig(ca_file=str(certs.ca_cert))
    seen: list[list[bytes]] = []

    def select(conn: SSL.Connection, offered: list[bytes]) -> bytes:
        seen.append(list(offered))
        return offered[0]

    sctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    sctx.use_certificate_chain_file(str(certs.leaf_chain))
    sctx.use_privatekey_file(str(certs.leaf_key))
    sctx.set_alpn_select_callback(select)
    server = SSL.Connection(sctx, None)
    server.set_accept_state()
    creator = client_creator(cfg, "localhost", alpn)
    client = creator.clientConnectionForTLS(_Listener())
    client.set_connect_state()  # as Twisted's TLS protocol does for a client
    for _ in range(10):  # a handshake takes a few flights
        for a, b in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                a.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                b.bio_write(a.bio_read(65536))
    return seen[0] if seen else None


class _Listener:
    """What a creator calls back (Twisted's TLS protocol) during the handshake."""

    factory = type("Factory", (), {"wrappedFactory": None})()

    def _handshakeDone(self) -> None:
        pass


def test_alpn_offers_h2_then_http11(tmp_path: Any) -> None:
    cfg = TLSConfig(insecure_skip_verify=True)
    assert _offered(cfg, http2.ALPN, tmp_path) == [b"h2", b"http/1.1"]


def test_alpn_offers_h2_with_verification_too(tmp_path: Any) -> None:
    assert _offered(None, http2.ALPN, tmp_path) == [b"h2", b"http/1.1"]


def test_no_alpn_without_http2(tmp_path: Any) -> None:
    assert _offered(TLSConfig(insecure_skip_verify=True), (), tmp_path) is None


# the HTTP/2 client against h2's server side


@dataclass
class _Hop:
    tls_start: float = 0.0
    tls_done: float = 0.0
    got_conn: float = 0.0
    response_start: float = 0.0
    head_error: str | None = None

    def clock(self) -> float:
        return 42.0


@dataclass
class _Request:
    method: bytes = b"GET"
    uri: bytes = b"/ok"
    headers: Headers = field(
        default_factory=lambda: Headers({b"host": [b"example.test"], b"connection": [b"close"]})
    )
    bodyProducer: Any = None


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self.reason = reason


class _Pair:
    def __init__(self, max_header_bytes: int = 1 << 20) -> None:
        self.hop = _Hop()
        self.client = http2.H2Client(self.hop, max_header_bytes)
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.server.initiate_connection()
        self.answers: list[Any] = []
        self.failures: list[Failure] = []

    def request(self) -> list[Any]:
        d = self.client.request(_Request())
        d.addCallbacks(self.answers.append, self.failures.append)
        return self.to_server()

    def to_server(self) -> list[Any]:
        events = self.server.receive_data(self.transport.value())
        self.transport.clear()
        return events

    def to_client(self) -> None:
        self.client.dataReceived(self.server.data_to_send())


def test_request_head_and_a_body() -> None:
    pair = _Pair()
    events = pair.request()
    got = [e for e in events if isinstance(e, RequestReceived)]
    assert len(got) == 1
    head = dict(got[0].headers)
    assert head[b":authority"] == b"example.test" and head[b":path"] == b"/ok"
    assert b"connection" not in head and b"host" not in head
    pair.server.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")])
    pair.server.send_data(1, b"hello", end_stream=True)
    pair.to_client()
    (response,) = pair.answers
    assert (response.code, response.version, response.length) == (200, (b"HTTP", 2, 0), 5)
    assert pair.hop.response_start == 42.0
    body = _Collect()
    response.deliverBody(body)
    assert body.data == b"hello"
    assert body.reason is not None and body.reason.check(ResponseDone)


def test_an_oversized_header_list_is_refused() -> None:
    pair = _Pair(max_header_bytes=1024)
    pair.request()
    pair.server.send_headers(1, [(b":status", b"200"), (b"x-big", b"a" * 4000)])
    pair.to_client()
    assert pair.answers == [] and len(pair.failures) == 1
    assert pair.hop.head_error == "http: server response headers exceeded 1024 bytes"
    assert pair.transport.disconnecting or pair.client._closed


def test_unread_data_is_not_credited_back() -> None:
    """Before the body reader takes them, DATA bytes keep the peer's window shut."""
    pair = _Pair()
    pair.request()
    pair.server.send_headers(1, [(b":status", b"200")])
    window = pair.server.local_flow_control_window(1)
    for start in range(0, window, 16384):  # the default max frame size
        pair.server.send_data(1, b"x" * min(16384, window - start))
    pair.to_client()
    pair.to_server()
    assert pair.server.local_flow_control_window(1) == 0
    body = _Collect()
    pair.answers[0].deliverBody(body)
    pair.to_server()
    assert len(body.data) == window
    assert pair.server.local_flow_control_window(1) > 0  # h2 credits in large steps


def test_a_control_frame_flood_stops_the_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2, "CONTROL_BYTES", 64 * 1024)  # the bound, smaller: same code
    pair = _Pair()
    pair.request()
    batch = 256
    for _ in range(http2.CONTROL_BYTES // (17 * batch) + 2):  # PING: 9-byte header + 8
        for _ in range(batch):
            pair.server.ping(b"12345678")
        pair.client.dataReceived(pair.server.data_to_send())
        if pair.failures:
            break
    assert len(pair.failures) == 1
    (reason,) = pair.failures[0].value.reasons
    assert reason.getErrorMessage() == "http2: server sent more than 65536 bytes of non-DATA frames"


class _Producer:
    """A request body producer, as Twisted's FileBodyProducer is used (all at once here)."""

    def __init__(self, body: bytes) -> None:
        self.body, self.length = body, len(body)

    def startProducing(self, consumer: Any) -> Any:
        from twisted.internet.defer import succeed

        consumer.write(self.body)
        return succeed(None)


def test_a_request_body_is_sent_as_data() -> None:
    from h2.events import DataReceived, StreamEnded

    pair = _Pair()
    request = _Request(method=b"POST", bodyProducer=_Producer(b'{"ping": 1}'))
    pair.client.request(request)
    events = pair.to_server()
    head = next(e for e in events if isinstance(e, RequestReceived))
    assert dict(head.headers)[b":method"] == b"POST"
    assert b"".join(e.data for e in events if isinstance(e, DataReceived)) == b'{"ping": 1}'
    assert any(isinstance(e, StreamEnded) for e in events)
