"""Config parsing and validation: every error names file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netprobe_exporter.config import (
    DEFAULT_BUCKETS,
    MAX_FILE_BYTES,
    Config,
    ConfigError,
    Limits,
    load_config,
    parse_config,
    with_extra_targets,
)
from netprobe_exporter.durations import format_duration, parse_duration


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "c.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_full_example_from_the_spec() -> None:
    cfg = parse(
        """
        defaults:
          interval: 15s
          module: tcp_connect
          labels: {env: prod}
          buckets: [0.001, 0.01, 0.1, 1]
        modules:
          tcp_connect:
            prober: tcp
            timeout: 5s
          tcp4:
            prober: tcp
            timeout: 1.5s
            tcp:
              preferred_ip_protocol: ip4
              ip_protocol_fallback: false
              source_ip_address: 127.0.0.2
        targets:
          - address: db.internal:5432
            module: tcp_connect
            interval: 5s
            labels: {team: storage}
          - address: "[::1]:80"
            module: tcp4
          - address: 127.0.0.1:9716
            interval: 1h30m
            buckets: [0.5, 1]
        """
    )
    assert [t.address for t in cfg.targets] == ["db.internal:5432", "[::1]:80", "127.0.0.1:9716"]
    db, v6, own = cfg.targets
    assert db.interval == 5.0
    assert db.labels == (("env", "prod"), ("team", "storage"))
    assert db.buckets == (0.001, 0.01, 0.1, 1.0)
    assert v6.module == "tcp4" and v6.interval == 15.0
    assert own.interval == 5400.0 and own.buckets == (0.5, 1.0)
    tcp4 = cfg.modules["tcp4"]
    assert tcp4.timeout == 1.5
    assert tcp4.options.preferred_ip_protocol == "ip4"
    assert tcp4.options.ip_protocol_fallback is False
    assert tcp4.options.source_ip_address == "127.0.0.2"


def test_builtin_module_exists_without_modules_section() -> None:
    cfg = parse("targets:\n  - address: 127.0.0.1:22\n")
    assert cfg.targets[0].module == "tcp_connect"
    builtin = cfg.modules["tcp_connect"]
    assert (builtin.name, builtin.prober) == ("tcp_connect", "tcp")
    assert cfg.targets[0].buckets == DEFAULT_BUCKETS


def test_the_debian_blackbox_yml_loads_every_module_runnable(tmp_path: Path) -> None:
    example = Path("/etc/prometheus/blackbox.yml")
    if not example.exists():
        pytest.skip("apt-get install prometheus-blackbox-exporter")
    cfg = load_config(str(example))
    assert {"http_2xx", "http_post_2xx", "tcp_connect", "pop3s_banner", "ssh_banner",
            "irc_banner"} <= {n for n, m in cfg.modules.items() if m.runnable}  # fmt: skip
    assert cfg.modules["http_post_2xx"].options.method == "POST"
    irc = cfg.modules["irc_banner"].options.query_response
    assert [q.send for q in irc] == [
        "NICK prober", "USER prober prober prober :prober", "PONG ${1}", None,
    ]  # fmt: skip
    assert irc[2].expect is not None and irc[2].expect.pattern == "PING :([^ ]+)"
    assert cfg.modules["pop3s_banner"].options.tls is True
    assert not cfg.warnings
    assert all(m.runnable for m in cfg.modules.values())
    grpc, plain = cfg.modules["grpc"].options, cfg.modules["grpc_plain"].options
    assert (grpc.tls, grpc.preferred_ip_protocol, grpc.service) == (True, "ip4", "")
    assert (plain.tls, plain.service, plain.ip_protocol_fallback) == (False, "service1", True)
    assert cfg.modules["icmp_ttl5"].options.ttl == 5


def test_http_module_options() -> None:
    cfg = parse(
        """
        modules:
          h:
            prober: http
            timeout: 3s
            http:
              method: post
              headers: {X-A: b}
              body: '{"q": 1}'
              valid_status_codes: [200, 404]
              valid_http_versions: [HTTP/1.1]
              follow_redirects: false
              fail_if_not_ssl: true
              fail_if_body_matches_regexp: ["error"]
              fail_if_header_not_matches:
                - header: Content-Type
                  regexp: json
                  allow_missing: true
              compression: gzip
              body_size_limit: 1KB
              basic_auth: {username: u, password: s3cret}
              tls_config: {insecure_skip_verify: true, min_version: TLS12}
        """
    )
    h = cfg.modules["h"].options
    assert cfg.modules["h"].timeout == 3.0
    assert h.method == "POST" and h.headers == (("X-A", "b"),) and h.body == '{"q": 1}'
    assert h.valid_status_codes == (200, 404) and h.follow_redirects is False
    assert h.fail_if_body_matches_regexp[0].pattern == "error"
    assert h.fail_if_header_not_matches[0].allow_missing is True
    assert h.compression == "gzip" and h.body_size_limit == 1024
    assert h.basic_auth is not None and h.basic_auth.password is not None
    assert h.basic_auth.password.reveal() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert h.tls_config.insecure_skip_verify and h.tls_config.min_version == "TLS12"


def test_a_blackbox_style_file_with_only_tcp_modules_is_valid() -> None:
    cfg = parse(
        """
        modules:
          tcp_connect:
            prober: tcp
          tcp_v4:
            prober: tcp
            timeout: 5s
            tcp:
              preferred_ip_protocol: "ip4"
        """
    )
    assert cfg.targets == ()
    assert set(cfg.modules) == {"tcp_connect", "tls_connect", "http_2xx", "dns_udp", "icmp",
                                "tcp_v4"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "targets:\n  - address: a:1\n    interval: 5x\n",
            'c.yml:3: targets[0].interval: "5x" is not a duration',
        ),
        (
            "targets:\n  - address: a:1\n    colour: red\n",
            "c.yml:3: targets[0].colour: unknown key",
        ),
        ("bogus: 1\n", "c.yml:1: bogus: unknown key"),
        (
            "targets:\n  - address: a:1\n  - address: a:1\n",
            'c.yml:3: targets[1].address: duplicate target "a:1" with module "tcp_connect" '
            "(first at targets[0])",
        ),
        (
            "targets:\n  - address: a:1\n    module: nope\n",
            'c.yml:3: targets[0].module: unknown module "nope"',
        ),
        (
            "targets:\n  - address: ::1:80\n",
            "c.yml:2: targets[0].address: '::1:80': IPv6 addresses need brackets, as [::1]:80",
        ),
        (
            "targets:\n  - address: host:99999\n",
            "c.yml:2: targets[0].address: 'host:99999': port 99999 is out of range 1-65535",
        ),
        ("targets:\n  - address: host\n", "c.yml:2: targets[0].address: 'host': missing port"),
        (
            "modules:\n  g:\n    prober: grpc\ntargets:\n  - address: a:0\n    module: g\n",
            "c.yml:5: targets[0].address: 'a:0': port 0 is out of range 1-65535",
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      proxy_url: socks5://x\n",
            'c.yml:5: modules.h.http.proxy_url: proxy URL scheme "socks5" is not supported'
            " (http only)",
        ),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      query_response:\n"
            "        - expect: '('\n",
            'c.yml:6: modules.t.tcp.query_response[0].expect: "(" is not a valid regular',
        ),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      query_response:\n"
            "        - expect_regexp: x\n",
            "c.yml:6: modules.t.tcp.query_response[0].expect_regexp: unknown key",
        ),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      tls_config:\n"
            "        min_version: TLS14\n",
            'modules.t.tcp.tls_config.min_version: unknown TLS version "TLS14"',
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      body_size_limit: 3\n",
            'modules.h.http.body_size_limit: "3" is not a size with a unit',
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      compression: zstd\n",
            'modules.h.http.compression: unknown compression "zstd"',
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      basic_auth: {username: a}\n"
            "      bearer_token: x\n",
            "at most one of basic_auth, bearer_token may be set",
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      fail_if_header_matches:\n"
            "        - header: X\n",
            "regexp must be set for HTTP header matchers",
        ),
        (
            "modules:\n  d:\n    prober: dns\n    dns:\n      query_nam: x\n",
            "c.yml:5: modules.d.dns.query_nam: unknown key",
        ),
        (
            "targets:\n  - address: 'http://[::1'\n    module: http_2xx\n",
            "targets[0].address: 'http://[::1': not a valid URL",
        ),
        ("modules:\n  t:\n    prober: carrier-pigeon\n", 'unknown prober "carrier-pigeon"'),
        ("modules:\n  t:\n    timeout: 1s\n", "c.yml:3: modules.t.prober: missing"),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      preferred_ip_protocol: ip5\n",
            'c.yml:5: modules.t.tcp.preferred_ip_protocol: "ip5" must be ip4 or ip6',
        ),
        (
            "defaults:\n  buckets: [1, 0.5]\n",
            "c.yml:2: defaults.buckets[1]: buckets must be strictly increasing",
        ),
        ("defaults:\n  buckets: [a]\n", 'defaults.buckets[0]: must be a number, not "a"'),
        (
            "defaults:\n  labels: {target: x}\n",
            "c.yml:2: defaults.labels.target: is set by the exporter and cannot be overridden",
        ),
        ("defaults:\n  labels: {0bad: x}\n", '"0bad" is not a valid label name'),
        ("defaults:\n  interval: 10ms\n", 'c.yml:2: defaults.interval: "10ms" is too short'),
        (
            "target_files: [{files: [a.yml], interval: 5x}]\n",
            'c.yml:1: target_files[0].interval: "5x" is not a duration',
        ),
        ("targets: {a: 1}\n", "c.yml:1: targets: must be a list, not a mapping"),
        ("targets:\n  - address: a:1\n    address: b:2\n", "targets[0].address: duplicate key"),
        ("[1, 2]\n", "c.yml:1: must be a mapping, not a list"),
        ("", "c.yml: empty config"),
        ("targets: [\n", "c.yml:2: invalid YAML"),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    found = errors(text)
    assert any(expected in e for e in found), found


def test_all_errors_are_reported_at_once() -> None:
    found = errors(
        """
        targets:
          - address: a:1
            interval: 5x
          - address: b
          - address: c:1
            module: nope
        """
    )
    assert len(found) == 3, found
    assert [e.split(":")[1] for e in found] == ["4", "5", "7"]


def test_binary_and_non_utf8_files_are_rejected_clearly() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b"\xff\xfe\x00garbage", "bin.yml")
    assert info.value.errors[0].startswith("bin.yml: not UTF-8 text")


def test_alias_bomb_is_answered_without_expanding() -> None:
    # 10**30 leaves if expanded: validation walks the node graph, so it answers at once.
    lines = ["targets:", "  - &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    found = errors("\n".join(lines) + "\n")
    assert len(found) == 30
    assert all("must be a mapping, not a list" in e for e in found)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yml"))
    assert "cannot read" in info.value.errors[0]


def test_extra_targets_use_defaults_and_are_validated() -> None:
    cfg = parse("defaults:\n  interval: 2s\ntargets:\n  - address: a:1\n")
    cfg = with_extra_targets(cfg, ["a:1", "[::1]:9", "b:2"])
    assert [(t.address, t.interval) for t in cfg.targets] == [
        ("a:1", 2.0),
        ("[::1]:9", 2.0),
        ("b:2", 2.0),
    ]
    with pytest.raises(ConfigError) as info:
        with_extra_targets(cfg, ["nope"])
    assert info.value.errors == ["--target: 'nope': missing port (want host:port)"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15s", 15), ("1m", 60), ("1h30m", 5400), ("1d", 86400), ("1.5s", 1.5),
     ("250us", 0.00025), ("2w", 14 * 86400), ("1y", 365 * 86400), ("0", 0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "s", "1s1m", "-1s", "1 s", "1.s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_tls_or_credentials_file_missing_now_is_a_warning_as_in_blackbox() -> None:
    config = parse(
        "modules:\n  t:\n    prober: tcp\n    tcp:\n      tls_config:\n"
        "        ca_file: /nonexistent/ca.pem\n"
        "  h:\n    prober: http\n    http:\n      bearer_token_file: /nonexistent/token\n"
    )
    assert config.modules["t"].options is not None
    assert config.modules["t"].options.tls_config.ca_file == "/nonexistent/ca.pem"
    assert any(
        "c.yml:6: modules.t.tcp.tls_config.ca_file: cannot read file" in w
        and "/nonexistent/ca.pem" in w
        and "its probes fail until it can" in w
        for w in config.warnings
    ), config.warnings
    assert any("modules.h.http.bearer_token_file" in w for w in config.warnings)
    # an empty name is no file at all, as in blackbox: no warning, the system roots
    empty = parse("modules:\n  t:\n    prober: tcp\n    tcp:\n      tls_config: {ca_file: ''}\n")
    assert not empty.warnings and empty.modules["t"].options is not None
    assert empty.modules["t"].options.tls_config.ca_file is None


def test_tls_files_must_be_pem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    found = errors(
        f"modules:\n  t:\n    prober: tcp\n    tcp:\n      tls_config:\n        ca_file: {junk}\n"
    )
    assert any("tls_config.ca_file" in e and "not a usable PEM certificate" in e for e in found)


def test_buckets_in_exponent_notation() -> None:
    cfg = parse("defaults:\n  buckets: [2e-05, 1.5E-4, 1e+00]\n")
    assert cfg.defaults.buckets == (2e-05, 1.5e-4, 1.0)


def test_absurd_durations_are_refused() -> None:
    found = errors("targets:\n  - address: a:1\n    interval: " + "9" * 400 + "s\n")
    assert any("too long" in e for e in found), found


def test_format_duration_round_trips() -> None:
    for s in (0.5, 15, 60, 5400, 0.001, 0.0005, 0.0015, 1e-9, 2.0000005, 3600.001):
        assert parse_duration(format_duration(s)) == s, format_duration(s)
    assert format_duration(0.0005) == "500us" and format_duration(1e-9) == "1ns"


@pytest.mark.parametrize(
    ("go", "matches", "misses"),
    [
        # RE2 reads ^+ as a repeated anchor, so this matches "OK" at the start, not "+OK"
        ("^+OK", ["OK ready"], ["+OK ready", "x OK"]),
        ("^*OK", ["x OK"], ["KO"]),
        ("ab\\z", ["cab"], ["ab\n"]),
        ("[$^]+", ["$"], ["a"]),
        ("PING :([^ ]+)", ["PING :abc"], ["PONG :abc"]),
    ],
)
def test_go_regex_compatibility(go: str, matches: list[str], misses: list[str]) -> None:
    from netprobe_exporter.yamlcheck import compile_go_regex

    rx = compile_go_regex(go)
    assert all(rx.search(s) for s in matches)
    assert not any(rx.search(s) for s in misses)


def test_limits_section_and_its_defaults() -> None:
    assert parse("targets: []\n").limits == Limits()
    cfg = parse(
        """
        limits:
          max_targets: 2
          max_concurrent_probes: 64
          max_body_bytes: 1MiB
          web_idle_timeout: 30s
          web_request_timeout: 2s
          max_web_connections: 100
        """
    )
    assert cfg.limits == Limits(2, 64, 1 << 20, 30.0, 2.0, 100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  max_targets: 0\n", "c.yml:2: limits.max_targets:"),
        ("limits:\n  max_targets: lots\n", "c.yml:2: limits.max_targets:"),
        ("limits:\n  web_request_timeout: 1x\n", "c.yml:2: limits.web_request_timeout:"),
        ("limits:\n  max_body_bytes: 12\n", "c.yml:2: limits.max_body_bytes:"),
        ("limits:\n  max_fds: 3\n", "c.yml:2: limits.max_fds: unknown key"),
        ("limits: [1]\n", "c.yml:1: limits:"),
    ],
)
def test_bad_limits_name_the_key(text: str, expected: str) -> None:
    found = errors(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_more_targets_than_max_targets_is_an_error_naming_the_limit() -> None:
    text = "limits: {max_targets: 2}\ntargets:\n" + "".join(
        f"  - address: 127.0.0.1:{p}\n" for p in (1, 2, 3)
    )
    assert errors(text) == ["c.yml:3: targets: 3 targets exceed limits.max_targets (2)"]
    two = parse("limits: {max_targets: 2}\ntargets: [{address: '127.0.0.1:1'}]\n")
    assert len(with_extra_targets(two, ["127.0.0.1:2"]).targets) == 2
    with pytest.raises(ConfigError) as info:
        with_extra_targets(two, ["127.0.0.1:2", "127.0.0.1:3"])
    assert info.value.errors == ["--target: 3 targets exceed limits.max_targets (2)"]


@pytest.mark.parametrize("depth", [900, 5_000, 200_000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    flow = "targets: " + "[" * depth + "]" * depth + "\n"
    block = "".join(" " * i + f"k{i}:\n" for i in range(min(depth, 20_000)))
    for text in (flow, block):
        with pytest.raises(ConfigError) as info:
            parse_config(text, "deep.yml")
        assert info.value.errors[0].startswith("deep.yml:"), info.value.errors


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    with big.open("wb") as fh:
        fh.write(b"targets:\n")
        line = b"  - address: 127.0.0.1:1\n"
        fh.write(line * (MAX_FILE_BYTES // len(line) + 1))
    with pytest.raises(ConfigError) as info:
        load_config(str(big))
    assert info.value.errors == [f"{big}: file too large (over {MAX_FILE_BYTES >> 20} MiB)"]


def test_ten_thousand_targets_load() -> None:
    lines = (f"  - address: 10.0.{i >> 8}.{i & 255}:80\n" for i in range(10_000))
    text = "targets:\n" + "".join(lines)
    assert len(parse_config(text, "many.yml").targets) == 10_000
