"""The native histogram keys: in defaults, per target and per target_files entry, checked, and
part of a target's series identity."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.nhist import DEFAULT_ZERO_THRESHOLD, NativeSpec
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.targetfiles import read_target_file

CONFIG = textwrap.dedent(
    """\
    defaults:
      native_histogram_bucket_factor: 1.05
      native_histogram_max_buckets: 50
    targets:
      - address: 127.0.0.1:80
      - address: 127.0.0.1:81
        native_histogram_bucket_factor: 2
        native_histogram_zero_threshold: 1e-6
    target_files:
      - files: [sd/*.yml]
        native_histogram_max_buckets: 20
    """
)


def test_defaults_targets_and_target_files_take_the_keys(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG, str(tmp_path / "c.yml"))
    first, second = cfg.targets
    assert first.native == NativeSpec(1.05, 50, DEFAULT_ZERO_THRESHOLD)
    assert second.native == NativeSpec(2.0, 50, 1e-6)
    assert first.native.schema == 4 and second.native.schema == 0
    (tmp_path / "t.yml").write_text("- targets: [127.0.0.1:82]\n")
    (t,) = read_target_file(str(tmp_path / "t.yml"), cfg.target_files[0], cfg)
    assert t.native == NativeSpec(1.05, 20, DEFAULT_ZERO_THRESHOLD)
    # the built-in defaults: client_golang's
    (plain,) = parse_config("targets: [{address: 127.0.0.1:80}]\n", "c.yml").targets
    assert plain.native == NativeSpec(1.1, 160, 2.0**-128)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("native_histogram_bucket_factor: 1", "1.0 must be greater than 1"),
        ("native_histogram_bucket_factor: fast", 'must be a finite number, not "fast"'),
        ("native_histogram_bucket_factor: .inf", "must be a finite number"),
        ("native_histogram_max_buckets: 0", "0 is out of range 1-10000"),
        ("native_histogram_max_buckets: 1.5", "must be an integer"),
        ("native_histogram_zero_threshold: -1", "-1.0 must not be negative"),
    ],
)
def test_bad_values_are_refused_with_their_key(entry: str, error: str) -> None:
    key = entry.split(":")[0]
    with pytest.raises(ConfigError) as info:
        parse_config(f"targets:\n  - address: 127.0.0.1:80\n    {entry}\n", "c.yml")
    (message,) = info.value.errors
    assert message.startswith(f"c.yml:3: targets[0].{key}: ") and error in message


def test_changing_them_starts_new_series_as_buckets_do() -> None:
    before = parse_config("targets: [{address: 127.0.0.1:80}]\n", "c.yml").targets
    after = parse_config(
        "targets: [{address: 127.0.0.1:80, native_histogram_max_buckets: 10}]\n", "c.yml"
    ).targets
    store = MetricsStore()
    store.sync(before)
    store.observe(before[0], ProbeResult(True, "success", 0.01, connect_duration=0.01), 1.0)
    kept = next(iter(store.series.values()))
    store.sync(before)
    assert next(iter(store.series.values())) is kept
    store.sync(after)
    fresh = next(iter(store.series.values()))
    assert fresh is not kept and fresh.connect.count == 0
    assert fresh.connect.native.max_buckets == 10
