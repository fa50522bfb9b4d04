"""target_files in the running exporter and in --config.check."""

from __future__ import annotations

from pathlib import Path

from tests.support.procutil import Processes, closed_port, find, run_exporter, value, wait_for


def _addresses(ex: object) -> set[str]:
    samples = ex.metrics()  # type: ignore[attr-defined]
    return {s.labels["target"] for s in find(samples, "netprobe_probes_total", result="success")}


def test_the_exporter_follows_its_target_files(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    sd = tmp_path / "sd"
    sd.mkdir()
    targets = sd / "targets.yml"
    targets.write_text(f"- targets: ['127.0.0.1:{listener}']\n  labels: {{team: a}}\n")
    config = tmp_path / "config.yml"
    config.write_text(
        "target_files:\n  - files: [sd/*.yml]\n    interval: 500ms\n    refresh_interval: 1s\n"
    )
    ex = procs.start_exporter(f"--config.file={config}")
    wait_for(lambda: f"127.0.0.1:{listener}" in _addresses(ex), 10, "the file's target")
    wait_for(
        lambda: (
            [s.value for s in find(ex.metrics(), "netprobe_up", target=f"127.0.0.1:{listener}")]
            == [1]
        ),
        10,
        "the file's target up",
    )
    samples = ex.metrics()
    (up,) = find(samples, "netprobe_up", target=f"127.0.0.1:{listener}")
    assert up.labels["team"] == "a"
    assert value(samples, "netprobe_target_files_last_read_successful") == 1

    closed = closed_port()
    targets.write_text(f"- targets: ['127.0.0.1:{listener}', '127.0.0.1:{closed}']\n"
                       "  labels: {team: a}\n")  # fmt: skip
    wait_for(lambda: find(ex.metrics(), "netprobe_up", target=f"127.0.0.1:{closed}"), 10,
             "the added target")  # fmt: skip

    targets.write_text("- targets: [not a target]\n")
    wait_for(
        lambda: value(ex.metrics(), "netprobe_target_files_last_read_successful") == 0, 10,
        "the bad file noticed",
    )  # fmt: skip
    assert f"{targets}:1: [0].targets[0]" in ex.stderr()
    assert (value(ex.metrics(), "netprobe_target_file_read_errors_total") or 0) >= 1
    assert find(ex.metrics(), "netprobe_up", target=f"127.0.0.1:{closed}"), "targets kept"

    targets.unlink()
    wait_for(lambda: not find(ex.metrics(), "netprobe_up", target=f"127.0.0.1:{listener}"), 10,
             "the targets gone with their file")  # fmt: skip
    assert value(ex.metrics(), "netprobe_target_files_last_read_successful") == 1
    assert ex.proc.poll() is None


def test_config_check_reads_the_target_files(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "good.yml").write_text("- targets: ['127.0.0.1:1', '127.0.0.1:2']\n")
    config = tmp_path / "config.yml"
    config.write_text("target_files:\n  - files: [t/good.yml]\n")
    ok = run_exporter(f"--config.file={config}", "--config.check")
    assert ok.returncode == 0 and "2 targets, 1 target files" in ok.stdout, ok
    (tmp_path / "t" / "bad.yml").write_text("- targets: ['127.0.0.1']\n")
    config.write_text("target_files:\n  - files: ['t/*.yml']\n")
    bad = run_exporter(f"--config.file={config}", "--config.check")
    assert bad.returncode == 1
    assert f"{tmp_path}/t/bad.yml:1: [0].targets[0]:" in bad.stderr, bad.stderr
