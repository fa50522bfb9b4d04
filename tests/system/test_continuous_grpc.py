"""grpc targets in continuous mode: the core families and the grpc ones in /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.metrics import required as value
from tests.support.procutil import Processes, Sample, wait_for
from tests.support.procutil import value as sample_value
from tests.support.servers import grpc_health_server, make_certs

Scraped = tuple[list[Sample], dict[str, str]]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp_path = tmp_path_factory.mktemp("continuous-grpc")
    certs = make_certs(tmp_path / "certs")
    procs = Processes(tmp_path)
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(grpc_health_server())
        tls = stack.enter_context(grpc_health_server((certs.leaf_chain, certs.leaf_key)))
        where = {"plain": plain.address, "tls": tls.address}
        config = tmp_path / "config.yml"
        config.write_text(
            f"""
defaults:
  interval: 500ms
modules:
  grpc_up: {{prober: grpc, grpc: {{}}}}
  grpc_down: {{prober: grpc, grpc: {{service: down}}}}
  grpc_tls: {{prober: grpc, grpc: {{tls: true, tls_config: {{ca_file: {certs.ca_cert}}}}}}}
targets:
  - {{address: "{plain.address}", module: grpc_up}}
  - {{address: "{plain.address}", module: grpc_down}}
  - {{address: "{tls.address}", module: grpc_tls}}
"""
        )
        expected = {
            (plain.address, "grpc_up"): 1.0,
            (plain.address, "grpc_down"): 0.0,
            (tls.address, "grpc_tls"): 1.0,
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
                    if s.name == "netprobe_grpc_check_duration_seconds_count"
                ]
                ok = up == expected and len(counts) == 3 and min(counts) >= 2
                return samples if ok else None

            samples = wait_for(settled, 30, "every grpc target probed and settled")
        finally:
            procs.close()
    yield samples, where


def test_grpc_targets_report_status_and_serving_status(scraped: Scraped) -> None:
    samples, where = scraped
    up = {"target": where["plain"], "module": "grpc_up"}
    down = {"target": where["plain"], "module": "grpc_down"}
    assert value(samples, "netprobe_grpc_status_code", **up) == 0
    assert value(samples, "netprobe_grpc_serving_status_info", serving_status="SERVING", **up) == 1
    assert value(samples, "netprobe_grpc_status_code", **down) == 0
    assert value(samples, "netprobe_grpc_serving_status_info",
                 serving_status="NOT_SERVING", **down) == 1  # fmt: skip
    assert value(samples, "netprobe_probes_total", result="protocol_error", **down) >= 2
    assert value(samples, "netprobe_probes_total", result="success", **up) >= 2
    assert value(samples, "netprobe_connect_duration_seconds_count", **up) >= 2


def test_a_tls_target_reports_its_certificate(scraped: Scraped, tmp_path: Path) -> None:
    samples, where = scraped
    tls = {"target": where["tls"], "module": "grpc_tls"}
    assert value(samples, "netprobe_tls_version_info", version="TLS 1.3", **tls) == 1
    assert value(samples, "netprobe_tls_cert_expiry_timestamp_seconds", **tls) > 0
    plain = {"target": where["plain"], "module": "grpc_up"}
    assert sample_value(samples, "netprobe_tls_version_info", **plain) is None


def test_each_grpc_family_has_one_series_per_target(scraped: Scraped) -> None:
    """The serving status is one info series (its label the last answer), not one per value
    ever seen: a target's series stay as the families declared them."""
    samples, _ = scraped
    for name in ("netprobe_grpc_serving_status_info", "netprobe_grpc_status_code",
                 "netprobe_grpc_check_duration_seconds_count"):  # fmt: skip
        keys = [(s.labels["target"], s.labels["module"]) for s in samples if s.name == name]
        assert len(keys) == len(set(keys)) == 3, (name, keys)
