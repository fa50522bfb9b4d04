"""probe_policy: which targets /probe may reach, checked on the resolved address; limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import procutil
from tests.support.procutil import Exporter, Processes
from tests.support.servers import Conn, http_server, tcp_server


@pytest.fixture
def guarded(procs: Processes, tmp_path: Path) -> Iterator[tuple[Exporter, int, int]]:
    def hold(conn: Conn) -> None:
        conn.stop.wait(3.0)

    with tcp_server(hold) as held, tcp_server(hold, "127.0.0.2") as allowed:
        config = tmp_path / "config.yml"
        config.write_text(
            "modules:\n  slow:\n    prober: tcp\n    timeout: 2s\n"
            "    tcp:\n      query_response: [{expect: never}]\n"
            "probe_policy:\n"
            "  allow: [127.0.0.2/32, '*.allowed.test']\n"
            "  deny: [127.0.0.3]\n"
            "  max_concurrent: 1\n"
        )
        yield procs.start_exporter(f"--config.file={config}"), held.port, allowed.port


def _probe(ex: Exporter, target: str, module: str = "tcp_connect") -> procutil.Response:
    return procutil.http(f"{ex.url}/probe?module={module}&target={target}", timeout=10)


def test_probe_refuses_what_the_policy_denies(guarded: tuple[Exporter, int, int]) -> None:
    ex, held, allowed = guarded
    ok = _probe(ex, f"127.0.0.2:{allowed}")
    assert ok.status == 200 and b"probe_success 1" in ok.body
    refused = _probe(ex, f"127.0.0.1:{held}")
    assert refused.status == 403
    assert b"refused by probe_policy: 127.0.0.1 (127.0.0.1) matches no allow rule" in refused.body
    # a name is checked on the address it resolves to
    by_name = _probe(ex, f"localhost:{held}")
    assert by_name.status == 403 and b"localhost (127.0.0.1)" in by_name.body
    assert _probe(ex, "127.0.0.3:80").status == 403


def test_an_http_redirect_cannot_smuggle_in_a_denied_address(
    procs: Processes, tmp_path: Path
) -> None:
    with http_server() as hidden:

        def redirect(conn: Conn) -> None:
            while conn.readline():
                pass  # the request line and headers, up to the blank line
            location = hidden.url("/ok").encode()
            conn.send(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n"
                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip

        with tcp_server(redirect, "127.0.0.2") as allowed:
            config = tmp_path / "config.yml"
            config.write_text("probe_policy:\n  allow: [127.0.0.2/32]\n")
            ex = procs.start_exporter(f"--config.file={config}")
            smuggled = _probe(ex, f"http://127.0.0.2:{allowed.port}/", "http_2xx")
            assert smuggled.status == 403, smuggled
            assert b"127.0.0.1 (127.0.0.1) matches no allow rule" in smuggled.body
            assert hidden.requests == []  # the denied host never saw a request


def test_concurrent_probes_are_limited(guarded: tuple[Exporter, int, int]) -> None:
    ex, _, allowed = guarded
    first: list[procutil.Response] = []
    slow = threading.Thread(target=lambda: first.append(_probe(ex, f"127.0.0.2:{allowed}", "slow")))
    slow.start()
    # the slow probe is running once its connection is up: the limit is 1
    procutil.wait_for(
        lambda: "01" in procutil.tcp_socket_states(allowed, local=True), 5, "the slow probe"
    )
    second = _probe(ex, f"127.0.0.2:{allowed}")
    slow.join(15)
    assert second.status == 429, second
    assert first and first[0].status == 200 and b"probe_success 0" in first[0].body
    assert _probe(ex, f"127.0.0.2:{allowed}").status == 200  # the slot is free again


def test_max_timeout_caps_what_the_scrape_header_asks(procs: Processes, tmp_path: Path) -> None:
    def hold(conn: Conn) -> None:
        conn.stop.wait(10.0)

    with tcp_server(hold) as held:
        config = tmp_path / "config.yml"
        config.write_text(
            "modules:\n  wait:\n    prober: tcp\n    tcp:\n      query_response: [{expect: x}]\n"
            "probe_policy:\n  max_timeout: 1s\n"
        )
        ex = procs.start_exporter(f"--config.file={config}")
        t0 = time.monotonic()
        reply = procutil.http(
            f"{ex.url}/probe?module=wait&target=127.0.0.1:{held.port}",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"},
            timeout=20,
        )
        elapsed = time.monotonic() - t0
    assert reply.status == 200 and b"probe_success 0" in reply.body
    assert 0.9 <= elapsed < 2.5, f"answered after {elapsed:.2f} s; max_timeout is 1 s"


def test_max_per_source_limits_one_client(procs: Processes, tmp_path: Path) -> None:
    def hold(conn: Conn) -> None:
        conn.stop.wait(3.0)

    with tcp_server(hold) as held:
        config = tmp_path / "config.yml"
        config.write_text(
            "modules:\n  slow:\n    prober: tcp\n    timeout: 2s\n"
            "    tcp:\n      query_response: [{expect: never}]\n"
            "probe_policy:\n  max_concurrent: 10\n  max_per_source: 1\n"
        )
        ex = procs.start_exporter(f"--config.file={config}")
        first: list[procutil.Response] = []
        target = f"127.0.0.1:{held.port}"
        slow = threading.Thread(target=lambda: first.append(_probe(ex, target, "slow")))
        slow.start()
        procutil.wait_for(lambda: held.connections >= 1, 5, "the slow probe")
        second = _probe(ex, target)
        slow.join(15)
    assert second.status == 429
    assert b"too many /probe requests running from 127.0.0.1" in second.body
    assert first and first[0].status == 200
