"""The websocket prober against a real websocket server on loopback (wsproto's server side).

The cases follow blackbox_exporter's websocket prober (main branch): its own test's exchange
(``incoming_(.+)`` answered with ``outgoing_${1}``, then ``^passed``), its TLS case with
``authorization`` and a header, and the two websocket modules of its example.yml, loaded as
written (the header there is a plain string). The families and values are what its prober
writes: ``probe_websocket_status_code``, ``_connection_upgraded``, ``_failed_due_to_regex`` and
``_duration_seconds{phase}`` (resolve, connect, processing, transfer).
"""

from __future__ import annotations

import base64
import socket
import struct
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter import blackbox
from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, ProbeResult, websocket
from netprobe_exporter.resolver import Resolver
from tests.support.blackbox import parse_metrics
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import WSConn, make_certs, websocket_server


def _modules(ca: Path) -> Any:
    return parse_config(
        f"""
modules:
  ws_exchange:
    prober: websocket
    websocket:
      query_response:
        - expect: "incoming_(.+)"
          send: "outgoing_${{1}}"
        - expect: "^passed"
  ws_mismatch:
    prober: websocket
    websocket:
      query_response:
        - expect: "incoming_(.+)"
          send: "outgoing_${{1}}"
        - expect: "^someotherstring"
  ws_plain:
    prober: websocket
  ws_literal_send:
    prober: websocket
    websocket:
      query_response:
        - send: "price $1"
        - expect: "^ok"
  wss_token:
    prober: websocket
    websocket:
      http_config:
        authorization:
          credentials: "test_token"
        tls_config:
          insecure_skip_verify: true
      headers:
        X-Should-Be-Sent:
          values: ["true"]
  wss_ca:
    prober: websocket
    websocket:
      http_config:
        tls_config: {{ca_file: {ca}}}
      query_response:
        - expect: "^hi"
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
        - expect: ^Hello,\\s(.+)"
          send: "Hello server, i'am ${{1}}"
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
        - expect: ^Hello,\\s(.+)"
          send: "Hello server, i'am ${{1}}"
        - expect: ^Welcome
""",
        "ws.yml",
    ).modules


def answer(r: ProbeResult) -> dict[str, Any]:
    return parse_metrics(blackbox.render(r))


def value(r: ProbeResult, name: str, **labels: str) -> float | None:
    fam = answer(r).get(name)
    if fam is None:
        return None
    for key, v in fam.samples.items():
        if dict(key) == labels:
            return float(v)
    return None


def phases(r: ProbeResult) -> set[str]:
    fam = answer(r).get("probe_websocket_duration_seconds")
    return set() if fam is None else {dict(k)["phase"] for k in fam.samples}


def blackbox_peer(ws: WSConn) -> None:
    """blackbox's own test server: ``incoming_test``, wants ``outgoing_test``, ``passed``."""
    ws.accept()
    ws.send_text("incoming_test")
    if ws.receive() == "outgoing_test":
        ws.send_text("passed")
    ws.until_closed()


