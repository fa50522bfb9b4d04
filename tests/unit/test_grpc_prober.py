"""The grpc prober's options, target addresses and the families its details write."""

from __future__ import annotations

import textwrap

import pytest

from netprobe_exporter.blackbox import families
from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.model import ProbeResult
from netprobe_exporter.probes import grpc
from netprobe_exporter.probes.tls import TLSInfo
from netprobe_exporter.redact import config_yaml, module_doc


def modules(text: str) -> dict[str, grpc.GRPCProbe]:
    cfg = parse_config(textwrap.dedent(text), "g.yml")
    return {n: m.options for n, m in cfg.modules.items() if isinstance(m.options, grpc.GRPCProbe)}


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "g.yml")
    return info.value.errors


def test_every_key_is_read() -> None:
    opts = modules(
        """
        modules:
          g:
            prober: grpc
            grpc:
              service: api.v1.Users
              tls: true
              tls_config: {server_name: api.test, insecure_skip_verify: true}
              preferred_ip_protocol: ip4
              ip_protocol_fallback: false
              source_ip_address: 127.0.0.2
              metadata:
                x-tenant: [blue]
                Authorization: [Bearer s3cr3t]
        """
    )["g"]
    assert (opts.service, opts.tls, opts.preferred_ip_protocol) == ("api.v1.Users", True, "ip4")
    assert (opts.ip_protocol_fallback, opts.source_ip_address) == (False, "127.0.0.2")
    assert (opts.tls_config.server_name, opts.tls_config.insecure_skip_verify) == ("api.test", True)
    assert opts.metadata == (("x-tenant", ("blue",)), ("Authorization", ("Bearer s3cr3t",)))


def test_a_module_without_a_grpc_section_has_no_ip_protocol_fallback_as_in_blackbox() -> None:
    found = modules(
        """
        modules:
          bare: {prober: grpc}
          empty: {prober: grpc, grpc: {}}
        """
    )
    assert found["bare"].ip_protocol_fallback is False
    assert found["empty"].ip_protocol_fallback is True
    assert found["bare"].preferred_ip_protocol == found["empty"].preferred_ip_protocol == "ip6"


def test_bad_values_are_errors_naming_the_key() -> None:
    found = errors(
        """
        modules:
          g:
            prober: grpc
            grpc:
              tls: maybe
              preferred_ip_protocol: ip5
              metadata: {x-a: one}
              servce: typo
        """
    )
    text = "\n".join(found)
    assert "modules.g.grpc.tls" in text
    assert "modules.g.grpc.preferred_ip_protocol" in text
    assert "modules.g.grpc.metadata.x-a" in text
    assert "modules.g.grpc.servce" in text
    assert errors("modules:\n  g:\n    prober: grpc\n    grpc:\n      metadata: [a]\n")


def test_credential_metadata_is_never_shown() -> None:
    cfg = parse_config(
        "modules:\n  g:\n    prober: grpc\n    grpc:\n"
        "      metadata: {authorization: [Bearer s3cr3t], x-tenant: [blue]}\n",
        "g.yml",
    )
    shown = module_doc(cfg.modules["g"])
    assert "s3cr3t" not in repr(shown)
    assert shown["grpc"]["metadata"]["x-tenant"] == ["blue"]


@pytest.mark.parametrize(
    ("address", "host", "port", "version"),
    [
        ("127.0.0.1:50051", "127.0.0.1", 50051, 4),
        ("http://api.test:8080", "api.test", 8080, 0),
        ("https://api.test", "api.test", None, 0),
        ("api.test/ignored/path", "api.test", None, 0),
        ("[::1]:50051", "::1", 50051, 6),
        ("[::1]", "::1", None, 6),
    ],
)
def test_targets_as_blackbox_reads_them(address: str, host: str, port: int, version: int) -> None:
    assert grpc.parse_target(address) == grpc.GRPCTarget(host, port, version)
    assert grpc.check_address(address) is None


def test_the_default_port_follows_tls() -> None:
    target = grpc.parse_target("api.test")
    assert (target.port_for(False), target.port_for(True)) == (80, 443)
    assert grpc.parse_target("[::1]").authority(True) == "[::1]:443"


