"""blackbox 0.26-0.28's query_response keys and TLS labels on real sockets: tcp on loopback, and
the unix prober on a Unix socket server in a temp directory.

The configs follow the ``<tcp_probe>`` and ``<unix_probe>`` sections of blackbox_exporter 0.28's
CONFIGURATION.md (``expect_bytes``, ``labels`` exported as ``probe_expect_info``, ``send``
with ``${1}``, ``starttls``, ``tls``/``tls_config``); the expected families are what that
release writes (``probe_failed_due_to_bytes``; the ``serialnumber`` label; cipher info for
http only). 0.23, the differential reference, has none of these.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from netprobe_exporter import blackbox, exposition
from netprobe_exporter.app import App
from netprobe_exporter.config import parse_config
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import Target
from netprobe_exporter.policy import ProbePolicy, parse_rule
from netprobe_exporter.probes import ProbeContext, ProbeResult, http, tcp, unix
from netprobe_exporter.resolver import Resolver
from tests.support.blackbox import parse_metrics
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import Conn, make_certs, tcp_server, unix_server

MAGIC = b"\x00\x01NP\r\n"


def _modules(ca: Path) -> Any:
    return parse_config(
        f"""
modules:
  magic:
    prober: tcp
    tcp:
      query_response:
        - expect_bytes: "\\x00\\x01NP\\r\\n"
        - send: "HELLO"
        - expect: "^OK$"
  ssh_version:
    prober: tcp
    tcp:
      query_response:
        - expect: "^SSH-2.0-([^ -]+)(?: (.*))?$"
          labels:
            - name: ssh_version
              value: "${{1}}"
            - name: comment
              value: "${{2}}"
        - send: "SSH-2.0-blackbox-ssh-check"
  tls:
    prober: tcp
    tcp:
      tls: true
      tls_config: {{ca_file: {ca}}}
  https:
    prober: http
    http:
      tls_config: {{ca_file: {ca}}}
  unix_banner:
    prober: unix
    unix:
      query_response:
        - expect: "^220 (\\\\S+) ready"
          labels:
            - name: server
              value: "${{1}}"
          send: "QUIT ${{1}}"
        - expect: "^221 bye"
  unix_bytes:
    prober: unix
    unix:
      query_response:
        - expect_bytes: "\\x00\\x01NP\\r\\n"
  unix_connect:
    prober: unix
  unix_tls:
    prober: unix
    unix:
      tls: true
      tls_config: {{ca_file: {ca}, server_name: localhost}}
  unix_starttls:
    prober: unix
    unix:
      query_response:
        - expect: "^220 "
          send: "STARTTLS"
        - expect: "^220 "
        - starttls: true
        - expect: "^250 secure"
      tls_config: {{ca_file: {ca}, server_name: localhost}}
  unix_tls_no_name:
    prober: unix
    unix:
      tls: true
      tls_config: {{ca_file: {ca}}}