class WebsocketProbeTests(TestCase):
    def setUp(self) -> None:
        self.dns = SilentDNSServer()  # localhost is in the hosts file; nothing else resolves
        self.addCleanup(self.dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )
        self.certs = make_certs(temp_path(self).parent / "certs")
        self.modules = _modules(self.certs.ca_cert)

    def run_probe(self, url: str, module: str, timeout: float = 5.0) -> Any:
        return websocket.probe(self.ctx, url, self.modules[module], timeout)

    @defer.inlineCallbacks
    def test_blackbox_exchange_succeeds_with_every_phase(self) -> Any:
        with websocket_server(blackbox_peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertEqual((r.result, r.success), ("success", True), r.detail)
        self.assertEqual(value(r, "probe_websocket_status_code"), 101)
        self.assertEqual(value(r, "probe_websocket_connection_upgraded"), 1)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 0)
        self.assertEqual(phases(r), {"resolve", "connect", "processing", "transfer"})
        self.assertEqual(value(r, "probe_success"), 1)
        text = blackbox.render(r)
        self.assertIn(
            "# HELP probe_websocket_connection_upgraded Indicates if the websocket connection "
            "was successfully upgraded\n",
            text,
        )
        self.assertIn("# HELP probe_websocket_duration_seconds Duration of websocket request "
                      "by phase\n", text)  # fmt: skip

    @defer.inlineCallbacks
    def test_a_step_that_does_not_match_fails_due_to_regex(self) -> Any:
        with websocket_server(blackbox_peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_mismatch")
        self.assertFalse(r.success)
        self.assertIn("someotherstring", r.detail)
        self.assertEqual(value(r, "probe_websocket_status_code"), 101)
        self.assertEqual(value(r, "probe_websocket_connection_upgraded"), 1)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 1)
        self.assertIn("transfer", phases(r))

    @defer.inlineCallbacks
    def test_upgrade_alone_has_no_transfer_phase_and_closes_politely(self) -> Any:
        seen: list[Any] = []

        def peer(ws: WSConn) -> None:
            request = ws.accept()
            seen.append(request)
            seen.append(ws.receive())  # None: the client's Close
            seen.append(list(ws.control))

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://localhost:{server.port}/feed?x=1", "ws_plain")
        self.assertTrue(r.success, r.detail)
        self.assertEqual(phases(r), {"resolve", "connect", "processing"})
        request, message, control = seen
        self.assertEqual(request.target, "/feed?x=1")
        self.assertEqual(request.host, f"localhost:{server.port}")
        self.assertIsNone(message)
        self.assertEqual(control, [("close", 1000)])

    @defer.inlineCallbacks
    def test_a_send_without_expect_is_sent_as_written(self) -> Any:
        got: list[Any] = []

        def peer(ws: WSConn) -> None:
            ws.accept()
            got.append(ws.receive())
            ws.send_text("ok")
            ws.until_closed()

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}", "ws_literal_send")
        self.assertTrue(r.success, r.detail)
        self.assertEqual(got, ["price $1"])  # no expect: nothing to expand

    @defer.inlineCallbacks
    def test_wss_with_authorization_and_header(self) -> Any:
        seen: list[Any] = []

        def peer(ws: WSConn) -> None:
            seen.append(ws.accept())
            ws.until_closed()

        with websocket_server(peer, self.certs.server_context("valid")) as server:
            r = yield self.run_probe(f"wss://127.0.0.1:{server.port}/", "wss_token")
        self.assertTrue(r.success, r.detail)
        headers = {k.decode().lower(): v.decode() for k, v in seen[0].extra_headers}
        self.assertEqual(headers["authorization"], "Bearer test_token")
        self.assertEqual(headers["x-should-be-sent"], "true")
        self.assertEqual(value(r, "probe_websocket_status_code"), 101)
        # blackbox writes no TLS families for websocket; continuous mode keeps them
        self.assertNotIn("probe_ssl_earliest_cert_expiry", answer(r))
        self.assertIsNotNone(r.details.tls)

    @defer.inlineCallbacks
    def test_wss_verifies_the_certificate_against_the_url_host(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.send_text("hi there")
            ws.until_closed()

        with websocket_server(peer, self.certs.server_context("valid")) as server:
            good = yield self.run_probe(f"wss://localhost:{server.port}/", "wss_ca")
        self.assertTrue(good.success, good.detail)
        self.assertEqual(good.details.tls.version, "TLS 1.3")
        with websocket_server(peer, self.certs.server_context("selfsigned")) as server:
            bad = yield self.run_probe(f"wss://localhost:{server.port}/", "wss_ca")
        self.assertEqual(bad.result, "tls_error", bad.detail)
        self.assertEqual(value(bad, "probe_websocket_connection_upgraded"), 0)
        self.assertEqual(value(bad, "probe_websocket_status_code"), 0)

    @defer.inlineCallbacks
    def test_example_yml_basic_auth_module(self) -> Any:
        seen: list[Any] = []

        def peer(ws: WSConn) -> None:
            seen.append(ws.accept())
            ws.send_text('Hello, netprobe"')
            seen.append(ws.receive())
            ws.send_text("Welcome aboard")
            ws.until_closed()

        with websocket_server(peer, self.certs.server_context("valid")) as server:
            url = f"wss://localhost:{server.port}/"
            r = yield self.run_probe(url, "websocket_example_basic_auth")
        self.assertTrue(r.success, r.detail)
        request, reply = seen
        headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
        token = base64.b64encode(b"user:password").decode()
        self.assertEqual(headers["authorization"], f"Basic {token}")
        self.assertEqual(headers["x-some-header"], "my_header")
        self.assertEqual(reply, "Hello server, i'am netprobe")

    @defer.inlineCallbacks
    def test_example_yml_bearer_module_fails_on_the_second_expect(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.send_text('Hello, netprobe"')
            ws.receive()
            ws.send_text("Go away")
            ws.until_closed()

        with websocket_server(peer, self.certs.server_context("valid")) as server:
            url = f"wss://localhost:{server.port}/"
            r = yield self.run_probe(url, "websocket_example_bearer_token")
        self.assertFalse(r.success)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 1)

    @defer.inlineCallbacks
    def test_a_refused_upgrade_reports_its_status(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.reject(403)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("bad handshake", r.detail)
        self.assertEqual(value(r, "probe_websocket_status_code"), 403)
        self.assertEqual(value(r, "probe_websocket_connection_upgraded"), 0)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 0)
        self.assertEqual(phases(r), {"resolve", "connect", "processing"})

    @defer.inlineCallbacks
    def test_a_refused_connect_has_no_connect_phase(self) -> Any:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        r = yield self.run_probe(f"ws://127.0.0.1:{port}/", "ws_plain", 2)
        self.assertEqual(r.result, "refused")
        self.assertEqual(phases(r), {"resolve", "processing"})
        self.assertEqual(value(r, "probe_websocket_status_code"), 0)

    @defer.inlineCallbacks
    def test_pings_are_answered_and_fragments_joined(self) -> Any:
        control: list[Any] = []

        def peer(ws: WSConn) -> None:
            from wsproto.events import Message, Ping

            ws.accept()
            ws.conn.send(ws.ws.send(Ping(payload=b"are you there")))
            ws.conn.send(ws.ws.send(Message(data="incoming_", message_finished=False)))
            ws.conn.send(ws.ws.send(Message(data="split", message_finished=True)))
            if ws.receive() == "outgoing_split":
                ws.send_text("passed")
            ws.until_closed()
            control.extend(ws.control)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertTrue(r.success, r.detail)
        self.assertIn(("pong", b"are you there"), control)

    @defer.inlineCallbacks
    def test_a_masked_server_frame_is_a_protocol_error(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.conn.send(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")  # RFC 6455 5.7
            ws.until_closed(2.0)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("masked", r.detail)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 1)

    @defer.inlineCallbacks
    def test_a_message_over_the_bound_fails_without_being_held(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            size = websocket.MAX_MESSAGE + 1
            ws.conn.send(struct.pack("!BBQ", 0x81, 127, size))  # the header alone
            ws.until_closed(2.0)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertEqual(r.result, "protocol_error")
        self.assertIn("over the", r.detail)

    @defer.inlineCallbacks
    def test_the_server_closing_first_fails_the_step(self) -> Any:
        def peer(ws: WSConn) -> None:
            from wsproto.events import CloseConnection

            ws.accept()
            ws.conn.send(ws.ws.send(CloseConnection(code=1001, reason="going away")))
            ws.until_closed(2.0)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertFalse(r.success)
        self.assertIn("closed by the server (1001: going away)", r.detail)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 1)

    @defer.inlineCallbacks
    def test_a_silent_server_times_out(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.until_closed(5.0)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange", 1.0)
        self.assertEqual(r.result, "timeout", r.detail)
        self.assertLess(r.duration, 3.0)
        self.assertEqual(value(r, "probe_websocket_failed_due_to_regex"), 1)

    @defer.inlineCallbacks
    def test_a_message_of_the_largest_size_allowed_is_read_whole(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            body = "incoming_" + "x" * (websocket.MAX_MESSAGE - 12) + "end"
            ws.send_text(body)
            if ws.receive() == "outgoing_" + "x" * (websocket.MAX_MESSAGE - 12) + "end":
                ws.send_text("passed")
            ws.until_closed()

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange", 10.0)
        self.assertTrue(r.success, r.detail)

    @defer.inlineCallbacks
    def test_a_close_without_the_tcp_close_ends_the_wait_at_once(self) -> Any:
        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.conn.send(bytes.fromhex("880203e9"))  # Close 1001, the connection kept open
            ws.conn.stop.wait(5.0)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange", 4.0)
        self.assertIn("closed by the server (1001)", r.detail)
        self.assertLess(r.duration, 2.0)  # not the probe's timeout

    @defer.inlineCallbacks
    def test_a_ping_flood_gets_a_pong_per_batch_not_per_ping(self) -> Any:
        control: list[Any] = []

        def peer(ws: WSConn) -> None:
            ws.accept()
            ws.conn.send(bytes.fromhex("8900") * 5000 + bytes.fromhex("890131"))
            ws.send_text("incoming_x")
            if ws.receive() == "outgoing_x":
                ws.send_text("passed")
            ws.until_closed()
            control.extend(ws.control)

        with websocket_server(peer) as server:
            r = yield self.run_probe(f"ws://127.0.0.1:{server.port}/", "ws_exchange")
        self.assertTrue(r.success, r.detail)
        pongs = [c for c in control if c[0] == "pong"]
        self.assertLess(len(pongs), 100)
        self.assertIn(("pong", b"1"), pongs)  # the latest is answered
