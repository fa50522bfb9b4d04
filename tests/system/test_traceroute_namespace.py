"""The traceroute prober over a real routed path: namespaces chained through forwarding routers
the test builds (tests.support.netns.RouterChain), one router silent, the path switched mid-test.

The exporter runs inside the client namespace (``ip netns exec``), continuous targets and
``/probe`` alike; the test reads it from there too.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.metrics import Sample, parse_samples
from tests.support.metrics import value as sample_value
from tests.support.netns import RouterChain, router_chain_or_skip
from tests.support.procutil import Exporter, exporter_command, wait_for

OPTS = {"max_hops": 8, "packets_per_hop": 2, "hop_timeout": "300ms"}


def _config(chain: RouterChain) -> str:
    """A module per protocol and IP version; the udp ones also as continuous targets."""
    modules = {}
    for protocol in ("udp", "icmp", "tcp"):
        for version in ("4", "6"):
            opts = {**OPTS, "protocol": protocol, "preferred_ip_protocol": f"ip{version}"}
            modules[f"trace_{protocol}{version}"] = {
                "prober": "traceroute", "timeout": "2s", "traceroute": opts,
            }  # fmt: skip
    targets = [
        {"address": chain.target_ip, "module": "trace_udp4"},
        {"address": chain.target_ip6, "module": "trace_udp6"},
    ]
    return json.dumps({"defaults": {"interval": "1s"}, "modules": modules, "targets": targets})


class Rig:
    def __init__(self, chain: RouterChain, exporter: Exporter) -> None:
        self.chain = chain
        self.exporter = exporter

    def get(self, path: str) -> str:
        status, body = self.chain.fetch(f"http://127.0.0.1:{self.exporter.port}{path}")
        assert status == 200, (status, body)
        return body

    def probe(self, target: str, module: str) -> list[Sample]:
        query = urllib.parse.urlencode({"target": target, "module": module})
        return parse_samples(self.get(f"/probe?{query}"))

    def metrics(self) -> list[Sample]:
        return parse_samples(self.get("/metrics"))


def _start(chain: RouterChain, tmp: Path) -> Exporter:
    config = tmp / "config.yml"
    config.write_text(_config(chain))
    err_path = tmp / "exporter.stderr"
    err = err_path.open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", chain.ns("client"),
         *exporter_command(f"--config.file={config}", "--web.listen-address=127.0.0.1:0")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp,
    )  # fmt: skip
    exporter = Exporter(proc, err_path, _stderr=err)
    exporter.wait_listening(timeout=20.0)
    return exporter


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    chain = router_chain_or_skip()
    exporter: Exporter | None = None
    try:
        exporter = _start(chain, tmp_path_factory.mktemp("traceroute"))
        yield Rig(chain, exporter)
    finally:
        if exporter is not None:
            exporter.kill()
        chain.destroy()
        assert not chain.exists(), "router chain namespaces left behind"


def _hops(samples: list[Sample]) -> dict[int, str]:
    return {
        int(s.labels["hop"]): s.labels["ip"]
        for s in samples
        if s.name == "probe_traceroute_hop_info"
    }


def _expected(rig: Rig, v6: bool, switched: bool = False) -> dict[int, str]:
    return {i + 1: ip for i, ip in enumerate(rig.chain.hops(v6, switched)) if ip is not None}


@pytest.mark.parametrize("protocol", ["udp", "icmp", "tcp"])
@pytest.mark.parametrize("v6", [False, True], ids=["ip4", "ip6"])
def test_probe_shows_every_hop_and_the_silent_one_as_lost(
    rig: Rig, protocol: str, v6: bool
) -> None:
    target = rig.chain.target_ip6 if v6 else rig.chain.target_ip
    if protocol == "tcp":  # nothing listens: the target's RST answers the SYNs
        target = f"[{target}]:80" if v6 else f"{target}:80"
    samples = rig.probe(target, f"trace_{protocol}{6 if v6 else 4}")
    assert sample_value(samples, "probe_success") == 1.0
    assert sample_value(samples, "probe_traceroute_destination_reached") == 1.0
    assert sample_value(samples, "probe_traceroute_hops") == 4.0
    assert _hops(samples) == _expected(rig, v6)
    # r2 (hop 2) forwards but never says its TTL ran out: all lost, no RTT
    assert sample_value(samples, "probe_traceroute_hop_loss_ratio", hop="2") == 1.0
    assert sample_value(samples, "probe_traceroute_hop_rtt_seconds", hop="2") is None
    for hop in ("1", "3", "4"):
        assert sample_value(samples, "probe_traceroute_hop_loss_ratio", hop=hop) == 0.0
        rtt = sample_value(samples, "probe_traceroute_hop_rtt_seconds", hop=hop)
        assert rtt is not None and 0.0 < rtt < 0.3
    # nothing past the target is reported
    assert sample_value(samples, "probe_traceroute_hop_loss_ratio", hop="5") is None


def test_icmp_without_ping_sockets_uses_a_raw_socket_and_with_them_the_error_queue(
    rig: Rig,
) -> None:
    """Both ICMP ways give the same path; the debug log names the way used."""
    ranges = "/proc/sys/net/ipv4/ping_group_range"
    methods = {}
    for allowed in ("1 0", "0 2147483647"):
        rig.chain.exec("client", "/bin/sh", "-c", f"echo '{allowed}' > {ranges}")
        query = urllib.parse.urlencode(
            {"target": rig.chain.target_ip, "module": "trace_icmp4", "debug": "true"}
        )
        text = rig.get(f"/probe?{query}")
        methods[allowed] = "method=raw" in text, "method=errqueue" in text
        assert "probe_success 1" in text, text
        shown = text.split("Metrics that would have been returned:")[-1]
        shown = shown.split("Module configuration:")[0]
        assert _hops(parse_samples(shown)) == _expected(rig, False)
    rig.chain.exec("client", "/bin/sh", "-c", f"echo '1 0' > {ranges}")
    assert methods == {"1 0": (True, False), "0 2147483647": (False, True)}


def _continuous(samples: list[Sample], name: str, target: str, **labels: str) -> float | None:
    return sample_value(samples, name, target=target, **labels)


def test_continuous_path_change_moves_the_hash_and_the_counter(rig: Rig) -> None:
    chain = rig.chain
    targets = {False: chain.target_ip, True: chain.target_ip6}

    def settled() -> list[Sample] | None:
        samples = rig.metrics()
        for t in targets.values():
            sent = _continuous(samples, "netprobe_traceroute_hop_sent_total", t, hop="4")
            if not sent or sent < 4:  # two probes at least
                return None
        return samples

    before = wait_for(settled, 30.0, "two traceroutes of each target")
    hashes = {}
    for v6, t in targets.items():
        assert _continuous(before, "netprobe_up", t) == 1.0
        assert _continuous(before, "netprobe_traceroute_hops", t) == 4.0
        assert _continuous(before, "netprobe_traceroute_path_changes_total", t) == 0.0
        path = [ip or "*" for ip in chain.hops(v6)]
        info = [s for s in before if s.name == "netprobe_traceroute_path_info"
                and s.labels["target"] == t]  # fmt: skip
        assert [s.labels["path"] for s in info] == [" ".join(path)]
        sent2 = _continuous(before, "netprobe_traceroute_hop_sent_total", t, hop="2")
        lost2 = _continuous(before, "netprobe_traceroute_hop_lost_total", t, hop="2")
        assert sent2 is not None and sent2 >= 4 and lost2 == sent2  # the silent hop
        assert _continuous(before, "netprobe_traceroute_hop_lost_total", t, hop="3") == 0.0
        assert _continuous(before, "netprobe_traceroute_hop_rtt_seconds_count", t, hop="2") == 0.0
        assert _continuous(before, "netprobe_traceroute_hop_rtt_seconds_count", t, hop="1")
        # hops stop at the target: the label set is bounded by where the path ends
        assert _continuous(before, "netprobe_traceroute_hop_sent_total", t, hop="5") is None
        hashes[v6] = _continuous(before, "netprobe_traceroute_route_hash", t)

    chain.switch()

    def changed() -> list[Sample] | None:
        samples = rig.metrics()
        for t in targets.values():
            if not _continuous(samples, "netprobe_traceroute_path_changes_total", t):
                return None
        return samples

    after = wait_for(changed, 30.0, "the path change counted for both targets")
    for v6, t in targets.items():
        assert _continuous(after, "netprobe_traceroute_path_changes_total", t) == 1.0
        assert _continuous(after, "netprobe_traceroute_route_hash", t) != hashes[v6]
        path = [ip or "*" for ip in chain.hops(v6, switched=True)]
        shown = [s.labels["path"] for s in after if s.name == "netprobe_traceroute_path_info"
                 and s.labels["target"] == t]  # fmt: skip
        assert shown == [" ".join(path)]
    chain.switch(through_r2b=False)
    announced = {
        (r.get("protocol"), r.get("ip_protocol"), r.get("method"))
        for r in rig.exporter.log_records()
        if r.get("msg") == "traceroute sockets"
    }
    assert {("udp", "ip4", "errqueue"), ("udp", "ip6", "errqueue")} <= announced
