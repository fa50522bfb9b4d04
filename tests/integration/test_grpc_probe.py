"""The grpc prober against grpcio's own health server on loopback (plain and TLS)."""

from __future__ import annotations

import itertools
import os
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, utils
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from netprobe_exporter.model import Module
from netprobe_exporter.probes import ProbeContext, ProbeResult, grpc
from netprobe_exporter.probes.tls import TLSConfig
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import LocalDNSServer, leftover_timers, sleep, temp_path, write_file
from tests.support.reactor import reactor
from tests.support.servers import GRPCServer, grpc_health_server, make_certs


def module(**options: Any) -> Module:
    return Module(name="grpc", prober="grpc", options=grpc.GRPCProbe(**options))


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _GRPCTestCase(TestCase):
    def setUp(self) -> None:
        self.dns = LocalDNSServer({})
        self.addCleanup(self.dns.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[self.dns.address], hosts_path=str(hosts)), True
        )
        self.certs = make_certs(temp_path(self))

    def server(self, tls: bool = False, host: str = "127.0.0.1") -> GRPCServer:
        pair = (self.certs.leaf_chain, self.certs.leaf_key) if tls else None
        cm = grpc_health_server(pair, host)
        found = cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)
        return found

    def probe(self, address: str, timeout: float = 5.0, **options: Any) -> Deferred[ProbeResult]:
        return grpc.probe(self.ctx, address, module(**options), timeout)

    def details(self, r: ProbeResult) -> grpc.GRPCDetails:
        assert isinstance(r.details, grpc.GRPCDetails)
        return r.details

    @defer.inlineCallbacks
    def assertClean(self) -> Any:
        """No timer and no relay socket outlive the probe (after the reactor turn the probe
        ended in: a connect's own bookkeeping finishes after its callbacks)."""
        yield sleep(0.01)
        self.assertEqual(leftover_timers(), [])
        self.assertEqual(relay_sockets(), [])


def relay_sockets(listening: bool = False) -> list[str]:
    """This process's relay sockets, listening or connected (/proc lists the abstract name for
    both; the flag 00010000 marks a listening one)."""
    mine = f"@netprobe-grpc-{os.getpid()}-"
    with open("/proc/net/unix") as fh:
        rows = [line.split() for line in fh]
    return [f[-1] for f in rows if f[-1].startswith(mine) and (not listening or f[3] == "00010000")]


class PlainTests(_GRPCTestCase):
    @defer.inlineCallbacks
    def test_serving(self) -> Any:
        server = self.server()
        r = yield self.probe(server.address)
        self.assertEqual((r.success, r.result, r.detail), (True, "success", ""), r.log)
        d = self.details(r)
        self.assertEqual((d.status_code, d.serving_status, d.ssl), (0, "SERVING", False))
        assert d.check is not None and d.rpc is not None and r.connect_duration is not None
        self.assertGreater(d.rpc, 0)
        self.assertGreaterEqual(d.check, d.rpc)
        self.assertEqual(r.ip, "127.0.0.1")
        self.assertEqual(len(server.peers), 1)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_a_named_service(self) -> Any:
        r = yield self.probe(self.server().address, service="up")
        self.assertTrue(r.success, r.log)

    @defer.inlineCallbacks
    def test_not_serving(self) -> Any:
        r = yield self.probe(self.server().address, service="down")
        self.assertEqual((r.success, r.result), (False, "protocol_error"))
        d = self.details(r)
        self.assertEqual((d.status_code, d.serving_status), (0, "NOT_SERVING"))
        self.assertIn("NOT_SERVING", r.detail)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_unknown_service_is_not_found_as_grpcio_answers(self) -> Any:
        r = yield self.probe(self.server().address, service="nope")
        self.assertEqual((r.success, r.result), (False, "protocol_error"))
        d = self.details(r)
        self.assertEqual((d.status_code, d.serving_status), (5, ""))  # NOT_FOUND
        self.assertIn("NOT_FOUND", r.detail)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_refused_is_unavailable(self) -> Any:
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        r = yield self.probe(f"127.0.0.1:{s.getsockname()[1]}")
        self.assertEqual((r.success, r.result), (False, "refused"))
        d = self.details(r)
        self.assertEqual((d.status_code, d.serving_status), (14, ""))
        self.assertIsNotNone(d.check)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_metadata_is_sent(self) -> Any:
        server = self.server()
        pairs = (("X-Tenant", ("blue", "green")),)
        r = yield self.probe(server.address, metadata=pairs)
        self.assertTrue(r.success, r.log)
        sent = [kv for kv in server.metadata[0] if kv[0] == "x-tenant"]
        self.assertEqual(sent, [("x-tenant", "blue"), ("x-tenant", "green")])

    @defer.inlineCallbacks
    def test_metadata_grpc_refuses_fails_the_probe_before_connecting(self) -> Any:
        server = self.server()
        r = yield self.probe(server.address, metadata=(("bad key", ("v",)),))
        self.assertEqual((r.success, r.result), (False, "error"))
        self.assertIn("'bad key'", r.detail)
        self.assertIsNone(r.connect_duration)
        self.assertEqual(server.peers, [])

    @defer.inlineCallbacks
    def test_source_ip_address(self) -> Any:
        server = self.server()
        r = yield self.probe(server.address, source_ip_address="127.0.0.2")
        self.assertTrue(r.success, r.log)
        self.assertTrue(server.peers[0].startswith("ipv4:127.0.0.2:"), server.peers)

    @defer.inlineCallbacks
    def test_a_name_resolves_with_the_preferred_protocol(self) -> Any:
        server = self.server()
        r = yield self.probe(f"http://localhost:{server.port}", preferred_ip_protocol="ip4")
        self.assertTrue(r.success, r.log)
        self.assertEqual(r.ip, "127.0.0.1")
        # an IPv4 literal with ip6 preferred and no fallback: no suitable address
        r = yield self.probe(server.address, ip_protocol_fallback=False)
        self.assertEqual((r.success, r.result), (False, "dns_error"))
        self.assertIsNone(self.details(r).check)

    @defer.inlineCallbacks
    def test_ipv6(self) -> Any:
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback")
        server = self.server(host="::1")
        r = yield self.probe(f"[::1]:{server.port}")
        self.assertTrue(r.success, r.log)
        self.assertEqual(r.ip, "::1")

    @defer.inlineCallbacks
    def test_a_silent_peer_times_out_and_the_reactor_keeps_running(self) -> Any:
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody ever answers
        ticks: list[float] = []
        loop = LoopingCall(lambda: ticks.append(reactor.seconds()))
        loop.clock = reactor
        loop.start(0.01)
        started = reactor.seconds()
        try:
            r = yield self.probe(f"127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
        finally:
            loop.stop()
        elapsed = reactor.seconds() - started
        self.assertEqual((r.success, r.result), (False, "timeout"), r.detail)
        self.assertEqual(self.details(r).status_code, 4)  # DEADLINE_EXCEEDED
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 1.0 + grpc.GRACE + 2.0)  # a loaded machine's margin
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        self.assertLess(max(gaps), 0.5, "the reactor was blocked")
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_a_cancelled_probe_leaves_nothing_behind(self) -> Any:
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        d = self.probe(f"127.0.0.1:{silent.getsockname()[1]}", timeout=5.0)
        yield sleep(0.3)  # connected, the call under way
        d.cancel()
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(CancelledError))
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_the_relay_takes_no_connection_from_another_process(self) -> Any:
        relay = grpc._Relay(reactor)
        self.addCleanup(relay.close)
        upstream, peer = socket.socketpair()  # the target's side of the relay
        self.addCleanup(peer.close)
        relay.open(self.ctx, upstream, None)
        target = relay.listen()
        self.assertEqual(len(relay_sockets(listening=True)), 1)
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(5)\n"
            "s.connect('\\0' + sys.argv[1])\n"
            "print(repr(s.recv(1)))\n"
        )
        name = "\0" + target.removeprefix("unix-abstract:")
        out = yield utils.getProcessOutput(sys.executable, ["-c", code, name[1:]], reactor=reactor)
        self.assertEqual(out.strip(), b"b''")  # hung up on
        self.assertEqual(len(relay_sockets(listening=True)), 1, "still waiting for grpcio")
        mine = socket.socket(socket.AF_UNIX)
        self.addCleanup(mine.close)
        mine.connect(name)  # this process: taken, and the listener closes
        mine.sendall(b"ping")
        yield sleep(0.2)  # the reactor accepts and relays
        peer.settimeout(2)
        self.assertEqual(peer.recv(4), b"ping")  # relayed on to the target's side
        self.assertEqual(relay_sockets(listening=True), [])


