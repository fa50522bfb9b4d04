"""target_files: Prometheus file_sd files as a target source, re-read when they change."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from netprobe_exporter.config import ConfigError, Target, parse_config
from netprobe_exporter.targetfiles import SETTLE, file_targets, read_target_file, scan
from tests.support.target_files import config_for


def test_target_files_config_and_its_errors(tmp_path: Path) -> None:
    cfg = parse_config(config_for(tmp_path), str(tmp_path / "c.yml"))
    first, second = cfg.target_files
    assert first.files == (f"{tmp_path}/sd/*.json", f"{tmp_path}/sd/*.yml")
    assert (first.module, first.interval, first.refresh_interval) == ("tcp_connect", 2.0, 1.0)
    assert first.labels == (("source", "sd"),)
    assert (second.module, second.interval) == ("web", 15.0)
    relative = parse_config("target_files: [{files: [t/*.yml]}]\n", "/etc/np/c.yml")
    assert relative.target_files[0].files == ("/etc/np/t/*.yml",)
    bad = textwrap.dedent(
        """\
        target_files:
          - files: [a.txt]
          - files: [b.yml]
            module: nope
          - module: tcp_connect
          - files: [c.yml]
            refresh_interval: 10ms
        """
    )
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "c.yml")
    assert info.value.errors == [
        'c.yml:2: target_files[0].files[0]: "a.txt" must end in .json, .yml or .yaml',
        'c.yml:4: target_files[1].module: unknown module "nope"',
        "c.yml:5: target_files[2].files: missing",
        'c.yml:7: target_files[3].refresh_interval: "10ms" is too short (minimum 1s)',
    ]


def test_a_file_sd_file_in_json_and_yaml(tmp_path: Path) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    spec = cfg.target_files[0]
    (tmp_path / "a.json").write_text(json.dumps([
        {"targets": ["127.0.0.1:80", "[::1]:443"], "labels": {"team": "a", "__meta_x": "y"}},
        {"targets": ["db.internal:5432"]},
    ]))  # fmt: skip
    got = read_target_file(str(tmp_path / "a.json"), spec, cfg)
    sd_a = (("source", "sd"), ("team", "a"))
    assert got == (
        Target("127.0.0.1:80", "tcp_connect", 2.0, sd_a, spec.buckets),
        Target("[::1]:443", "tcp_connect", 2.0, sd_a, spec.buckets),
        Target("db.internal:5432", "tcp_connect", 2.0, (("source", "sd"),), spec.buckets),
    )
    (tmp_path / "b.yml").write_text("- targets: [127.0.0.1:81]\n  labels: {source: override}\n")
    (b,) = read_target_file(str(tmp_path / "b.yml"), spec, cfg)
    assert b.labels == (("source", "override"),)
    (tmp_path / "empty.yml").write_text("")
    assert read_target_file(str(tmp_path / "empty.yml"), spec, cfg) == ()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- targets: [127.0.0.1]\n", "f.yml:1: [0].targets[0]: '127.0.0.1': missing port"),
        ("- targets: [a:1]\n  labels: {target: x}\n",
         "f.yml:2: [0].labels.target: is set by the exporter and cannot be overridden"),
        ("- labels: {a: b}\n", "f.yml:1: [0].targets: missing"),
        ("targets: [a:1]\n", "f.yml:1: must be a list, not a mapping"),
        ("- targets: [a:1\n", "f.yml:2: invalid YAML or JSON"),
        ("- targets: [a:1]\n  labels: {0bad: x}\n", 'f.yml:2: [0].labels: "0bad" is not a valid'),
    ],
)  # fmt: skip
def test_file_errors_name_file_line_and_key(tmp_path: Path, text: str, error: str) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    path = tmp_path / "f.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_target_file(str(path), cfg.target_files[0], cfg)
    assert info.value.errors[0].startswith(f"{tmp_path}/{error}"), info.value.errors


def test_scan_reads_what_changed_and_keeps_a_bad_files_last_good_targets(tmp_path: Path) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    sd = tmp_path / "sd"
    sd.mkdir()
    one = sd / "one.yml"
    one.write_text("- targets: [127.0.0.1:10, 127.0.0.1:11]\n")
    first = scan(cfg, {})
    assert first.changed and first.healthy and not first.errors
    assert [t.address for t in file_targets(first)] == ["127.0.0.1:10", "127.0.0.1:11"]
    again = scan(cfg, first.files)
    assert not again.changed and again.files == first.files

    one.write_text("- targets: [127.0.0.1:10, nope]\n")  # a bad edit, made a while ago
    os.utime(one, ns=(time.time_ns(), time.time_ns() - 2 * 10**9))
    bad = scan(cfg, again.files)
    assert bad.changed and not bad.healthy
    assert bad.errors[0].startswith(f"{one}:1: [0].targets[1]:")
    assert [t.address for t in file_targets(bad)] == ["127.0.0.1:10", "127.0.0.1:11"]

    (sd / "two.json").write_text('[{"targets": ["127.0.0.1:10", "127.0.0.1:12"]}]')
    more = scan(cfg, bad.files)
    assert [t.address for t in file_targets(more)] == ["127.0.0.1:10", "127.0.0.1:11",
                                                      "127.0.0.1:12"]  # fmt: skip
    one.unlink()
    gone = scan(cfg, more.files)
    assert gone.changed and gone.healthy
    assert [t.address for t in file_targets(gone)] == ["127.0.0.1:10", "127.0.0.1:12"]


def test_a_full_reread_keeps_a_broken_files_targets_unless_its_entry_changed(
    tmp_path: Path,
) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    sd = tmp_path / "sd"
    sd.mkdir()
    one = sd / "one.yml"
    one.write_text("- targets: [127.0.0.1:10]\n")
    good = scan(cfg, {})
    one.write_text("- targets: [broken\n")
    os.utime(one, ns=(time.time_ns(), time.time_ns() - 2 * 10**9))  # made a while ago
    reread = scan(cfg, good.files, force=True)  # what a reload does
    assert reread.errors and [t.address for t in file_targets(reread)] == ["127.0.0.1:10"]
    other = parse_config(config_for(tmp_path).replace("interval: 2s", "interval: 3s"), "c.yml")
    changed = scan(other, good.files, force=True)
    assert changed.errors and file_targets(changed) == []  # old settings do not carry over


def test_an_alias_bomb_in_a_target_file_is_refused_quickly(tmp_path: Path) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    lines = ["- &g {targets: [" + ", ".join(f"'127.0.0.1:{p}'" for p in range(1, 101)) + "]}"]
    lines += ["- *g"] * 1500  # 150,000 targets from 1,500 lines
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("\n".join(lines) + "\n")
    small = parse_config(config_for(tmp_path, "limits: {max_targets: 1000}\n"), "c.yml")
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        read_target_file(str(bomb), small.target_files[0], small)
    assert time.monotonic() - t0 < 2.0
    assert info.value.errors == [f"{bomb}: over limits.max_targets (1000) targets"]
    with pytest.raises(ConfigError) as info:  # the default limit holds too
        read_target_file(str(bomb), cfg.target_files[0], cfg)
    assert info.value.errors == [f"{bomb}: over limits.max_targets (100000) targets"]


def _truncate(path: Path) -> None:
    with path.open("w"):
        pass  # what `> file` or open(O_TRUNC) does before the new content is written


def test_a_file_rewritten_in_place_is_read_only_once_it_has_settled(tmp_path: Path) -> None:
    cfg = parse_config(config_for(tmp_path), "c.yml")
    sd = tmp_path / "sd"
    sd.mkdir()
    one = sd / "one.yml"
    one.write_text("- targets: [127.0.0.1:10, 127.0.0.1:11]\n")
    first = scan(cfg, {})
    kept = ["127.0.0.1:10", "127.0.0.1:11"]

    _truncate(one)
    empty = scan(cfg, first.files)  # a look while the file is empty: too fresh to read
    assert not empty.changed and [t.address for t in file_targets(empty)] == kept
    one.write_text("- targets: [127.0.0.1:10, 127.0.0.1:11, 127.0.0.1:12]\n")
    rewritten = scan(cfg, empty.files)  # changed again since the last look: still waits
    assert not rewritten.changed and [t.address for t in file_targets(rewritten)] == kept
    settled = scan(cfg, rewritten.files)  # the same at two looks in a row: read
    assert settled.changed and settled.healthy
    assert [t.address for t in file_targets(settled)] == [*kept, "127.0.0.1:12"]

    # a file that is really emptied loses its targets, one look later
    _truncate(one)
    once = scan(cfg, settled.files)
    assert len(file_targets(once)) == 3
    assert file_targets(scan(cfg, once.files)) == []

    # a change whose mtime is SETTLE old is read at the first look; one dated in the future
    # (a clock that is off) at the second
    one.write_text("- targets: [127.0.0.1:13]\n")
    stamp = one.stat().st_mtime_ns
    seen = scan(cfg, settled.files, now=stamp / 1e9 + SETTLE)
    assert [t.address for t in file_targets(seen)] == ["127.0.0.1:13"]
    os.utime(one, ns=(stamp, stamp + 3600 * 10**9))
    ahead = scan(cfg, seen.files, force=True)  # a reload is a look too
    assert [t.address for t in file_targets(ahead)] == ["127.0.0.1:13"]
    one.write_text("- targets: [127.0.0.1:14]\n")
    os.utime(one, ns=(stamp, stamp + 3600 * 10**9 + 1))
    later = scan(cfg, ahead.files)
    assert [t.address for t in file_targets(later)] == ["127.0.0.1:13"]
    assert [t.address for t in file_targets(scan(cfg, later.files))] == ["127.0.0.1:14"]
