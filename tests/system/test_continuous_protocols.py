"""Every module works in continuous mode too: http and TLS targets feed their own series."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.metrics import required as value
from tests.support.procutil import Processes, Sample, require_binary, wait_for
from tests.support.servers import http_server, make_certs, tls_server

Scraped = tuple[list[Sample], str, dict[str, str]]


def _write_config(path: Path, ca: Path, http_url: str, https_url: str, tls_addr: str) -> None:
    path.write_text(
        f"""
defaults:
  interval: 500ms
modules:
  https_ca:
    prober: http
    http:
      tls_config: {{ca_file: {ca}}}
  tls_ca:
    prober: tcp
    tcp:
      tls: true
      tls_config: {{ca_file: {ca}}}
  http_404_ok:
    prober: http
    http:
      valid_status_codes: [404]
targets:
  - address: {http_url}
    module: http_2xx
  - address: {http_url}missing
    module: http_2xx
  - address: {https_url}
    module: https_ca
  - address: {tls_addr}
    module: tls_ca
  - address: {tls_addr}
    module: tls_connect
"""
    )


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp_path = tmp_path_factory.mktemp("continuous")
    procs = Processes(tmp_path)
    certs = make_certs(tmp_path / "certs")
    with (
        http_server() as plain,
        http_server(certs.server_context("valid")) as https,
        tls_server(certs.server_context("valid")) as tls,
    ):
        https_url = f"https://localhost:{https.port}/"
        tls_addr = f"localhost:{tls.port}"
        config = tmp_path / "config.yml"
        _write_config(config, certs.ca_cert, plain.url("/"), https_url, tls_addr)
        try:
            exporter = procs.start_exporter(f"--config.file={config}")

            def settled(samples: list[Sample]) -> bool:
                """Every target probed a few times and its last result the expected one (one
                slow exchange on a loaded machine can time out; the next one settles it)."""
                totals: dict[tuple[str, str], float] = {}
                for s in samples:
                    if s.name == "netprobe_probes_total":
                        key = (s.labels["target"], s.labels["module"])
                        totals[key] = totals.get(key, 0) + s.value
                up = {
                    (s.labels["target"], s.labels["module"]): s.value
                    for s in samples
                    if s.name == "netprobe_up"
                }
                expected_up = {
                    (plain.url("/"), "http_2xx"): 1,
                    (plain.url("/") + "missing", "http_2xx"): 0,
                    (https_url, "https_ca"): 1,
                    (tls_addr, "tls_ca"): 1,
                    (tls_addr, "tls_connect"): 0,
                }
                codes = {
                    s.labels["target"]: s.value
                    for s in samples
                    if s.name == "netprobe_http_status_code" and s.labels["module"] == "http_2xx"
                }
                return (
                    codes == {plain.url("/"): 200, plain.url("/") + "missing": 404}
                    and len(totals) == 5
                    and min(totals.values()) >= 3
                    and all(up.get(k) == v for k, v in expected_up.items())
                )

            def enough() -> tuple[list[Sample], str] | None:
                samples = exporter.metrics()
                return (samples, exporter.get("/metrics").text) if settled(samples) else None

            samples, text = wait_for(enough, 30, "every target probed and settled")
        finally:
            procs.close()
        yield samples, text, {"plain": plain.url("/"), "https": https_url, "tls": tls_addr}


def test_http_targets_have_phase_histograms_and_status(
    scraped: Scraped,
) -> None:
    samples, _, names = scraped
    ok = {"target": names["plain"], "module": "http_2xx"}
    assert value(samples, "netprobe_up", **ok) == 1
    assert value(samples, "netprobe_http_status_code", **ok) == 200
    for phase in ("resolve", "connect", "tls", "processing", "transfer"):
        assert value(samples, "netprobe_http_duration_seconds_count", **ok, phase=phase) >= 2
    assert value(samples, "netprobe_http_duration_seconds_sum", **ok, phase="processing") > 0
    assert value(samples, "netprobe_http_duration_seconds_sum", **ok, phase="tls") == 0
    missing = {"target": names["plain"] + "missing", "module": "http_2xx"}
    assert value(samples, "netprobe_up", **missing) == 0
    assert value(samples, "netprobe_http_status_code", **missing) == 404
    assert value(samples, "netprobe_probes_total", **missing, result="protocol_error") >= 2


def test_tls_targets_report_expiry_and_version(scraped: Scraped, tmp_path: Path) -> None:
    samples, _, names = scraped
    https = {"target": names["https"], "module": "https_ca"}
    assert value(samples, "netprobe_up", **https) == 1
    assert value(samples, "netprobe_tls_cert_expiry_timestamp_seconds", **https) > 1.7e9
    assert value(samples, "netprobe_http_duration_seconds_sum", **https, phase="tls") > 0
    assert value(samples, "netprobe_tls_version_info", **https, version="TLS 1.3") == 1
    tls = {"target": names["tls"], "module": "tls_ca"}
    assert value(samples, "netprobe_up", **tls) == 1
    assert value(samples, "netprobe_tls_cert_expiry_timestamp_seconds", **tls) > 1.7e9
    # the built-in tls_connect trusts the system roots only: the test CA is unknown there
    builtin = {"target": names["tls"], "module": "tls_connect"}
    assert value(samples, "netprobe_up", **builtin) == 0
    assert value(samples, "netprobe_probes_total", **builtin, result="tls_error") >= 2


def test_output_with_protocol_series_passes_promtool(scraped: Scraped, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    _, text, _ = scraped
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
