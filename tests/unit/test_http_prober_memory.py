"""The http prober against canned responses: a memory reactor and string transports, no socket.

The connect step (``probes.connect``) is replaced by one that hands the prober's protocol a
``StringTransport``; everything above it (the agent, the timing wrapper, status, body and
redirect rules, the timeout) is the prober's own code.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport

from netprobe_exporter.config import parse_config
from netprobe_exporter.probes import ProbeContext, ProbeResult
from netprobe_exporter.probes import http as http_prober
from netprobe_exporter.resolver import Resolver

MODULES = parse_config(
    "modules:\n"
    "  ok: {prober: http}\n"
    "  body: {prober: http, http: {fail_if_body_matches_regexp: ['maintenance']}}\n",
    "m.yml",
).modules


class Wire:
    """Stands in for connect()/adopt(): each connection is a (protocol, StringTransport)."""

    def __init__(self) -> None:
        self.conns: list[tuple[IProtocol, StringTransport]] = []

    async def connect(self, *args: Any) -> object:
        return object()

    def adopt(self, ctx: ProbeContext, sock: object, factory: IProtocolFactory) -> IProtocol:
        proto = factory.buildProtocol(None)
        assert proto is not None
        transport = StringTransport()
        proto.makeConnection(transport)
        self.conns.append((proto, transport))
        return proto

    def answer(self, index: int, response: bytes) -> bytes:
        """Feed ``response`` to connection ``index``; return the request it had sent."""
        proto, transport = self.conns[index]
        request = transport.value()
        proto.dataReceived(response)
        return request


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    w = Wire()
    monkeypatch.setattr(http_prober, "connect", w.connect)
    monkeypatch.setattr(http_prober, "adopt", w.adopt)
    return w


def start(url: str, module: str = "ok", timeout: float = 5.0) -> tuple[
    MemoryReactorClock, Deferred[ProbeResult], list[ProbeResult]
]:  # fmt: skip
    clock = MemoryReactorClock()
    ctx = ProbeContext(clock, Resolver(clock, servers=[], hosts_path="/dev/null"))
    d = http_prober.probe(ctx, url, MODULES[module], timeout)
    results: list[ProbeResult] = []
    d.addCallback(results.append)
    return clock, d, results


def response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_a_200_succeeds_with_every_phase(wire: Wire) -> None:
    _, _, results = start("http://127.0.0.1:8080/health")
    request = wire.answer(0, response("200 OK", b"fine"))
    assert request.startswith(b"GET /health HTTP/1.1\r\n"), request
    [r] = results
    assert (r.success, r.result) == (True, "success"), r.detail
    assert r.details is not None and r.details.status_code == 200
    assert r.details.phases is not None
    assert [p for p, _ in r.details.phases.items()] == list(http_prober.PHASES)
    assert all(v >= 0 for _, v in r.details.phases.items()), r.details.phases


def test_a_status_outside_2xx_fails(wire: Wire) -> None:
    _, _, results = start("http://127.0.0.1:8080/")
    wire.answer(0, response("503 Service Unavailable", b"busy"))
    [r] = results
    assert (r.success, r.result) == (False, "protocol_error"), r.detail
    assert r.details is not None and r.details.status_code == 503


def test_a_body_matching_a_forbidden_regex_fails(wire: Wire) -> None:
    _, _, results = start("http://127.0.0.1:8080/", module="body")
    wire.answer(0, response("200 OK", b"down for maintenance"))
    [r] = results
    assert (r.success, r.result) == (False, "protocol_error"), r.detail
    assert r.details is not None and r.details.status_code == 200
    assert r.details.failed_due_to_regex


def test_no_answer_is_a_timeout_when_the_clock_runs_out(wire: Wire) -> None:
    clock, _, results = start("http://127.0.0.1:8080/", timeout=2.0)
    assert len(wire.conns) == 1 and results == []
    clock.advance(1.0)
    assert results == []
    clock.advance(1.5)
    [r] = results
    assert (r.success, r.result) == (False, "timeout"), r.detail
    assert wire.conns[0][1].disconnecting or wire.conns[0][1].disconnected


def test_a_redirect_is_followed_on_a_new_connection(wire: Wire) -> None:
    _, _, results = start("http://127.0.0.1:8080/old")
    wire.answer(0, response("302 Found", b"", "Location: /new"))
    assert len(wire.conns) == 2 and results == []
    request = wire.answer(1, response("200 OK", b"here"))
    assert request.startswith(b"GET /new HTTP/1.1\r\n"), request
    [r] = results
    assert (r.success, r.result) == (True, "success"), r.detail
    assert r.details is not None and r.details.redirects == 1 and r.details.status_code == 200
