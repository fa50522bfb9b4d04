"""The icmp prober's /probe answers compared with the real blackbox_exporter's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import blackbox, netns
from tests.support.blackbox import compare, parse_metrics, probe_response
from tests.support.procutil import Exporter

MODULES = {
    "icmp4": {"prober": "icmp", "icmp": {"preferred_ip_protocol": "ip4"}},
    "icmp6": {"prober": "icmp"},
    "icmp_ttl5": {"prober": "icmp", "timeout": "5s", "icmp": {"ttl": 5}},
    "icmp_quick": {"prober": "icmp", "timeout": "500ms",
                   "icmp": {"preferred_ip_protocol": "ip4"}},
}  # fmt: skip


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blackbox.write_config(tmp_path_factory.mktemp("icmp") / "blackbox.yml", MODULES)


@pytest.fixture(scope="module")
def namespace() -> Iterator[netns.RoutedNamespace]:
    ns = netns.routed_namespace_or_skip()
    try:
        yield ns
    finally:
        ns.destroy()


def _compare(target: str, module: str, bb: blackbox.Blackbox, ours: Exporter) -> float:
    answers = {}
    for who, url in (("blackbox", bb.url), ("ours", ours.url)):
        resp = probe_response(url, target, module)
        assert resp.status == 200, (who, resp.status, resp.body)
        answers[who] = parse_metrics(resp.body.decode())
    problems = compare(answers["blackbox"], answers["ours"])
    for name in ("probe_success", "probe_icmp_reply_hop_limit", "probe_ip_protocol"):
        ref, got = answers["blackbox"].get(name), answers["ours"].get(name)
        if ref is not None and got is not None and ref.samples != got.samples:
            problems.append(f"{name}: ours {got.samples}, blackbox {ref.samples}")
    assert not problems, f"{module} {target}: " + "; ".join(problems)
    return float(next(iter(answers["ours"]["probe_success"].samples.values())))


@pytest.mark.parametrize(
    ("target", "module"),
    [("127.0.0.1", "icmp4"), ("::1", "icmp6"), ("localhost", "icmp_ttl5")],
)
def test_loopback_matches_blackbox(
    target: str, module: str, bb: blackbox.Blackbox, ours: Exporter
) -> None:
    assert _compare(target, module, bb, ours) == 1


def test_namespace_hosts_match_blackbox(
    namespace: netns.RoutedNamespace, bb: blackbox.Blackbox, ours: Exporter
) -> None:
    assert _compare(namespace.ns_ip, "icmp4", bb, ours) == 1
    assert _compare(namespace.blackhole_ip, "icmp_quick", bb, ours) == 0
