"""The dns prober's /probe answers compared with the real blackbox_exporter's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import blackbox, procutil
from tests.support.blackbox import compare, parse_metrics, probe_response
from tests.support.procutil import Exporter
from tests.support.servers import Certs, make_certs

ZONE = "example.test"
MODULES = {
    "dns_a": {"prober": "dns", "dns": {"query_name": f"www.{ZONE}", "query_type": "A",
                                       "preferred_ip_protocol": "ip4"}},
    "dns_aaaa": {"prober": "dns", "dns": {"query_name": f"www.{ZONE}", "query_type": "AAAA"}},
    "dns_mx_rule": {"prober": "dns", "dns": {
        "query_name": ZONE, "query_type": "MX",
        "validate_answer_rrs": {"fail_if_not_matches_regexp": [
            f"{ZONE}\\.\t300\tIN\tMX\t10 mail\\.{ZONE}\\."]}}},
    "dns_mx_forbidden": {"prober": "dns", "dns": {
        "query_name": ZONE, "query_type": "MX",
        "validate_answer_rrs": {"fail_if_matches_regexp": ["mail"]}}},
    "dns_all_match": {"prober": "dns", "dns": {
        "query_name": ZONE, "query_type": "MX",
        "validate_answer_rrs": {"fail_if_all_match_regexp": ["MX"]}}},
    "dns_soa": {"prober": "dns", "dns": {"query_name": ZONE, "query_type": "SOA"}},
    "dns_nxdomain": {"prober": "dns", "dns": {"query_name": f"nope.{ZONE}", "query_type": "A"}},
    "dns_nxdomain_ok": {"prober": "dns", "dns": {"query_name": f"nope.{ZONE}", "query_type": "A",
                                                 "valid_rcodes": ["NXDOMAIN"]}},
    "dns_servfail": {"prober": "dns", "dns": {"query_name": f"servfail.{ZONE}",
                                              "query_type": "A"}},
    "dns_no_answer_required": {"prober": "dns", "dns": {
        "query_name": f"www.{ZONE}", "query_type": "MX",
        "validate_authority_rrs": {"fail_if_none_matches_regexp": ["SOA"]}}},
    "dns_truncated": {"prober": "dns", "dns": {"query_name": f"big.{ZONE}", "query_type": "TXT"}},
    "dns_tcp": {"prober": "dns", "dns": {"query_name": f"big.{ZONE}", "query_type": "TXT",
                                         "transport_protocol": "tcp"}},
    "dns_quick": {"prober": "dns", "timeout": "1s",
                  "dns": {"query_name": f"www.{ZONE}", "query_type": "A"}},
}  # fmt: skip
# (module, expected probe_success); every case also compares every family with blackbox
CASES = [
    ("dns_a", 1), ("dns_aaaa", 1), ("dns_mx_rule", 1), ("dns_mx_forbidden", 0),
    ("dns_all_match", 1), ("dns_soa", 1), ("dns_nxdomain", 0), ("dns_nxdomain_ok", 1),
    ("dns_servfail", 0), ("dns_no_answer_required", 1), ("dns_truncated", 1), ("dns_tcp", 1),
]  # fmt: skip
# DNS over TLS, with the CA filled in once the certificates exist (see config_file)
DOT_MODULES = {
    "dns_dot": {"prober": "dns", "dns": {"query_name": f"www.{ZONE}", "query_type": "A",
                                         "transport_protocol": "tcp", "dns_over_tls": True,
                                         "tls_config": {"ca_file": "CA"}}},
    "dns_dot_unknown_ca": {"prober": "dns", "dns": {
        "query_name": f"www.{ZONE}", "query_type": "A", "transport_protocol": "tcp",
        "dns_over_tls": True}},
    "dns_dot_udp": {"prober": "dns", "dns": {"query_name": f"www.{ZONE}", "query_type": "A",
                                             "dns_over_tls": True}},
}  # fmt: skip
DOT_CASES = [("dns_dot", 1), ("dns_dot_unknown_ca", 0), ("dns_dot_udp", 0)]
EXACT = {"probe_dns_answer_rrs", "probe_dns_authority_rrs", "probe_dns_additional_rrs",
         "probe_dns_query_succeeded", "probe_dns_serial", "probe_success", "probe_ip_protocol",
         "probe_ip_addr_hash"}  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("dot-certs"))


@pytest.fixture(scope="module")
def servers(certs: Certs) -> Iterator[tuple[str, str]]:
    """(plain address, DNS-over-TLS address) of one zone server process."""
    with procutil.dns_zone_process(120, certs.leaf_cert, certs.leaf_key) as (address, dot):
        assert dot is not None and dot.startswith("127.0.0.1:"), dot
        yield address, dot


@pytest.fixture(scope="module")
def zone(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Path:
    dot = json.loads(json.dumps(DOT_MODULES).replace('"CA"', json.dumps(str(certs.ca_cert))))
    path = tmp_path_factory.mktemp("dns") / "blackbox.yml"
    return blackbox.write_config(path, {**MODULES, **dot})


ALL_CASES = [(m, s, False) for m, s in CASES] + [(m, s, True) for m, s in DOT_CASES]


@pytest.mark.parametrize(("module", "success", "tls"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_dns_probe_matches_blackbox(
    module: str, success: int, tls: bool, servers: tuple[str, str], bb: blackbox.Blackbox,
    ours: Exporter,
) -> None:  # fmt: skip
    target = servers[1] if tls else servers[0]
    answers = {}
    for who, url in (("blackbox", bb.url), ("ours", ours.url)):
        resp = probe_response(url, target, module)
        assert resp.status == 200, (who, resp.status, resp.body)
        answers[who] = parse_metrics(resp.body.decode())
    ref, got = answers["blackbox"], answers["ours"]
    assert next(iter(ref["probe_success"].samples.values())) == success, "the table is wrong"
    problems = compare(ref, got)
    for name in sorted(EXACT & set(ref)):
        want = ref[name].samples
        if got.get(name) is not None and got[name].samples != want:
            problems.append(f"{name}: ours {got[name].samples}, blackbox {want}")
    assert not problems, f"{module}: " + "; ".join(problems)


def test_a_server_that_never_answers(bb: blackbox.Blackbox, ours: Exporter) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        for who, url in (("blackbox", bb.url), ("ours", ours.url)):
            body = probe_response(url, target, "dns_quick", timeout_header=3).body.decode()
            assert "probe_success 0\n" in body, who
            assert "probe_dns_query_succeeded 0\n" in body, who
