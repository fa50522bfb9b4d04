"""Probe worker processes, end to end: a killed worker comes back and its series go on, a reload
reaches the running workers, SIGTERM stops them all, their logs come out of the main process."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import procutil
from tests.support.procutil import Exporter, Processes, child_pids, value, wait_for
from tests.support.servers import holding_server

COUNTER = "netprobe_probes_total"


@pytest.fixture
def ports() -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(procutil.loopback_listener()) for _ in range(6)]


def write_config(path: Path, ports: list[int], interval: str = "200ms") -> None:
    lines = ["defaults:", f"  interval: {interval}", "targets:"]
    lines += [f"  - address: 127.0.0.1:{p}" for p in ports]
    path.write_text("\n".join(lines) + "\n")


def successes(exporter: Exporter, port: int) -> float:
    v = value(exporter.metrics(), COUNTER, target=f"127.0.0.1:{port}", result="success")
    return -1.0 if v is None else v


def all_counting(exporter: Exporter, ports: list[int], above: float) -> dict[int, float]:
    return wait_for(
        lambda: (
            (now := {p: successes(exporter, p) for p in ports})
            and all(v > above for v in now.values())
            and now
        ),
        10,
        f"every target's success counter above {above:g}",
    )


def workers_of(exporter: Exporter, count: int = 2) -> list[int]:
    return wait_for(
        lambda: len(pids := child_pids(exporter.proc.pid)) == count and pids,
        10,
        f"{count} worker processes",
    )


def test_a_killed_worker_is_restarted_and_no_series_resets(
    procs: Processes, tmp_path: Path, ports: list[int]
) -> None:
    config = tmp_path / "config.yml"
    write_config(config, ports)
    exporter = procs.start_exporter(f"--config.file={config}", "--probe.workers=2")
    before = all_counting(exporter, ports, 2)
    workers = workers_of(exporter)
    os.kill(workers[0], signal.SIGKILL)
    killed = time.monotonic()
    replaced = wait_for(
        lambda: len(pids := child_pids(exporter.proc.pid)) == 2 and workers[0] not in pids,
        2.0,
        "a new worker process within 2 s",
    )
    assert replaced and time.monotonic() - killed < 2.0
    assert exporter.get("/-/ready").status == 200
    assert workers[1] in child_pids(exporter.proc.pid), "the other worker was left alone"
    # no counter went back, and every target (the killed worker's too) counts on
    now = {p: successes(exporter, p) for p in ports}
    assert all(now[p] >= before[p] for p in ports), (before, now)
    after = all_counting(exporter, ports, max(now.values()))
    assert all(after[p] > before[p] for p in ports)
    assert value(exporter.metrics(), "netprobe_worker_restarts_total") == 1
    assert exporter.get("/-/ready").status == 200
    exited = [r for r in exporter.log_records() if r.get("msg") == "worker exited, restarting it"]
    assert [(r["worker"], r["signal"]) for r in exited] == [("0", "9")]


def test_a_reload_reaches_the_running_workers(
    procs: Processes, tmp_path: Path, ports: list[int]
) -> None:
    config = tmp_path / "config.yml"
    first, kept, gone, added = ports[:4], ports[:3], ports[3], ports[4:]
    write_config(config, first)
    exporter = procs.start_exporter(f"--config.file={config}", "--probe.workers=2")
    before = all_counting(exporter, first, 2)
    workers = workers_of(exporter)
    write_config(config, [*kept, *added])
    assert exporter.post("/-/reload").status == 200
    all_counting(exporter, added, 0)
    after = all_counting(exporter, kept, max(before.values()))
    assert all(after[p] > before[p] for p in kept)
    assert child_pids(exporter.proc.pid) == workers, "no worker was restarted"
    assert successes(exporter, gone) == -1.0, "the removed target's series is gone"
    assert value(exporter.metrics(), "netprobe_worker_restarts_total") == 0
    # each worker logged its new share through the main process's log
    assigned = {
        r["worker"]: int(r["targets"])  # each worker's last
        for r in exporter.log_records()
        if r.get("msg") == "targets assigned"
    }
    assert assigned.keys() == {"0", "1"}
    assert sum(assigned.values()) == len(kept) + len(added)


def test_sigterm_with_probes_in_flight_stops_every_process_within_2s(
    procs: Processes, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(holding_server()) for _ in range(4)]
        config = tmp_path / "config.yml"
        config.write_text(
            "defaults: {interval: 5s, module: expect}\n"
            "modules:\n"
            "  expect: {prober: tcp, timeout: 4s, tcp: {query_response: [{expect: '^never'}]}}\n"
            "targets:\n" + "".join(f"  - address: {s.address}\n" for s in servers)
        )
        exporter = procs.start_exporter(f"--config.file={config}", "--probe.workers=2")
        workers = workers_of(exporter)
        wait_for(
            lambda: (value(exporter.metrics(), "netprobe_inflight_probes") or 0) >= 2,
            10,
            "probes in flight in the workers",
        )
        exporter.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert exporter.wait_exit(10) == 0, exporter.stderr()
        assert time.monotonic() - sent < 2.0, exporter.stderr()
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    assert alive == [], "worker processes outlived the exporter"


def test_probe_requests_are_answered_by_workers_with_the_policy_applied(
    procs: Processes, tmp_path: Path, ports: list[int]
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        f"targets:\n  - address: 127.0.0.1:{ports[0]}\nprobe_policy:\n  deny: [127.0.0.2/32]\n"
    )
    exporter = procs.start_exporter(f"--config.file={config}", "--probe.workers=2")
    workers_of(exporter)
    wait_for(lambda: exporter.get("/-/ready").status == 200, 10, "readiness")
    for _ in range(4):  # more than one worker's share
        ok = exporter.get(f"/probe?target=127.0.0.1:{ports[1]}&module=tcp_connect")
        assert ok.status == 200 and "probe_success 1" in ok.text, ok
    refused = exporter.get(f"/probe?target=127.0.0.2:{ports[1]}&module=tcp_connect")
    assert refused.status == 403 and "probe_policy" in refused.text, refused
    debug = exporter.get(f"/probe?target=127.0.0.1:{ports[1]}&module=tcp_connect&debug=true")
    assert debug.status == 200 and "Probe succeeded" in debug.text, debug
    assert value(exporter.metrics(), "netprobe_probe_requests_total") == 6
    # the history has the workers' probes with their notes: /logs makes their debug page
    logs = exporter.get(f"/logs?target=127.0.0.1:{ports[1]}&module=tcp_connect")
    assert logs.status == 200, logs
    assert "Logs for the probe:" in logs.text and "Probe succeeded" in logs.text, logs.text
    assert "probe_success 1" in logs.text and "Module configuration:" in logs.text