""",
        "qr.yml",
    ).modules


def magic_peer(prefix: bytes) -> Any:
    def handler(conn: Conn) -> None:
        conn.send(prefix)
        if conn.readline() == b"HELLO":
            conn.send(b"OK\n")
        conn.drain(2.0)

    return handler


def ssh_peer(conn: Conn) -> None:
    conn.send(b"SSH-2.0-OpenSSH_9.6 Debian-4\r\n")
    conn.readline()


def answer(r: ProbeResult) -> dict[str, Any]:
    return parse_metrics(blackbox.render(r))


def samples(r: ProbeResult, name: str) -> list[tuple[dict[str, str], float]]:
    fam = answer(r).get(name)
    return [] if fam is None else [(dict(k), v) for k, v in fam.samples.items()]


def leaf_serial(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    n = cert.serial_number
    return n.to_bytes((n.bit_length() + 7) // 8, "big").hex()


class _Base(TestCase):
    def setUp(self) -> None:
        self.dns = SilentDNSServer()  # nothing here needs DNS
        self.addCleanup(self.dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts))
        )
        self.certs = make_certs(temp_path(self))
        self.modules = _modules(self.certs.ca_cert)
        # a short directory: a Unix socket path holds at most 107 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="np-"))
        self.addCleanup(shutil.rmtree, self.dir, True)


class TCPQueryResponseTests(_Base):
    @defer.inlineCallbacks
    def test_expect_bytes_match_then_the_conversation_goes_on(self) -> Any:
        with tcp_server(magic_peer(MAGIC)) as server:
            r = yield tcp.probe(self.ctx, server.address, self.modules["magic"], 5)
        self.assertEqual((r.result, r.success), ("success", True), r.detail)
        self.assertEqual(samples(r, "probe_failed_due_to_bytes"), [({}, 0.0)])
        self.assertEqual(samples(r, "probe_failed_due_to_regex"), [({}, 0.0)])

    @defer.inlineCallbacks
    def test_expect_bytes_mismatch_is_probe_failed_due_to_bytes(self) -> Any:
        with tcp_server(magic_peer(b"\x00\x02NP\r\n")) as server:
            r = yield tcp.probe(self.ctx, server.address, self.modules["magic"], 5)
        self.assertEqual((r.result, r.success), ("protocol_error", False), r.detail)
        self.assertIn("bytes did not match", r.detail)
        self.assertEqual(samples(r, "probe_failed_due_to_bytes"), [({}, 1.0)])
        self.assertEqual(samples(r, "probe_failed_due_to_regex"), [({}, 0.0)])

    @defer.inlineCallbacks
    def test_too_few_bytes_before_the_close_is_a_read_failure(self) -> Any:
        def short(conn: Conn) -> None:
            conn.send(MAGIC[:3])

        with tcp_server(short) as server:
            r = yield tcp.probe(self.ctx, server.address, self.modules["magic"], 5)
        self.assertFalse(r.success)
        self.assertIn("fewer than the 6 expected", r.detail)
        self.assertEqual(samples(r, "probe_failed_due_to_bytes"), [({}, 0.0)])

    @defer.inlineCallbacks
    def test_labels_are_exported_as_probe_expect_info(self) -> Any:
        with tcp_server(ssh_peer) as server:
            r = yield tcp.probe(self.ctx, server.address, self.modules["ssh_version"], 5)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(
            samples(r, "probe_expect_info"),
            [({"ssh_version": "OpenSSH_9.6", "comment": "Debian-4"}, 1.0)],
        )
        self.assertIn("# HELP probe_expect_info Explicit content matched\n", blackbox.render(r))

    @defer.inlineCallbacks
    def test_refused_connect_writes_no_bytes_family(self) -> Any:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        r = yield tcp.probe(self.ctx, f"127.0.0.1:{port}", self.modules["magic"], 2)
        self.assertEqual(r.result, "refused")
        self.assertNotIn("probe_failed_due_to_bytes", answer(r))

    @defer.inlineCallbacks
    def test_tls_serialnumber_label_and_no_cipher_family_for_tcp(self) -> Any:
        ctx = self.certs.server_context("valid")

        def tls_peer(conn: Conn) -> None:
            conn.start_tls(ctx)
            conn.stop.wait(1.0)

        with tcp_server(tls_peer) as server:
            r = yield tcp.probe(self.ctx, f"localhost:{server.port}", self.modules["tls"], 5)
        self.assertTrue(r.success, r.detail)
        [(labels, value)] = samples(r, "probe_ssl_last_chain_info")
        self.assertEqual(labels["serialnumber"], leaf_serial(self.certs.leaf_cert))
        self.assertEqual(value, 1.0)
        # blackbox 0.28 writes probe_tls_cipher_info for http only
        self.assertNotIn("probe_tls_cipher_info", answer(r))
        tls13 = {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}
        self.assertIn(r.details.tls.cipher, tls13)  # TLS 1.3 suites keep their IANA name
        # continuous mode shows the suite of the last handshake
        target = Target(f"localhost:{server.port}", "tls", 1.0, (), (0.01, 0.1))
        store = MetricsStore()
        store.sync([target])
        store.observe(target, r, 1000.0)
        text = "".join(exposition.render(store, exposition.TEXT, None))
        lbl = f'target="{target.address}",module="tls"'
        self.assertIn(f'netprobe_tls_cipher_info{{{lbl},cipher="{r.details.tls.cipher}"}} 1', text)

    @defer.inlineCallbacks
    def test_http_tls_has_cipher_info_and_serialnumber(self) -> Any:
        ctx = self.certs.server_context("valid")
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")

        def https_peer(conn: Conn) -> None:
            conn.start_tls(ctx)
            while conn.readline():
                pass
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        with tcp_server(https_peer) as server:
            url = f"https://localhost:{server.port}/"
            r = yield http.probe(self.ctx, url, self.modules["https"], 5)
        self.assertTrue(r.success, r.detail)
        self.assertEqual(
            samples(r, "probe_tls_cipher_info"),
            [({"cipher": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, 1.0)],
        )
        [(labels, _)] = samples(r, "probe_ssl_last_chain_info")
        self.assertEqual(labels["serialnumber"], leaf_serial(self.certs.leaf_cert))


def banner_peer(conn: Conn) -> None:
    conn.send(b"220 mail.test ready\r\n")
    if conn.readline() == b"QUIT mail.test":
        conn.send(b"221 bye\r\n")


class UnixProbeTests(_Base):
    @defer.inlineCallbacks
    def test_query_response_success_with_labels(self) -> Any:
        path = self.dir / "banner.sock"
        with unix_server(banner_peer, path):
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_banner"], 5)
        self.assertEqual((r.result, r.success), ("success", True), r.detail)
        self.assertIsNotNone(r.connect_duration)
        fams = answer(r)
        self.assertEqual(samples(r, "probe_expect_info"), [({"server": "mail.test"}, 1.0)])
        self.assertEqual(samples(r, "probe_failed_due_to_regex"), [({}, 0.0)])
        self.assertEqual(samples(r, "probe_failed_due_to_bytes"), [({}, 0.0)])
        # nothing is resolved for a path: no DNS or IP families, as blackbox's unix prober
        self.assertNotIn("probe_dns_lookup_time_seconds", fams)
        self.assertNotIn("probe_ip_protocol", fams)

    @defer.inlineCallbacks
    def test_query_response_failure_is_probe_failed_due_to_regex(self) -> Any:
        path = self.dir / "other.sock"

        def wrong(conn: Conn) -> None:
            conn.send(b"554 go away\r\n")

        with unix_server(wrong, path):
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_banner"], 5)
        self.assertEqual((r.result, r.success), ("protocol_error", False), r.detail)
        self.assertEqual(samples(r, "probe_failed_due_to_regex"), [({}, 1.0)])
        self.assertNotIn("probe_expect_info", answer(r))

    @defer.inlineCallbacks
    def test_expect_bytes_on_a_unix_socket(self) -> Any:
        path = self.dir / "bytes.sock"
        with unix_server(magic_peer(b"\x00\x01XX\r\n"), path):
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_bytes"], 5)
        self.assertFalse(r.success)
        self.assertEqual(samples(r, "probe_failed_due_to_bytes"), [({}, 1.0)])

    @defer.inlineCallbacks
    def test_a_missing_socket_fails_clearly(self) -> Any:
        path = self.dir / "missing.sock"
        r = yield unix.probe(self.ctx, str(path), self.modules["unix_connect"], 2)
        self.assertEqual((r.result, r.success), ("error", False))
        self.assertIn(f'no socket at "{path}"', r.detail)
        # blackbox writes the conversation's families only once connected
        self.assertEqual(sorted(answer(r)), ["probe_duration_seconds", "probe_success"])

    @defer.inlineCallbacks
    def test_an_allow_list_of_networks_refuses_a_socket_path(self) -> Any:
        path = self.dir / "policy.sock"
        ctx = dataclasses.replace(
            self.ctx, policy=ProbePolicy(allow=(parse_rule("127.0.0.0/8"),)).check
        )
        with unix_server(banner_peer, path) as server:
            r = yield unix.probe(ctx, str(path), self.modules["unix_connect"], 2)
            self.assertEqual(server.connections, 0)
        self.assertEqual(r.policy_refused, f"{path} matches no allow rule")
        self.assertFalse(r.success)

    @defer.inlineCallbacks
    def test_a_socket_file_nobody_listens_on_is_refused(self) -> Any:
        path = self.dir / "stale.sock"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()  # bound, never listened: the file stays, connecting is refused
        r = yield unix.probe(self.ctx, str(path), self.modules["unix_connect"], 2)
        self.assertEqual(r.result, "refused", r.detail)

    @defer.inlineCallbacks
    def test_starttls_on_a_unix_socket(self) -> Any:
        path = self.dir / "starttls.sock"
        ctx = self.certs.server_context("valid")

        def smtp(conn: Conn) -> None:
            conn.send(b"220 hi\r\n")
            if conn.readline() == b"STARTTLS":
                conn.send(b"220 go ahead\r\n")
                conn.start_tls(ctx)
                conn.send(b"250 secure\r\n")
                conn.stop.wait(1.0)

        with unix_server(smtp, path):
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_starttls"], 5)
        self.assertTrue(r.success, r.detail)
        self.assertIn("probe_ssl_last_chain_info", answer(r))

    @defer.inlineCallbacks
    def test_tls_over_a_unix_socket_with_server_name(self) -> Any:
        path = self.dir / "tls.sock"
        ctx = self.certs.server_context("valid")

        def tls_peer(conn: Conn) -> None:
            conn.start_tls(ctx)
            conn.stop.wait(1.0)

        with unix_server(tls_peer, path):
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_tls"], 5)
            self.assertTrue(r.success, r.detail)
            [(labels, _)] = samples(r, "probe_ssl_last_chain_info")
            self.assertEqual(labels["serialnumber"], leaf_serial(self.certs.leaf_cert))
            self.assertEqual(samples(r, "probe_tls_version_info"), [({"version": "TLS 1.3"}, 1.0)])
            r = yield unix.probe(self.ctx, str(path), self.modules["unix_tls_no_name"], 5)
        self.assertFalse(r.success)
        self.assertIn("set server_name", r.detail)


class UnixContinuousTests(TestCase):
    """A unix target in continuous mode, and the same module through /probe, in the app."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="np-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.config = self.dir / "c.yml"
        self.app = App(reactor, config_file=str(self.config), process_metrics=False)
        self.addCleanup(self.app.stop)

    async def get(self, path: str) -> tuple[int, str]:
        port = cast(IPv4Address, self.app.ports[0].getHost()).port
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        return response.code, (await readBody(response)).decode()

    async def test_a_unix_targets_series_show_up_in_metrics(self) -> None:
        path = self.dir / "banner.sock"

        def greet(conn: Conn) -> None:
            conn.send(b"220 ready\r\n")

        self.config.write_text(
            "modules:\n"
            '  sock: {prober: unix, unix: {query_response: [{expect: "^220 "}]}}\n'
            f"targets:\n  - {{address: {path}, module: sock, interval: 100ms}}\n"
        )
        with unix_server(greet, path):
            self.app.listen(["127.0.0.1:0"])
            self.app.apply(self.app.read_config())
            lbl = f'target="{path}",module="sock"'
            text = ""
            for _ in range(100):  # two probes at 100 ms, however busy the machine
                await task.deferLater(reactor, 0.05, lambda: None)
                _, text = await self.get("/metrics")
                if f'netprobe_probes_total{{{lbl},result="success"}} 2' in text:
                    break
            code, answer_text = await self.get(f"/probe?module=sock&target={path}")
        self.assertIn(f"netprobe_up{{{lbl}}} 1", text)
        self.assertIn(f"netprobe_connect_duration_seconds_count{{{lbl}}}", text)
        self.assertIn(f'netprobe_probes_total{{{lbl},result="success"}}', text)
        self.assertEqual(code, 200, answer_text)
        self.assertIn("probe_success 1\n", answer_text)
        self.assertIn("probe_failed_due_to_regex 0\n", answer_text)
