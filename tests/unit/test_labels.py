"""Labels and series are bounded (``limits.label_limit``, ``label_name_length_limit``,
``label_value_length_limit``, ``sample_limit``): a config, target file or ``--target`` past them
is refused at load, naming file, line and key, without quoting the oversized name or value."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from netprobe_exporter import exposition
from netprobe_exporter.config import (
    ConfigError,
    Limits,
    Target,
    parse_config,
    target_series,
    with_extra_targets,
)
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.dns import DNSDetails, DNSPhases
from netprobe_exporter.probes.http import HTTPDetails, HTTPPhases
from netprobe_exporter.probes.icmp import ICMPDetails, ICMPPhases
from netprobe_exporter.probes.tcp import TCPDetails
from netprobe_exporter.probes.tls import TLSInfo
from netprobe_exporter.targetfiles import file_targets, read_target_file, scan


def errors(text: str, name: str = "config.yml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, name)
    return info.value.errors


def labels(n: int, prefix: str = "l") -> str:
    return "{" + ", ".join(f"{prefix}{i}: v" for i in range(n)) + "}"


def test_the_defaults_and_their_keys() -> None:
    limits = parse_config("targets: []\n").limits
    assert (limits.label_limit, limits.label_name_length_limit) == (30, 64)
    assert (limits.label_value_length_limit, limits.sample_limit) == (256, 10_000_000)
    cfg = parse_config(
        "limits: {label_limit: 3, label_name_length_limit: 8, label_value_length_limit: 9,"
        " sample_limit: 500}\n"
    )
    assert cfg.limits == Limits(label_limit=3, label_name_length_limit=8,
                                label_value_length_limit=9, sample_limit=500)  # fmt: skip
    assert errors("limits: {label_limit: 0, sample_limit: big}\n") == [
        "config.yml:1: limits.label_limit: 0 is out of range 1-1000",
        'config.yml:1: limits.sample_limit: must be an integer, not "big"',
    ]


def test_too_many_labels_on_a_target_is_refused_with_the_key_named() -> None:
    targets = "".join(f"  - address: 127.0.0.1:{p}\n" for p in range(1, 4))
    text = f"targets:\n{targets}  - address: 127.0.0.1:9\n    labels: {labels(41)}\n"
    assert errors(text) == [
        "config.yml:6: targets[3].labels: 41 labels, more than limits.label_limit (30)"
    ]
    assert parse_config(text.replace("41", "30").replace(labels(41), labels(30))).targets


def test_labels_are_counted_with_those_a_target_inherits() -> None:
    text = textwrap.dedent(
        f"""\
        defaults:
          labels: {labels(20, "d")}
        limits: {{label_limit: 25}}
        targets:
          - address: 127.0.0.1:1
            labels: {labels(6, "t")}
        target_files:
          - files: [sd/*.yml]
            labels: {labels(6, "f")}
        """
    )
    assert errors(text) == [
        "config.yml:6: targets[0].labels: 26 labels, more than limits.label_limit (25) "
        "(with those it inherits)",
        "config.yml:9: target_files[0].labels: 26 labels, more than limits.label_limit (25) "
        "(with those it inherits)",
    ]
    assert errors(f"defaults: {{labels: {labels(31)}}}\n") == [
        "config.yml:1: defaults.labels: 31 labels, more than limits.label_limit (30)"
    ]


def test_a_huge_label_mapping_is_refused_whole_not_label_by_label() -> None:
    many = labels(300_000)
    problems = errors(f"targets:\n  - address: 127.0.0.1:1\n    labels: {many}\n")
    assert problems == [
        "config.yml:3: targets[0].labels: 300000 labels, more than limits.label_limit (30)"
    ]


def test_a_long_label_name_or_value_is_refused_by_length_not_quoted() -> None:
    name = "n" * 5000
    big = "v" * (6 << 20)
    text = (  # a YAML key over 1,024 characters must be an explicit one (?)
        "targets:\n"
        f"  - address: 127.0.0.1:1\n    labels:\n      ? {name}\n      : x\n"
        f"  - {{address: 127.0.0.1:2, labels: {{team: {big}}}}}\n"
    )
    got = errors(text)
    assert got == [
        f'config.yml:4: targets[0].labels: label name "{"n" * 32}…" has 5000 characters, more '
        "than limits.label_name_length_limit (64)",
        "config.yml:6: targets[1].labels.team: value has 6291456 characters, more than "
        "limits.label_value_length_limit (256)",
    ]
    # raised, the limits let them through (up to a ceiling of their own)
    text = text.replace(name, "n" * 200).replace(big, "v" * 2000)
    raised = parse_config(text + "limits: {label_name_length_limit: 200,"
                          " label_value_length_limit: 2000}\n")  # fmt: skip
    assert [len(v) for t in raised.targets for _, v in t.labels] == [1, 2000]
    assert errors(f"limits: {{label_value_length_limit: {6 << 20}}}\n") == [
        "config.yml:1: limits.label_value_length_limit: 6291456 is out of range 1-1048576"
    ]


def test_addresses_and_module_names_are_label_values_too(tmp_path: Path) -> None:
    bound = "more than 2048 (the larger of 2048 and limits.label_value_length_limit)"
    url = "http://127.0.0.1/" + "p" * 2000  # a long URL is a fair address, past 256
    parse_config(f"targets:\n  - {{address: '{url}', module: http_2xx}}\n")
    long_url = "http://127.0.0.1/" + "p" * 3000
    text = f"targets:\n  - {{address: '{long_url}', module: http_2xx}}\n"
    assert errors(text) == [
        f"config.yml:2: targets[0].address: the address (the target label) has 3017 characters, "
        f"{bound}"
    ]
    name = "m" * 2000
    assert errors(f"modules:\n  ? {name}\n  : {{prober: tcp}}\n") == [
        "config.yml:2: modules: the name (the module label) has 2000 characters, more than "
        "limits.label_value_length_limit (256)"
    ]
    with pytest.raises(ConfigError) as info:
        with_extra_targets(parse_config("targets: []\n"), ["127.0.0.1:1" + "0" * 3000])
    assert info.value.errors == [
        f"--target: the address (the target label) has 3011 characters, {bound}"
    ]
    cfg = parse_config(_sd_config(tmp_path, "{}"))
    path = tmp_path / "t.yml"
    path.write_text(f"- targets: ['127.0.0.1:1', '{'h' * 3000}:1']\n")
    with pytest.raises(ConfigError) as info:
        read_target_file(str(path), cfg.target_files[0], cfg)
    assert info.value.errors == [
        f"{path}:1: [0].targets[1]: the address (the target label) has 3002 characters, {bound}"
    ]


def test_a_long_value_of_the_wrong_type_is_not_echoed_whole() -> None:
    assert errors(f"targets: {'x' * 100_000}\n") == [
        f'config.yml:1: targets: must be a list, not "{"x" * 64}…" (100000 characters)'
    ]


def test_too_many_series_is_refused() -> None:
    # a tcp target with the default 15 buckets: 68 series (FACTS.md's 67, and the address
    # changes counter); three are 204
    three = "".join(f"  - address: 127.0.0.1:{p}\n" for p in range(1, 4))
    assert parse_config(f"limits: {{sample_limit: 204}}\ntargets:\n{three}").targets
    assert errors(f"limits: {{sample_limit: 203}}\ntargets:\n{three}") == [
        "config.yml:3: targets: 204 series (estimated from each target's prober and buckets), "
        "more than limits.sample_limit (203)"
    ]
    # buckets count: three targets with 3 bounds are 3 * (14 + 3 * 6) = 96 series
    small = "defaults: {buckets: [0.01, 0.1, 1]}\nlimits: {sample_limit: 96}\n"
    small += f"targets:\n{three}"
    assert parse_config(small).targets
    cfg = parse_config(small.replace("sample_limit: 96", "sample_limit: 100"))
    with pytest.raises(ConfigError) as info:
        with_extra_targets(cfg, ["127.0.0.1:4"])
    assert info.value.errors == [
        "--target: 128 series (estimated from each target's prober and buckets), more than "
        "limits.sample_limit (100)"
    ]


def _full_result(prober: str, handshake: bool, tls: bool) -> ProbeResult:
    """A result carrying every measurement a probe of ``prober`` can report."""
    info = TLSInfo("TLS 1.3", 2e9) if tls else None
    conn = ConnectInfo(0.001 if handshake else None)
    details = {
        "tcp": TCPDetails(connect=conn, tls=info),
        "http": HTTPDetails(
            200,
            phases=HTTPPhases(0.001, 0.001, 0.001, 0.001, 0.001, resolved=True),
            connect=conn,
            tls=info,
        ),
        "dns": DNSDetails(
            DNSPhases(0.0, request=0.001), query_succeeded=True, connect=conn, tls=info
        ),
        "icmp": ICMPDetails(ICMPPhases(rtt=0.001)),
    }[prober]
    return ProbeResult(
        True, "success", 0.01, connect_duration=0.001, ip="127.0.0.1", details=details
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "address", "handshake", "tls"),
    [("{prober: tcp}", "127.0.0.1:1", True, False),
     ("{prober: tcp, tcp: {tls: true}}", "127.0.0.1:1", True, True),
     ("{prober: tcp, tcp: {query_response: [{starttls: true}]}}", "127.0.0.1:1", True, True),
     # any http target may speak TLS, by its URL or a redirect
     ("{prober: http}", "http://127.0.0.1:1/", True, True),
     ("{prober: dns, dns: {query_name: x.}}", "127.0.0.1", False, False),
     ("{prober: dns, dns: {query_name: x., transport_protocol: tcp}}", "127.0.0.1", True, False),
     ("{prober: dns, dns: {query_name: x., transport_protocol: tcp, dns_over_tls: true}}",
      "127.0.0.1", True, True),
     ("{prober: icmp}", "127.0.0.1", False, False)],
)  # fmt: skip
def test_the_series_estimate_is_what_the_target_can_show(
    module: str, address: str, handshake: bool, tls: bool
) -> None:
    cfg = parse_config(f"modules:\n  m: {module}\n")
    target = Target(address, "m", 1.0, (("team", "a"),), (0.01, 0.1, 1.0))
    store = MetricsStore()
    store.sync([target])
    store.observe(target, _full_result(cfg.modules["m"].prober, handshake, tls), 1000.0)
    text = "".join(exposition.render(store, exposition.TEXT, None))
    shown = sum(1 for line in text.splitlines() if 'team="a"' in line)
    assert shown == target_series(len(target.buckets), cfg.modules["m"])


def _sd_config(tmp_path: Path, limits: str) -> str:
    return f"target_files:\n  - files: [{tmp_path}/sd/*.yml]\nlimits: {limits}\n"


def test_a_target_file_over_the_label_limits_keeps_its_previous_targets(tmp_path: Path) -> None:
    cfg = parse_config(_sd_config(tmp_path, "{label_limit: 2, label_value_length_limit: 16}"))
    sd = tmp_path / "sd"
    sd.mkdir()
    one = sd / "one.yml"
    one.write_text("- targets: [127.0.0.1:10]\n  labels: {a: x, b: y, __meta_x: ignored}\n")
    good = scan(cfg, {})
    assert good.healthy and [t.labels for t in file_targets(good)] == [(("a", "x"), ("b", "y"))]
    for text, error in (
        ("- targets: [127.0.0.1:11]\n  labels: {a: x, b: y, c: z}\n",
         f"{one}:2: [0].labels: 3 labels, more than limits.label_limit (2)"),
        ("- targets: [127.0.0.1:11]\n  labels: {a: " + "x" * 100_000 + "}\n",
         f"{one}:2: [0].labels.a: value has 100000 characters, more than "
         "limits.label_value_length_limit (16)"),
    ):  # fmt: skip
        one.write_text(text)
        os.utime(one, ns=(time.time_ns(), time.time_ns() - 2 * 10**9))  # settled
        bad = scan(cfg, good.files)
        assert bad.errors == (error,)
        assert not bad.healthy
        assert [t.address for t in file_targets(bad)] == ["127.0.0.1:10"]


def test_a_target_file_over_sample_limit_is_refused(tmp_path: Path) -> None:
    cfg = parse_config(_sd_config(tmp_path, "{sample_limit: 136}"))  # two tcp targets
    (tmp_path / "sd").mkdir()
    path = tmp_path / "sd" / "t.yml"
    path.write_text("- targets: [127.0.0.1:1, 127.0.0.1:2]\n")
    assert len(read_target_file(str(path), cfg.target_files[0], cfg)) == 2
    path.write_text("- targets: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]\n")
    with pytest.raises(ConfigError) as info:
        read_target_file(str(path), cfg.target_files[0], cfg)
    assert info.value.errors == [
        f"{path}: 204 series (estimated from each target's prober and buckets), more than "
        "limits.sample_limit (136)"
    ]
