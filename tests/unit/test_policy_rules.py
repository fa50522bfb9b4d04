"""probe_policy rules: which addresses and names they allow, and their config errors."""

from __future__ import annotations

import pytest

from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.policy import ProbePolicy, parse_rule


def policy(allow: list[str], deny: list[str]) -> ProbePolicy:
    return ProbePolicy(tuple(map(parse_rule, allow)), tuple(map(parse_rule, deny)))


def test_rules_on_addresses_and_names() -> None:
    p = policy(["10.0.0.0/8", "*.example.org", "2001:db8::/32"], ["10.9.0.0/16", "bad.example.org"])
    assert p.check("10.1.2.3", "10.1.2.3") is None
    assert p.check("web.example.org", "192.0.2.7") is None  # allowed by name
    assert p.check("WEB.Example.org.", "192.0.2.7") is None  # names compare case-insensitively
    assert "deny rule 10.9.0.0/16" in (p.check("10.9.1.1", "10.9.1.1") or "")
    assert "deny rule bad.example.org" in (p.check("bad.example.org", "10.1.1.1") or "")
    assert "no allow rule" in (p.check("other.test", "192.0.2.7") or "")
    assert p.check("v6", "2001:db8::1") is None
    # a name that resolves into a denied network is refused, whatever it is called
    assert p.check("innocent.example.org", "10.9.9.9") is not None


def test_no_allow_list_means_everything_not_denied() -> None:
    p = policy([], ["169.254.0.0/16"])
    assert p.check("a", "192.0.2.1") is None
    assert p.check("metadata", "169.254.169.254") is not None
    assert p.check("mapped", "::ffff:169.254.169.254") is not None  # IPv4-mapped IPv6 too


def test_config_errors_name_the_rule() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("probe_policy:\n  allow: [10.0.0.0/8, 'not a rule!']\n", "p.yml")
    assert info.value.errors == [
        'p.yml:2: probe_policy.allow[1]: "not a rule!" is neither a CIDR nor a host pattern '
        'like "*.example.org"'
    ]
    with pytest.raises(ConfigError):
        parse_config("probe_policy:\n  max_concurrent: 0\n", "p.yml")
