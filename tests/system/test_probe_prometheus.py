"""A real Prometheus scraping ``/probe`` with the canonical blackbox scrape config.

One Prometheus (tmp storage, 127.0.0.1, 1 s scrape interval) has two identical jobs that differ
only in the exporter they relabel ``__address__`` to: ``blackbox`` (the real
blackbox_exporter, which validates the scrape config and the expectations) and ``netprobe``
(ours). Targets: a local HTTP server's URL and a URL on a closed port, module ``http_2xx``.

Needs the Debian ``prometheus`` and ``prometheus-blackbox-exporter`` packages: with CI set a
missing binary is a failure, otherwise a skip.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import blackbox, procutil, servers
from tests.support.procutil import Exporter, Processes, wait_for

pytestmark = pytest.mark.prometheus

POLL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Setup:
    prometheus: str  # base URL of the Prometheus API
    ok_url: str
    closed_url: str
    log: Path


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, str]]:
    """(a URL answering 200, a URL on a closed port)."""
    with servers.http_server() as http, servers.closed_port() as closed:
        yield http.url("/ok"), f"http://127.0.0.1:{closed}/"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "blackbox.yml"
    return blackbox.write_config(path, {"http_2xx": {"prober": "http"}})


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    p = Processes(tmp_path_factory.mktemp("procs"))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def ours(procs: Processes, config_file: Path) -> Exporter:
    return procs.start_exporter(f"--config.file={config_file}")


def _job(name: str, exporter_port: int, targets: list[str]) -> dict[str, Any]:
    """The scrape config from blackbox_exporter's README, pointed at ``exporter_port``."""
    return {
        "job_name": name,
        "metrics_path": "/probe",
        "params": {"module": ["http_2xx"]},
        "static_configs": [{"targets": targets}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{exporter_port}"},
        ],
    }


@pytest.fixture(scope="module")
def setup(
    site: tuple[str, str],
    bb: blackbox.Blackbox,
    ours: Exporter,
    procs: Processes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Setup:
    procutil.require_binary("prometheus")
    ok_url, closed_url = site
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "scrape_configs": [
                    _job("blackbox", bb.port, [ok_url, closed_url]),
                    _job("netprobe", ours.port, [ok_url, closed_url]),
                ],
            },
            sort_keys=False,
        )
    )
    base, log = procutil.start_prometheus(procs, config, workdir)
    return Setup(base, ok_url, closed_url, log)


def _query(base: str, query: str) -> dict[str, float]:
    """Instant query -> {instance label: value}."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    resp = procutil.http(url, timeout=5)
    assert resp.status == 200, resp
    doc = json.loads(resp.body)
    assert doc["status"] == "success", doc
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in doc["data"]["result"]}


def _targets(base: str, job: str) -> list[dict[str, Any]]:
    resp = procutil.http(f"{base}/api/v1/targets", timeout=5)
    assert resp.status == 200, resp
    active: list[dict[str, Any]] = json.loads(resp.body)["data"]["activeTargets"]
    return [t for t in active if t["labels"]["job"] == job]


def _check_job(s: Setup, job: str, exporter_port: int) -> None:
    state: dict[str, dict[str, float]] = {}

    def scraped() -> bool:
        state["up"] = _query(s.prometheus, f'up{{job="{job}"}}')
        state["success"] = _query(s.prometheus, f'probe_success{{job="{job}"}}')
        state["status"] = _query(s.prometheus, f'probe_http_status_code{{job="{job}"}}')
        return (
            state["success"].get(s.ok_url) == 1
            and state["success"].get(s.closed_url) == 0
            and state["status"].get(s.ok_url) == 200
            and state["up"] == {s.ok_url: 1, s.closed_url: 1}
            and all(t["health"] == "up" for t in _targets(s.prometheus, job))
        )

    try:
        wait_for(scraped, POLL_TIMEOUT, f"job {job}: probe results in prometheus", interval=0.5)
    except pytest.fail.Exception:
        targets = _targets(s.prometheus, job)
        errors = [(t["labels"].get("instance"), t["health"], t["lastError"]) for t in targets]
        pytest.fail(f"job {job}: last query results {state}; scrape state {errors}")
    assert state["up"] == {s.ok_url: 1, s.closed_url: 1}, state
    targets = _targets(s.prometheus, job)
    assert len(targets) == 2, targets
    for t in targets:
        assert t["health"] == "up", t
        scrape = urllib.parse.urlsplit(t["scrapeUrl"])
        assert scrape.netloc == f"127.0.0.1:{exporter_port}", t
        assert scrape.path == "/probe", t
        params = urllib.parse.parse_qs(scrape.query)
        assert params == {"module": ["http_2xx"], "target": [t["labels"]["instance"]]}, t


def test_prometheus_probes_through_blackbox(setup: Setup, bb: blackbox.Blackbox) -> None:
    """The reference: the scrape config and the expectations hold for the real blackbox."""
    _check_job(setup, "blackbox", bb.port)


def test_prometheus_probes_through_netprobe(setup: Setup, ours: Exporter) -> None:
    _check_job(setup, "netprobe", ours.port)
