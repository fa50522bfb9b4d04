"""A 50,000-target reload, in a real process: probing and serving go on while it is built."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.procutil import Exporter, Processes, Sample, http, value

BIG = 50_000
LIVE = 100  # probed every 500 ms throughout: the scheduler's lag is measured on these


def _config(big: int) -> str:
    # nobody listens on these loopback addresses: each probe is a cheap refused connect
    lines = ["targets:"]
    lines += [
        f"  - address: 127.0.{i // 250}.{i % 250 + 1}:9\n    interval: 500ms" for i in range(LIVE)
    ]
    lines += [
        f"  - address: 127.1.{i // 250}.{i % 250 + 1}:9\n    interval: 1h" for i in range(big)
    ]
    return "\n".join(lines) + "\n"


def _reload_watching_health(ex: Exporter, config: Path, big: int) -> float:
    """Reload to ``big`` extra targets; the slowest /-/healthy answer meanwhile, in seconds."""
    config.write_text(_config(big))
    answers: list[int] = []

    def reload() -> None:
        answers.append(http(ex.url + "/-/reload", method="POST", timeout=120).status)

    thread = threading.Thread(target=reload, daemon=True)
    thread.start()
    slowest = 0.0
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        t0 = time.monotonic()
        assert http(ex.url + "/-/healthy", timeout=10).status == 200
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.02)
    thread.join(1)
    assert answers == [200]
    time.sleep(1.0)  # a second more of probing after the swap, while timers follow
    return slowest


def _lag(samples: list[Sample], le: str) -> float:
    found = value(samples, "netprobe_scheduler_lag_seconds_bucket", le=le)
    assert found is not None
    return found


def test_reloading_50000_targets_keeps_probing_and_serving(
    procs: Processes, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_config(0))
    ex = procs.start_exporter(f"--config.file={config}")
    time.sleep(1.0)  # the live targets' first probes go out
    before = ex.metrics()
    # up to 50,100 targets, then back down: the metrics are read with few series to render
    slowest = max(_reload_watching_health(ex, config, BIG), _reload_watching_health(ex, config, 0))
    loaded = [r["targets"] for r in ex.log_records() if r.get("msg") == "config loaded"]
    assert loaded == [str(LIVE), str(BIG + LIVE), str(LIVE)]
    after = ex.metrics()
    assert value(after, "netprobe_config_last_reload_successful") == 1
    skipped = value(after, "netprobe_scheduler_skipped_probes_total")
    assert skipped == value(before, "netprobe_scheduler_skipped_probes_total") == 0
    # generous bounds for a loaded machine; the strict figures are bench/reload.py's
    assert slowest < 0.5, f"/-/healthy took {slowest:.3f}s during the reload"
    started = _lag(after, "+Inf") - _lag(before, "+Inf")
    late = started - (_lag(after, "0.25") - _lag(before, "0.25"))
    assert started > LIVE, "the live targets were not probed during the reload"
    assert late == 0, f"{late:g} of {started:g} probes started over 250 ms late"
