"""Label and series limits seen from outside: --config.check and a reload of the exporter."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.procutil import Processes, http, run_exporter, value, wait_for


def labels(n: int, prefix: str = "l") -> str:
    return "{" + ", ".join(f"{prefix}{i}: v" for i in range(n)) + "}"


def test_config_check_reports_the_limits(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("targets:\n  - {address: 127.0.0.1:1, labels: {team: a}}\n")
    ok = run_exporter(f"--config.file={config}", "--config.check")
    assert ok.returncode == 0, ok
    assert "1 targets, 68 series of limits.sample_limit 10000000)" in ok.stdout, ok.stdout
    config.write_text(f"targets:\n  - {{address: 127.0.0.1:1, labels: {labels(31)}}}\n")
    bad = run_exporter(f"--config.file={config}", "--config.check")
    assert bad.returncode == 1
    assert f"{config}:2: targets[0].labels: 31 labels, more than limits.label_limit (30)" in (
        bad.stderr
    )
    (tmp_path / "t.yml").write_text("- targets: [127.0.0.1:2, 127.0.0.1:3]\n")
    config.write_text("target_files: [{files: [t.yml]}]\nlimits: {sample_limit: 100}\n")
    files = run_exporter(f"--config.file={config}", "--config.check")
    assert files.returncode == 1
    assert f"{tmp_path}/t.yml: 136 series" in files.stderr, files.stderr


def test_a_reload_with_a_6_mib_label_value_is_refused_and_health_keeps_answering(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    config = tmp_path / "config.yml"
    good = f"targets:\n  - {{address: '127.0.0.1:{listener}', interval: 200ms}}\n"
    config.write_text(good)
    ex = procs.start_exporter(f"--config.file={config}")
    wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
    big = "v" * (6 << 20)
    config.write_text(good.replace("200ms}", f"200ms, labels: {{x: {big}}}}}"))
    answers: list[tuple[int, float]] = []  # (status, seconds) of each health check
    done = threading.Event()

    def poll_health() -> None:
        while not done.is_set() and len(answers) < 2000:
            t0 = time.monotonic()
            try:
                status = http(f"{ex.url}/-/healthy", timeout=10).status
            except OSError:
                status = 0
            answers.append((status, time.monotonic() - t0))
            time.sleep(0.02)

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    try:
        reload = ex.post("/-/reload")
        for _ in range(10):  # the probes and health checks after the refusal
            ex.get("/metrics")
    finally:
        done.set()
        poller.join(15)
    assert reload.status == 400
    assert "targets[0].labels.x: value has 6291456 characters, more than " in reload.text
    assert "limits.label_value_length_limit (256)" in reload.text
    assert len(reload.body) < 2000 and len(ex.stderr()) < 100_000  # the value is not echoed
    assert answers and all(status == 200 for status, _ in answers), answers
    assert max(s for _, s in answers) < 2.0, answers  # 2 s: a loaded machine, not a stall
    assert value(ex.metrics(), "netprobe_config_last_reload_successful") == 0
    assert value(ex.metrics(), "netprobe_up", target=f"127.0.0.1:{listener}") == 1
