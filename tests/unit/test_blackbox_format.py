"""The pieces of /probe that must match blackbox byte for byte: numbers, hashes, names, rules."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from netprobe_exporter.blackbox import go_float, ip_hash, render
from netprobe_exporter.modules import Module
from netprobe_exporter.probe_endpoint import ProbeRequestError, probe_timeout
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.probes.http import HTTPDetails, HTTPPhases
from netprobe_exporter.probes.tcp import TCPDetails, expand
from netprobe_exporter.probes.tls import go_name_string


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"), (1.0, "1"), (-1.0, "-1"), (200.0, "200"), (1.1, "1.1"), (119.5, "119.5"),
        (123456.0, "123456"), (1e6, "1e+06"), (3668918509.0, "3.668918509e+09"),
        (0.0001, "0.0001"), (1e-05, "1e-05"), (1.2643e-05, "1.2643e-05"),
        (0.00020149700000000003, "0.00020149700000000003"), (-62135596800.0, "-6.21355968e+10"),
        (1.7956464477051146e09, "1.7956464477051146e+09"), (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"), (float("nan"), "NaN"),
    ],
)  # fmt: skip
def test_go_float_formatting(value: float, text: str) -> None:
    assert go_float(value) == text


def test_ip_hash_is_fnv1a_of_the_address_bytes() -> None:
    # values captured from blackbox_exporter 0.23
    assert ip_hash("127.0.0.1") == 3668918509.0
    assert ip_hash("::1") == 1751717746.0
    assert ip_hash("::ffff:127.0.0.1") == ip_hash("127.0.0.1")


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (_name((NameOID.ORGANIZATION_NAME, "Test Org"), (NameOID.COMMON_NAME, "localhost")),
         "CN=localhost,O=Test Org"),
        # Go's fixed field order, not the certificate's
        (_name((NameOID.COMMON_NAME, "a"), (NameOID.COUNTRY_NAME, "DE"),
               (NameOID.ORGANIZATIONAL_UNIT_NAME, "ops")), "CN=a,OU=ops,C=DE"),
        # other attributes go last, as hex DER (PrintableString if possible, else UTF8String)
        (_name((NameOID.EMAIL_ADDRESS, "ops@example.test"), (NameOID.COMMON_NAME, "localhost"),
               (NameOID.ORGANIZATION_NAME, "Self Signed")),
         "CN=localhost,O=Self Signed,1.2.840.113549.1.9.1=#0c106f7073406578616d706c652e74657374"),
        (_name((NameOID.COMMON_NAME, "a,b+c")), "CN=a\\,b\\+c"),
    ],
)  # fmt: skip
def test_certificate_names_as_go_writes_them(name: x509.Name, text: str) -> None:
    assert go_name_string(name) == text


@pytest.mark.parametrize(
    ("header", "module_timeout", "expected"),
    [(None, 0.0, 119.5), ("10", 0.0, 9.5), ("10", 5.0, 5.0), ("3", 5.0, 2.5), ("0.3", 0.0, 0.0),
     ("-5", 0.0, 0.0), ("0", 0.0, 119.5), ("", 2.0, 2.0)],
)  # fmt: skip
def test_probe_timeout_rule(header: str | None, module_timeout: float, expected: float) -> None:
    module = Module("m", "tcp", timeout=module_timeout)
    got = probe_timeout(header, module, 0.5)
    if expected == 0.0:
        assert got <= 0  # blackbox probes with no time at all: an immediate failure
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize("header", ["abc", "nan", "1e"])
def test_bad_timeout_header_is_a_clear_400(header: str) -> None:
    with pytest.raises(ProbeRequestError) as info:
        probe_timeout(header, Module("m", "tcp"), 0.5)
    assert info.value.code == 400
    assert "Failed to parse timeout from Prometheus header" in str(info.value)


def test_send_expansion_follows_go() -> None:
    m = re.search(r"PING :(?P<token>[^ ]+)", "PING :abc123")
    assert expand("PONG ${1}", m) == "PONG abc123"
    assert expand("PONG $1", m) == "PONG abc123"
    assert expand("PONG ${token}!", m) == "PONG abc123!"
    assert expand("cost $$5 ${9}", m) == "cost $5 "
    assert expand("PONG ${1}", None) == "PONG "


def test_render_sorts_families_and_omits_what_blackbox_omits() -> None:
    r = ProbeResult(False, "refused", 0.000184224, ip="127.0.0.1", resolve_duration=9.467e-06,
                    details=TCPDetails())  # fmt: skip
    text = render(r)
    names = re.findall(r"^# TYPE (\S+) gauge$", text, re.M)
    assert names == sorted(names) == [
        "probe_dns_lookup_time_seconds", "probe_duration_seconds", "probe_failed_due_to_regex",
        "probe_ip_addr_hash", "probe_ip_protocol", "probe_success",
    ]  # fmt: skip
    assert "probe_ip_addr_hash 3.668918509e+09\n" in text
    assert "probe_dns_lookup_time_seconds 9.467e-06\n" in text
    assert "probe_success 0\n" in text
    # http: phases only once resolution succeeded; TLS metrics only over TLS
    h = ProbeResult(False, "dns_error", 0.01, resolve_duration=0.01, details=HTTPDetails(
        phases=HTTPPhases(0.01)))  # fmt: skip
    text = render(h)
    assert 'probe_http_duration_seconds{phase="resolve"} 0.01\n' in text
    assert 'phase="connect"' not in text
    assert "probe_ssl" not in text and "probe_http_last_modified" not in text
    assert "probe_ip_addr_hash 0\n" in text and "probe_ip_protocol 0\n" in text


def test_the_probe_timeout_is_a_family_as_blackbox_writes_it_since_0_28() -> None:
    r = ProbeResult(True, "success", 0.25, details=TCPDetails())
    text = render(r, 9.5)
    assert (
        "# HELP probe_timeout_seconds Returns how long the probe timeout is in seconds\n"
        "# TYPE probe_timeout_seconds gauge\nprobe_timeout_seconds 9.5\n"
    ) in text
    assert "probe_timeout_seconds" not in render(r)  # continuous mode's results have none


def test_module_yaml_redacts_secrets() -> None:
    from netprobe_exporter.blackbox import module_yaml
    from netprobe_exporter.config import parse_config

    cfg = parse_config(
        "modules:\n  h:\n    prober: http\n    http:\n      basic_auth: {username: u, "
        "password: hunter2}\n      fail_if_body_matches_regexp: [err]\n",
        "c.yml",
    )
    text = module_yaml(cfg.modules["h"])
    assert "hunter2" not in text
    assert "<secret>" in text and "err" in text and "prober: http" in text
