"""``dns_server``/``dns_timeout`` in every prober section that resolves a target (blackbox PR
#1443's http, grpc, tcp, icmp and dns, PR #1542's documented default of 3s; and ours: websocket,
traceroute): read, checked and shown back only where set."""

from __future__ import annotations

import textwrap

import pytest

from netprobe_exporter.config import Config, ConfigError, parse_config
from netprobe_exporter.probes.connect import DEFAULT_DNS_TIMEOUT
from netprobe_exporter.redact import module_doc

RESOLVING_PROBERS = ("http", "grpc", "tcp", "icmp", "dns", "websocket", "traceroute")


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "c.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def _module(prober: str, extra: str) -> str:
    query = "query_name: example.org, " if prober == "dns" else ""
    return f"modules:\n  m:\n    prober: {prober}\n    {prober}: {{{query}{extra}}}\n"


def test_pr_1542_example_module_loads_and_shows_its_keys() -> None:
    cfg = parse(
        """
        modules:
          http_custom_dns_server:
            prober: http
            http:
              method: GET
              dns_server: "8.8.8.8:53"
              dns_timeout: 10s
        """
    )
    opts = cfg.modules["http_custom_dns_server"].options
    assert (opts.dns_server, opts.dns_timeout) == ("8.8.8.8:53", 10.0)  # type: ignore[attr-defined]
    shown = module_doc(cfg.modules["http_custom_dns_server"])["http"]
    assert shown["dns_server"] == "8.8.8.8:53"
    assert shown["dns_timeout"] == "10s"
    assert cfg.warnings == ()


@pytest.mark.parametrize("prober", RESOLVING_PROBERS)
def test_every_resolving_prober_takes_the_keys(prober: str) -> None:
    cfg = parse(_module(prober, 'dns_server: "[::1]:5353", dns_timeout: 500ms'))
    opts = cfg.modules["m"].options
    assert opts.dns_server == "[::1]:5353"  # type: ignore[attr-defined]
    assert opts.dns_timeout == 0.5  # type: ignore[attr-defined]


@pytest.mark.parametrize("prober", RESOLVING_PROBERS)
def test_unset_keys_are_not_shown(prober: str) -> None:
    cfg = parse(_module(prober, ""))
    section = module_doc(cfg.modules["m"]).get(prober, {})
    assert "dns_server" not in section and "dns_timeout" not in section


def test_a_port_is_optional() -> None:
    cfg = parse(_module("tcp", 'dns_server: "10.96.0.10"'))
    assert cfg.modules["m"].options.dns_server == "10.96.0.10"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"ns1.example.org:53"', "is not an IP address or IP:port"),
        ('"10.0.0.1:99999"', "is not an IP address or IP:port"),
        ("[1, 2]", "must be a string"),
    ],
)
def test_bad_dns_servers_are_refused(value: str, why: str) -> None:
    found = "\n".join(errors(_module("tcp", f"dns_server: {value}")))
    assert "modules.m.tcp.dns_server" in found
    assert why in found


def test_dns_timeout_must_be_positive() -> None:
    found = "\n".join(errors(_module("http", 'dns_server: "127.0.0.1", dns_timeout: 0s')))
    assert "modules.m.http.dns_timeout" in found


def test_the_default_timeout_is_pr_1542s() -> None:
    assert DEFAULT_DNS_TIMEOUT == 3.0