@pytest.mark.parametrize(
    "address", ["", "::1:80", "[::1", "[::1]x", "[127.0.0.1]:5", "h:x", "h:0", "h:70000", "-h:1"]
)
def test_bad_targets_are_refused(address: str) -> None:
    problem = grpc.check_address(address)
    assert problem is not None and problem != ""


def test_metadata_as_grpcio_takes_it() -> None:
    pairs = (("X-Tenant", ("blue", "green")), ("trace-bin", ("\x01",)))
    assert grpc._metadata(pairs) == [("x-tenant", "blue"), ("x-tenant", "green"),
                                     ("trace-bin", b"\x01")]  # fmt: skip
    with pytest.raises(ValueError, match="key"):
        grpc._metadata((("bad key", ("v",)),))
    with pytest.raises(ValueError, match="printable"):
        grpc._metadata((("k", ("caf\u00e9",)),))


def _result(details: grpc.GRPCDetails, resolved: bool = True) -> ProbeResult:
    r = ProbeResult(details.serving_status == "SERVING", "success", 0.01, details=details)
    if resolved:
        r.resolve_duration, r.ip = 0.001, "127.0.0.1"
    return r


def test_an_unresolved_target_has_only_the_resolve_phase_and_no_healthcheck_series() -> None:
    out = families(_result(grpc.GRPCDetails(), resolved=False))
    assert out["probe_grpc_duration_seconds"] == [({"phase": "resolve"}, 0.0)]
    assert "probe_grpc_healthcheck_response" not in out
    assert out["probe_grpc_status_code"] == [({}, 0.0)]
    assert out["probe_ssl_earliest_cert_expiry"] == [({}, 0.0)]  # 0.23 registers it always


def test_an_answer_sets_its_serving_status_and_the_others_to_zero() -> None:
    out = families(_result(grpc.GRPCDetails(check=0.002, serving_status="NOT_SERVING")))
    assert dict((s["serving_status"], v) for s, v in out["probe_grpc_healthcheck_response"]) == {
        "UNKNOWN": 0.0, "SERVING": 0.0, "NOT_SERVING": 1.0, "SERVICE_UNKNOWN": 0.0,
    }  # fmt: skip
    assert [s["phase"] for s, _ in out["probe_grpc_duration_seconds"]] == ["resolve", "check"]
    assert "probe_tls_version_info" not in out


def test_tls_families_only_for_an_answered_check() -> None:
    info = TLSInfo(version="TLS 1.3", earliest_expiry=1800000000.0, subject="CN=x")
    answered = grpc.GRPCDetails(check=0.002, serving_status="SERVING", ssl=True, tls=info)
    out = families(_result(answered))
    assert out["probe_grpc_ssl"] == [({}, 1.0)]
    assert out["probe_ssl_earliest_cert_expiry"] == [({}, 1800000000.0)]
    assert out["probe_tls_version_info"] == [({"version": "TLS 1.3"}, 1.0)]
    assert "serialnumber" not in out["probe_ssl_last_chain_info"][0][0]  # 0.23's labels
    refused = grpc.GRPCDetails(check=0.002, status_code=5, tls=info)  # NOT_FOUND: no peer
    out = families(_result(refused))
    assert out["probe_grpc_ssl"] == [({}, 0.0)]
    assert out["probe_ssl_earliest_cert_expiry"] == [({}, 0.0)]
    assert "probe_tls_version_info" not in out and "probe_ssl_last_chain_info" not in out


def test_config_output_reads_back_to_the_same_modules() -> None:
    text = """
modules:
  bare: {prober: grpc}
  full:
    prober: grpc
    grpc:
      service: s
      tls: true
      tls_config: {ca_file: /nonexistent/ca.pem}
      preferred_ip_protocol: ip4
      metadata: {x-tenant: [blue, green]}
"""
    first = parse_config(text, "g.yml")
    again = parse_config(config_yaml(first), "shown.yml")
    for name in ("bare", "full"):
        assert again.modules[name].options == first.modules[name].options, name
