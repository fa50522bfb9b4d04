"""Property-based tests: whatever text a user or a scraper sends, the parsers answer with a
result or their own clear error (ValueError, ConfigError, a 400), never with anything else.

The config strategies build YAML from the real key names, so most examples get past the YAML
layer into the validators; plain text and bytes cover the layers in front of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netprobe_exporter.addresses import parse_dns_server, parse_host_port, parse_url
from netprobe_exporter.blackbox import go_float
from netprobe_exporter.config import ConfigError, parse_config, target_address_error
from netprobe_exporter.durations import format_duration, parse_duration
from netprobe_exporter.modules import builtin_modules
from netprobe_exporter.policy import parse_rule
from netprobe_exporter.probe_endpoint import ProbeRequestError, probe_timeout
from netprobe_exporter.webconfig import parse_web_config

settings.register_profile(
    "ci", derandomize=True, max_examples=300, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile(
    "dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# CI runs a fixed sequence, so a red build is reproducible; elsewhere each run explores anew.
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ADDRESS_CHARS = string.ascii_letters + string.digits + ":[]./-_%@?#&=* \t\x00é"
address_text = st.text(alphabet=ADDRESS_CHARS, max_size=60) | st.text(max_size=60)
hostnames = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}\Z")
ports = st.integers(1, 65535)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@given(address_text)
def test_host_port_parses_or_says_why(text: str) -> None:
    try:
        hp = parse_host_port(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert 1 <= hp.port <= 65535
    assert parse_host_port(host_port(hp.host, hp.port)) == hp


@given(st.ip_addresses().map(str) | hostnames, ports)
def test_every_valid_host_and_port_round_trips(host: str, port: int) -> None:
    hp = parse_host_port(host_port(host, port))
    assert (hp.host, hp.port) == (host, port)
    assert hp.ip_version in (0, 4, 6)


@given(address_text, st.sampled_from(["", "http://", "https://"]))
def test_urls_parse_or_say_why(text: str, scheme: str) -> None:
    try:
        url = parse_url(scheme + text)
    except ValueError as exc:
        assert str(exc)
        return
    assert url.scheme in ("http", "https")
    assert 1 <= url.port <= 65535
    assert url.path.startswith("/")
    assert not any(ord(c) < 33 for c in url.text)


@given(address_text)
def test_dns_servers_parse_or_say_why(text: str) -> None:
    try:
        hp = parse_dns_server(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert 1 <= hp.port <= 65535


@given(address_text, st.sampled_from(sorted(builtin_modules())))
def test_target_validation_never_raises(text: str, module: str) -> None:
    problem = target_address_error(text, builtin_modules()[module])
    assert problem is None or problem


@given(st.text(alphabet="0123456789smhdwyµu.-+ e", max_size=20) | st.text(max_size=20))
def test_durations_parse_or_say_why(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert math.isfinite(seconds) and seconds >= 0


@given(st.integers(0, 10**9))
def test_formatted_durations_read_back(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == ms / 1000


@given(st.text(alphabet=string.digits + "./:abcdef*-", max_size=45) | st.text(max_size=45))
def test_policy_rules_parse_or_say_why(text: str) -> None:
    try:
        rule = parse_rule(text)
    except ValueError as exc:
        assert str(exc)
        return
    rule.matches("host.example", "127.0.0.1")


@given(
    st.none() | st.text(max_size=20) | st.floats().map(repr),
    st.floats(0.001, 600),
    st.floats(0, 10),
)
def test_probe_timeout_is_positive_and_finite_or_a_400(
    header: str | None, module_timeout: float, offset: float
) -> None:
    module = dataclasses.replace(builtin_modules()["tcp_connect"], timeout=module_timeout)
    try:
        timeout = probe_timeout(header, module, offset)
    except ProbeRequestError as exc:
        assert exc.code == 400 and str(exc)
        return
    assert 0 <= timeout <= module_timeout or math.isclose(timeout, module_timeout)


# -- config files -------------------------------------------------------------------------------

CONFIG_KEYS = [
    "defaults", "modules", "targets", "probe_policy", "limits", "interval", "module", "labels",
    "buckets", "address", "prober", "timeout", "tcp", "http", "dns", "icmp", "tls", "tls_config",
    "query_response", "expect", "send", "starttls", "valid_status_codes", "method", "headers",
    "allow", "deny", "max_targets", "max_concurrent_probes", "max_body_bytes", "query_name",
    "query_type", "preferred_ip_protocol", "fail_if_body_matches_regexp", "basic_auth",
    "username", "password", "body_size_limit", "web_request_timeout", "tcp_connect", "x",
    "dns_cache", "min_ttl", "max_ttl", "max_entries",
]  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True)
    | st.sampled_from(["5s", "1m", "500ms", "127.0.0.1:80", "http://127.0.0.1/", "tcp",
                       "http", "10.0.0.0/8", "*.example.org", "1MiB", "tcp_connect", "[x"])
    | st.text(max_size=12)
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


def dumped(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


@given(documents.map(dumped))
def test_any_yaml_config_loads_or_lists_its_errors(text: str) -> None:
    try:
        parse_config(text, "p.yml")
    except ConfigError as exc:
        assert exc.errors and all(e.startswith("p.yml") for e in exc.errors), exc.errors


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_or_bytes_load_or_list_their_errors(data: str | bytes) -> None:
    try:
        parse_config(data, "p.yml")
    except ConfigError as exc:
        assert exc.errors and all(e.startswith("p.yml") for e in exc.errors), exc.errors


WEB_KEYS = [
    "tls_server_config", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "min_version", "max_version", "cipher_suites", "basic_auth_users", "http_server_config",
    "headers", "http2", "admin",
]  # fmt: skip


@given(
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(WEB_KEYS) | st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=20,
    ).map(dumped)
)
def test_any_web_config_loads_or_lists_its_errors(text: str) -> None:
    try:
        parse_web_config(text, "w.yml")
    except ConfigError as exc:
        assert exc.errors and all(e.startswith("w.yml") for e in exc.errors), exc.errors


def _go_float_reference(value: float) -> str:
    """Go's FormatFloat(v, 'g', -1, 64) by way of Decimal: slow, plainly right."""
    from decimal import Decimal

    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exp = Decimal(repr(value)).as_tuple()
    assert isinstance(exp, int)
    ds = list(digits)
    while len(ds) > 1 and ds[-1] == 0:
        ds.pop()
        exp += 1
    exp10 = len(ds) + exp - 1
    text = "".join(map(str, ds))
    minus = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    point = exp10 + 1
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{minus}{text}{'0' * (point - len(text))}"
    return f"{minus}{text[:point]}.{text[point:]}"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_go_float_writes_numbers_as_go_does(value: float) -> None:
    assert go_float(value) == _go_float_reference(value)
