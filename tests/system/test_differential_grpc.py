"""The grpc prober's /probe answers compared with the real blackbox_exporter 0.23's.

Both exporters probe the same grpcio health servers (plain and TLS, in this process) with one
config file (0.23 syntax: no ``metadata``, a 0.28 key 0.23 refuses); every family, label set
and non-timing value must agree, and ``probe_success`` must be the table's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import blackbox
from tests.support.blackbox import compare, parse_metrics, probe_response
from tests.support.procutil import Exporter
from tests.support.servers import Certs, GRPCServer, closed_port, grpc_health_server, make_certs

MODULES = {
    "grpc_bare": {"prober": "grpc"},  # no section: blackbox has no ip_protocol_fallback then
    "grpc_plain": {"prober": "grpc", "grpc": {}},
    "grpc_up": {"prober": "grpc", "grpc": {"service": "up"}},
    "grpc_down": {"prober": "grpc", "grpc": {"service": "down"}},
    "grpc_unknown": {"prober": "grpc", "grpc": {"service": "nope"}},
    "grpc_ip4": {"prober": "grpc", "grpc": {"preferred_ip_protocol": "ip4"}},
    "grpc_tls": {"prober": "grpc", "grpc": {"tls": True, "tls_config": {"ca_file": "CA"}}},
    "grpc_tls_ip4": {"prober": "grpc", "grpc": {"tls": True, "preferred_ip_protocol": "ip4",
                                                "tls_config": {"ca_file": "CA"}}},
    "grpc_tls_unknown_ca": {"prober": "grpc", "grpc": {"tls": True}},
    "grpc_tls_insecure": {"prober": "grpc", "grpc": {
        "tls": True, "tls_config": {"insecure_skip_verify": True}}},
    "grpc_tls_down": {"prober": "grpc", "grpc": {"tls": True, "service": "down",
                                                 "tls_config": {"ca_file": "CA"}}},
    "grpc_tls_wrong_name": {"prober": "grpc", "grpc": {"tls": True, "tls_config": {
        "ca_file": "CA", "server_name": "other.test"}}},
}  # fmt: skip
#: (id, module, target: "plain", "tls", "closed" with an optional "localhost" host, blackbox's
#: probe_success)
CASES = [
    ("serving", "grpc_plain", "plain", 1),
    ("serving_http_prefix", "grpc_plain", "http://plain", 1),
    ("named_service", "grpc_up", "plain", 1),
    ("not_serving", "grpc_down", "plain", 0),
    ("unknown_service", "grpc_unknown", "plain", 0),
    ("refused", "grpc_plain", "closed", 0),
    ("no_section_no_fallback", "grpc_bare", "plain", 0),
    ("localhost_ip4", "grpc_ip4", "localhost:plain", 1),
    ("plaintext_to_tls", "grpc_plain", "tls", 0),
    ("tls_verified", "grpc_tls", "tls", 1),
    ("tls_localhost", "grpc_tls_ip4", "localhost:tls", 1),
    ("tls_unknown_ca", "grpc_tls_unknown_ca", "tls", 0),
    ("tls_insecure", "grpc_tls_insecure", "tls", 1),
    ("tls_not_serving", "grpc_tls_down", "tls", 0),
    ("tls_wrong_name", "grpc_tls_wrong_name", "tls", 0),
    ("tls_to_plaintext", "grpc_tls", "plain", 0),
]
#: compared value for value (the rest: label sets, durations finite and >= 0)
EXACT = {"probe_grpc_status_code", "probe_grpc_healthcheck_response", "probe_grpc_ssl",
         "probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_ssl_last_chain_info",
         "probe_success", "probe_ip_protocol", "probe_ip_addr_hash"}  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("grpc-certs"))


@pytest.fixture(scope="module")
def ports(certs: Certs) -> Iterator[dict[str, int]]:
    with contextlib.ExitStack() as stack:
        plain: GRPCServer = stack.enter_context(grpc_health_server())
        tls = stack.enter_context(grpc_health_server((certs.leaf_chain, certs.leaf_key)))
        closed = stack.enter_context(closed_port())
        yield {"plain": plain.port, "tls": tls.port, "closed": closed}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Path:
    modules = {
        name: {**m, "grpc": {**m["grpc"], "tls_config": {**m["grpc"]["tls_config"],
                                                         "ca_file": str(certs.ca_cert)}}}
        if m.get("grpc", {}).get("tls_config", {}).get("ca_file") == "CA" else m
        for name, m in MODULES.items()
    }  # fmt: skip
    return blackbox.write_config(tmp_path_factory.mktemp("grpc") / "blackbox.yml", modules)


def target(spec: str, ports: dict[str, int]) -> str:
    prefix = "http://" if spec.startswith("http://") else ""
    spec = spec.removeprefix("http://")
    host, _, which = spec.rpartition(":")
    return f"{prefix}{host or '127.0.0.1'}:{ports[which]}"


@pytest.mark.parametrize(("module", "where", "success"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_grpc_probe_matches_blackbox(
    module: str, where: str, success: int, ports: dict[str, int], bb: blackbox.Blackbox,
    ours: Exporter,
) -> None:  # fmt: skip
    address = target(where, ports)
    answers = {}
    for who, url in (("blackbox", bb.url), ("ours", ours.url)):
        resp = probe_response(url, address, module)
        assert resp.status == 200, (who, resp.status, resp.body)
        answers[who] = parse_metrics(resp.body.decode())
    ref, got = answers["blackbox"], answers["ours"]
    assert next(iter(ref["probe_success"].samples.values())) == success, "the table is wrong"
    problems = compare(ref, got)
    for name in sorted(EXACT & set(ref)):
        want = ref[name].samples
        if got.get(name) is not None and got[name].samples != want:
            problems.append(f"{name}: ours {got[name].samples}, blackbox {want}")
    assert not problems, f"{module} {address}: " + "; ".join(problems)


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_an_ipv6_literal_is_probed_where_blackbox_dials_it_unbracketed(
    bb: blackbox.Blackbox, ours: Exporter
) -> None:
    """Documented difference: blackbox joins host and port without brackets ("::1:PORT"),
    so its grpc probe of an IPv6 literal never connects (UNAVAILABLE); ours dials the address
    it resolved, and the rest of the answer has blackbox's families and labels."""
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    with grpc_health_server(host="::1") as server:
        answers = {}
        for who, url in (("blackbox", bb.url), ("ours", ours.url)):
            resp = probe_response(url, f"[::1]:{server.port}", "grpc_plain")
            answers[who] = parse_metrics(resp.body.decode())
    ref, got = answers["blackbox"], answers["ours"]
    value = {w: {n: next(iter(f.samples.values())) for n, f in a.items() if len(f.samples) == 1}
             for w, a in answers.items()}  # fmt: skip
    assert (value["blackbox"]["probe_success"], value["blackbox"]["probe_grpc_status_code"]) == (
        0, 14)  # fmt: skip
    assert (value["ours"]["probe_success"], value["ours"]["probe_grpc_status_code"]) == (1, 0)
    assert value["ours"]["probe_ip_protocol"] == value["blackbox"]["probe_ip_protocol"] == 6
    newer = blackbox.NEWER_FAMILIES  # written by blackbox after 0.23 (probe_timeout_seconds)
    assert set(got) - newer == set(ref)
    assert {n: set(f.samples) for n, f in got.items() if n not in newer} == {
        n: set(f.samples) for n, f in ref.items()
    }
