"""The tcp prober's line reader under a flood, in-process on a loopback server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, tcp
from netprobe_exporter.resolver import Resolver
from tests.support.reactor import reactor
from tests.support.servers import Conn, tcp_server


class FlowControlTests(TestCase):
    """Reading a flood under flow control must still read a long, honest conversation whole."""

    @defer.inlineCallbacks
    def test_a_match_after_many_crlf_lines_is_found(self) -> Any:
        lines = 400_000  # past the pause threshold many times over, in bytes and in lines

        def chatty(conn: Conn) -> None:
            try:
                for _ in range(lines // 4096):
                    conn.send(b"noise\r\n" * 4096)
                conn.send(b"READY\r\n")
                conn.drain(timeout=10.0)
            except OSError:
                pass

        module = parse_config(
            "modules:\n  m: {prober: tcp, tcp: {query_response: [{expect: '^READY$'}]}}\n", "m.yml"
        ).modules["m"]
        ctx = ProbeContext(reactor, Resolver(reactor, servers=[], hosts_path="/dev/null"))
        with tcp_server(chatty) as server:
            r = yield tcp.probe(ctx, server.address, module, 20.0)
        self.assertEqual(r.result, "success", r.detail)
