"""The exposition against the real consumers: ``promtool check metrics`` and a Prometheus server.

Needs the Debian ``prometheus`` package (``promtool``, ``prometheus``); with CI set a missing
binary is a failure, otherwise a skip.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support import procutil
from tests.support.procutil import Exporter, Processes, wait_for

pytestmark = pytest.mark.prometheus

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _probing_exporter(procs: Processes, tmp_path: Path, open_port: int, closed: int) -> Exporter:
    """An exporter probing an open and a closed loopback port every 200ms, both seen once."""
    path = tmp_path / "netprobe.yml"
    path.write_text(
        "defaults:\n"
        "  interval: 200ms\n"
        '  labels: {team: "a b\\\\c"}\n'  # a value that needs escaping in the exposition
        "targets:\n"
        f"  - address: 127.0.0.1:{open_port}\n"
        f"  - address: 127.0.0.1:{closed}\n"
    )
    exporter = procs.start_exporter(f"--config.file={path}")

    def both_probed() -> bool:
        samples = exporter.metrics()
        ok = procutil.value(
            samples, "netprobe_probes_total", target=f"127.0.0.1:{open_port}", result="success"
        )
        refused = procutil.value(
            samples, "netprobe_probes_total", target=f"127.0.0.1:{closed}", result="refused"
        )
        return bool(ok and refused)

    wait_for(both_probed, 5, "both targets probed once")
    return exporter


def _promtool_check(promtool: str, exposition: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition.decode("utf-8"),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_promtool_accepts_text_format(procs: Processes, tmp_path: Path, listener: int) -> None:
    promtool = procutil.require_binary("promtool")
    exporter = _probing_exporter(procs, tmp_path, listener, procutil.closed_port())
    resp = exporter.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    assert 'team="a b\\\\c"' in resp.text  # the escaped label made it into the output
    done = _promtool_check(promtool, resp.body)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_promtool_on_openmetrics_only_lints_counter_help(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    promtool = procutil.require_binary("promtool")
    exporter = _probing_exporter(procs, tmp_path, listener, procutil.closed_port())
    resp = exporter.get("/metrics", headers={"Accept": OPENMETRICS})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    om = resp.text
    assert om.endswith("# EOF\n")
    done = _promtool_check(promtool, resp.body)
    # promtool 2.42's `check metrics` parses only the classic text format. In OpenMetrics a
    # counter family is named without `_total` (`# HELP netprobe_probes ...`, `# TYPE
    # netprobe_probes counter`) while its samples keep it (`netprobe_probes_total{...}`), so
    # promtool's linter finds no HELP for `netprobe_probes_total` and reports "no help text"
    # (exit 3, lint problems). That, and only that, is acceptable: any other line (a parse
    # error, a naming or unit lint) is a real defect in the output.
    assert done.returncode in (0, 3), done
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines or done.returncode == 0
    for line in lines:
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)_total no help text", line)
        assert m is not None, f"unexpected promtool output: {line!r}\n{done.stdout}{done.stderr}"
        family = m.group(1)
        assert f"# HELP {family} " in om, f"{family} has no HELP in the OpenMetrics output"
        assert f"# TYPE {family} counter\n" in om
    # the OpenMetrics counters promtool trips over must include ours
    assert "netprobe_probes_total no help text" in lines or done.returncode == 0


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    resp = procutil.http(url, timeout=5)
    assert resp.status == 200, resp
    doc = json.loads(resp.body)
    assert doc["status"] == "success", doc
    return doc["data"]


def _query(base: str, query: str) -> dict[str, float]:
    """Instant query -> {target label: value}."""
    data = _api(base, "/api/v1/query", query=query)
    return {r["metric"].get("target", ""): float(r["value"][1]) for r in data["result"]}


def test_prometheus_scrapes_the_exporter(procs: Processes, tmp_path: Path, listener: int) -> None:
    procutil.require_binary("prometheus")
    closed = procutil.closed_port()
    exporter = _probing_exporter(procs, tmp_path, listener, closed)
    open_t, closed_t = f"127.0.0.1:{listener}", f"127.0.0.1:{closed}"

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: netprobe\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    base, _log = procutil.start_prometheus(procs, config, tmp_path)

    def scraped() -> bool:
        up = _query(base, "netprobe_up")
        count = _query(base, "netprobe_connect_duration_seconds_count")
        refused = _query(base, 'netprobe_probes_total{result="refused"}')
        return (
            up.get(open_t) == 1
            and up.get(closed_t) == 0
            and count.get(open_t, 0) >= 2
            and refused.get(closed_t, 0) > 0
        )

    wait_for(scraped, 30, "prometheus to have the exporter's series", interval=0.5)

    def healthy() -> dict | None:  # type: ignore[type-arg]
        """The last scrape went well (one slow scrape on a loaded machine is retried)."""
        data = _api(base, "/api/v1/targets")
        active = [t for t in data["activeTargets"] if t["labels"]["job"] == "netprobe"]
        ok = len(active) == 1 and active[0]["health"] == "up"
        return data if ok else None

    data = wait_for(healthy, 30, "the exporter's target up in prometheus", interval=0.5)
    active = [t for t in data["activeTargets"] if t["labels"]["job"] == "netprobe"]
    assert len(active) == 1, data
    target = active[0]
    assert target["health"] == "up", target
    assert target["lastError"] == "", target
    assert target["scrapeUrl"] == f"http://127.0.0.1:{exporter.port}/metrics"

    # the user label, with its escapes, survived the exposition and Prometheus' parser
    teams = _api(base, "/api/v1/label/team/values")
    assert teams == ["a b\\c"], teams
    # histograms arrive whole: a +Inf bucket equal to the count
    inf = _query(base, 'netprobe_connect_duration_seconds_bucket{le="+Inf"}')
    assert inf.get(open_t, 0) >= 2
    # the closed target never connected: its connect histogram is there, empty
    assert _query(base, "netprobe_connect_duration_seconds_count").get(closed_t) == 0