class TLSTests(_GRPCTestCase):
    @defer.inlineCallbacks
    def test_verified_with_the_module_ca(self) -> Any:
        server = self.server(tls=True)
        cfg = TLSConfig(ca_file=str(self.certs.ca_cert))
        r = yield self.probe(server.address, tls=True, tls_config=cfg)
        self.assertTrue(r.success, r.log)
        d = self.details(r)
        self.assertTrue(d.ssl)
        assert d.tls is not None
        self.assertEqual(d.tls.subject, "CN=localhost,O=Netprobe Test")
        self.assertEqual(d.tls.earliest_expiry, self.certs.leaf_not_after)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_an_unknown_ca_fails_the_handshake(self) -> Any:
        r = yield self.probe(self.server(tls=True).address, tls=True)
        self.assertEqual((r.success, r.result), (False, "tls_error"))
        d = self.details(r)
        self.assertEqual((d.status_code, d.ssl), (14, False))
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_insecure_skip_verify(self) -> Any:
        cfg = TLSConfig(insecure_skip_verify=True)
        r = yield self.probe(self.server(tls=True).address, tls=True, tls_config=cfg)
        self.assertTrue(r.success, r.log)
        self.assertTrue(self.details(r).ssl)

    @defer.inlineCallbacks
    def test_server_name(self) -> Any:
        server = self.server(tls=True)
        good = TLSConfig(ca_file=str(self.certs.ca_cert), server_name="localhost")
        r = yield self.probe(server.address, tls=True, tls_config=good)
        self.assertTrue(r.success, r.log)
        bad = TLSConfig(ca_file=str(self.certs.ca_cert), server_name="other.test")
        r = yield self.probe(server.address, tls=True, tls_config=bad)
        self.assertEqual(r.result, "tls_error")

    @defer.inlineCallbacks
    def test_plaintext_to_a_tls_server_fails(self) -> Any:
        r = yield self.probe(self.server(tls=True).address)
        self.assertFalse(r.success)
        self.assertEqual(self.details(r).status_code, 14)
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_tls_to_a_plaintext_server_fails(self) -> Any:
        cfg = TLSConfig(ca_file=str(self.certs.ca_cert))
        r = yield self.probe(self.server().address, tls=True, tls_config=cfg)
        self.assertEqual((r.success, r.result), (False, "tls_error"))
        yield self.assertClean()

    @defer.inlineCallbacks
    def test_an_unreadable_ca_file_fails_before_connecting(self) -> Any:
        server = self.server(tls=True)
        missing = str(Path(temp_path(self)) / "missing.pem")
        r = yield self.probe(server.address, tls=True, tls_config=TLSConfig(ca_file=missing))
        self.assertEqual((r.success, r.result), (False, "error"))
        self.assertIn("ca_file", r.detail)
        self.assertEqual(server.peers, [])
