"""The ``dns_cache:`` section: its defaults, its errors, the workers' copy and ``/config``."""

from __future__ import annotations

import textwrap

import pytest

from netprobe_exporter.config import ConfigError, parse_config, parse_modules
from netprobe_exporter.model import DNSCacheSettings
from netprobe_exporter.redact import config_yaml


def parse(text: str) -> DNSCacheSettings:
    return parse_config(textwrap.dedent(text), "c.yml").dns_cache


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_defaults() -> None:
    assert parse("targets: []\n") == DNSCacheSettings(1.0, 300.0, 30.0, 65536)


def test_every_key_read() -> None:
    found = parse(
        """
        dns_cache:
          min_ttl: 500ms
          max_ttl: 1h
          negative_ttl: 10s
          max_entries: 1000
        """
    )
    assert found == DNSCacheSettings(0.5, 3600.0, 10.0, 1000)


def test_max_ttl_zero_turns_the_cache_off_whatever_min_ttl() -> None:
    assert parse("dns_cache: {max_ttl: 0s}\n").max_ttl == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dns_cache:\n  min_ttl: soon\n", 'c.yml:2: dns_cache.min_ttl: "soon" is not a duration'),
        ("dns_cache:\n  max_ttl: -1s\n", "c.yml:2: dns_cache.max_ttl:"),
        ("dns_cache:\n  negative_ttl: [1]\n", "c.yml:2: dns_cache.negative_ttl: must be a"),
        ("dns_cache:\n  max_entries: 0\n", "c.yml:2: dns_cache.max_entries: 0 is out of range"),
        ("dns_cache:\n  max_entries: 10000001\n", "c.yml:2: dns_cache.max_entries:"),
        ("dns_cache:\n  max_entries: many\n", "c.yml:2: dns_cache.max_entries:"),
        ("dns_cache:\n  ttl: 5s\n", "c.yml:2: dns_cache.ttl: unknown key"),
        ("dns_cache: [1]\n", "c.yml:1: dns_cache:"),
    ],
)
def test_bad_values_name_the_key(text: str, expected: str) -> None:
    found = errors(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_min_ttl_over_max_ttl_names_both_keys() -> None:
    found = errors("dns_cache:\n  min_ttl: 10m\n  max_ttl: 5m\n")
    assert found == [
        "c.yml:2: dns_cache.min_ttl: 10m must not exceed dns_cache.max_ttl (5m); "
        "max_ttl 0s turns the cache off"
    ]
    # against the default min_ttl (1s), the error is at the key given
    found = errors("dns_cache:\n  max_ttl: 500ms\n")
    assert len(found) == 1 and found[0].startswith("c.yml:2: dns_cache.max_ttl: 1s must not")


def test_workers_get_the_section() -> None:
    text = "dns_cache:\n  max_ttl: 1m\n  max_entries: 10\ntargets:\n  - address: 127.0.0.1:1\n"
    config = parse_config(text, "c.yml")
    assert parse_modules(text, "c.yml").dns_cache == DNSCacheSettings(max_ttl=60.0, max_entries=10)
    assert config.worker_text is not None and "127.0.0.1:1" not in config.worker_text
    assert parse_modules(config.worker_text, "c.yml").dns_cache == config.dns_cache


def test_config_page_shows_it_and_it_reads_back() -> None:
    running = parse_config("dns_cache:\n  min_ttl: 2s\n  negative_ttl: 1m\n", "c.yml")
    shown = config_yaml(running)
    assert "\ndns_cache:\n  min_ttl: 2s\n  max_ttl: 5m\n  negative_ttl: 1m\n" in shown, shown
    assert parse_config(shown, "shown.yml").dns_cache == running.dns_cache
