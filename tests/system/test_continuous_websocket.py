"""websocket targets in continuous mode: the core families and the websocket ones in /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.support.metrics import required as value
from tests.support.procutil import Processes, Sample, wait_for
from tests.support.procutil import value as sample_value
from tests.support.servers import WSConn, make_certs, websocket_server

Scraped = tuple[list[Sample], dict[str, str]]


def _echo(ws: WSConn) -> None:
    ws.accept()
    ws.send_text("hello netprobe")
    reply = ws.receive()
    if reply is not None:
        ws.send_text(f"echo {reply}")
    ws.until_closed(5.0)


def _refuse(ws: WSConn) -> None:
    ws.reject(404)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp_path = tmp_path_factory.mktemp("continuous-websocket")
    certs = make_certs(tmp_path / "certs")
    procs = Processes(tmp_path)
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(websocket_server(_echo))
        tls = stack.enter_context(websocket_server(_echo, certs.server_context("valid")))
        refusing = stack.enter_context(websocket_server(_refuse))
        where = {
            "plain": f"ws://127.0.0.1:{plain.port}/",
            "tls": f"wss://localhost:{tls.port}/",
            "refusing": f"ws://127.0.0.1:{refusing.port}/",
        }
        config = tmp_path / "config.yml"
        config.write_text(
            f"""
defaults:
  interval: 500ms
modules:
  ws_echo:
    prober: websocket
    websocket:
      http_config: {{tls_config: {{ca_file: {certs.ca_cert}}}}}
      query_response:
        - expect: "^hello (.+)"
          send: "${{1}}"
        - expect: "^echo netprobe$"
  ws_upgrade: {{prober: websocket}}
targets:
  - {{address: "{where["plain"]}", module: ws_echo}}
  - {{address: "{where["tls"]}", module: ws_echo}}
  - {{address: "{where["refusing"]}", module: ws_upgrade}}
"""
        )
        expected = {
            (where["plain"], "ws_echo"): 1.0,
            (where["tls"], "ws_echo"): 1.0,
            (where["refusing"], "ws_upgrade"): 0.0,
        }
        try:
            exporter = procs.start_exporter(f"--config.file={config}")

            def settled() -> list[Sample] | None:
                samples = exporter.metrics()
                up = {
                    (s.labels["target"], s.labels["module"]): s.value
                    for s in samples
                    if s.name == "netprobe_up"
                }
                counts = [
                    s.value
                    for s in samples
                    if s.name == "netprobe_websocket_duration_seconds_count"
                    and s.labels.get("phase") == "transfer"
                ]
                probes = [
                    s.value for s in samples if s.name == "netprobe_probes_total" and s.value > 0
                ]
                ok = (
                    up == expected
                    and len(counts) == 2
                    and min(counts) >= 2
                    and len(probes) >= len(expected)
                    and min(probes) >= 2  # every target's results counted twice or more
                )
                return samples if ok else None

            samples = wait_for(settled, 30, "every websocket target probed and settled")
        finally:
            procs.close()
    yield samples, where


def test_websocket_targets_report_status_and_phases(scraped: Scraped) -> None:
    samples, where = scraped
    ok = {"target": where["plain"], "module": "ws_echo"}
    refused = {"target": where["refusing"], "module": "ws_upgrade"}
    assert value(samples, "netprobe_websocket_status_code", **ok) == 101
    assert value(samples, "netprobe_websocket_status_code", **refused) == 404
    assert value(samples, "netprobe_probes_total", result="success", **ok) >= 2
    assert value(samples, "netprobe_probes_total", result="protocol_error", **refused) >= 2
    assert value(samples, "netprobe_connect_duration_seconds_count", **ok) >= 2
    for phase in ("processing", "transfer"):
        assert value(samples, "netprobe_websocket_duration_seconds_count", phase=phase, **ok) >= 2
    # a refused upgrade reached no phase's end
    assert sample_value(samples, "netprobe_websocket_duration_seconds_count",
                        phase="processing", **refused) in (None, 0.0)  # fmt: skip


def test_a_wss_target_reports_its_certificate(scraped: Scraped) -> None:
    samples, where = scraped
    tls = {"target": where["tls"], "module": "ws_echo"}
    assert value(samples, "netprobe_tls_version_info", version="TLS 1.3", **tls) == 1
    assert value(samples, "netprobe_tls_cert_expiry_timestamp_seconds", **tls) > 0
    plain = {"target": where["plain"], "module": "ws_echo"}
    assert sample_value(samples, "netprobe_tls_version_info", **plain) is None
