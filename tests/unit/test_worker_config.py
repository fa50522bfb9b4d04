"""What probe workers parse their modules from: the config without its targets."""

from __future__ import annotations

from netprobe_exporter.config import parse_config, parse_modules

BLOCK = """\
defaults:
  interval: 1s
  module: slow
modules:
  slow: {prober: tcp, timeout: 2s}
targets:
  - address: 127.0.0.1:1
  - address: 127.0.0.1:2
    module: tcp_connect
target_files:
  - files: [targets/*.yml]
probe_policy:
  deny: [127.0.0.2/32]
limits:
  max_concurrent_probes: 7
"""


def test_workers_get_the_modules_without_the_targets() -> None:
    config = parse_config(BLOCK, "c.yml")
    assert config.worker_text is not None
    assert "127.0.0.1:1" not in config.worker_text and "targets/" not in config.worker_text
    again = parse_modules(config.worker_text, "c.yml")
    assert again.modules == config.modules and "slow" in again.modules
    assert again.probe_policy == config.probe_policy
    assert again.limits.max_concurrent_probes == 7


def test_an_anchor_shared_with_the_targets_gets_the_whole_text() -> None:
    text = (
        "targets:\n  - address: 127.0.0.1:1\n    module: &m shared\n"
        "modules:\n  *m : {prober: tcp, timeout: 3s}\n"
    )
    config = parse_config(text, "c.yml")
    assert config.worker_text == text
    assert parse_modules(text, "c.yml").modules["shared"].timeout == 3.0


def test_flow_style_gets_the_whole_text() -> None:
    text = '{modules: {m: {prober: tcp}}, targets: [{address: "127.0.0.1:1", module: m}]}'
    assert parse_config(text, "c.yml").worker_text == text


def test_a_config_of_targets_only_gives_workers_next_to_nothing() -> None:
    text = "targets:\n" + "".join(f"  - address: 127.0.0.1:{p}\n" for p in range(1, 1000))
    config = parse_config(text, "c.yml")
    assert config.worker_text is not None and config.worker_text.strip() == ""
    assert parse_modules(config.worker_text, "c.yml").modules == config.modules
