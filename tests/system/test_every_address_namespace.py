"""``every_address`` over a real network: a namespace of hosts the test builds, a real exporter.

Topology (tests.support.netns.HostsNamespace): one namespace behind a veth from the root one,
five IPv4 and two IPv6 host addresses on its side, routed to from the root namespace; a TCP
listener in it on ``[::]:PORT`` (IPv4 too), and an iptables rule that silently drops TCP to one
IPv4 address, so a connect to that one times out while the others answer. A DNS server process
on 127.0.0.1 (tests/support/dns_records_server.py) serves ``every.example.test`` from a file the
test rewrites, with a 2 s TTL, and counts the queries it gets.

The exporter runs as a process in the root namespace with 20 targets of that name (one on the
listening port, 19 on ports nothing listens on, refused), every 500 ms, through a DNS cache;
once probing in its own process and once with its probe workers (results cross the pipe).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.metrics import Sample, find, parse_samples, value
from tests.support.netns import HostsNamespace, hosts_namespace_or_skip, skip_or_fail
from tests.support.procutil import (
    Exporter,
    Processes,
    RecordsServer,
    dns_records_process,
    wait_for,
)

NAME = "every.example.test"
TTL, NEGATIVE_TTL = 2, 5
INTERVAL = 0.5
TARGETS = 20
#: seconds the DNS cache is watched for
WINDOW = 6.0
#: a probe's own timeout: the dropped address takes this long
PROBE_TIMEOUT = 1.0


@dataclass
class Hosts:
    ns: HostsNamespace
    port: int  # the listening one; port + 1 .. port + 19 are refused

    @property
    def dropped(self) -> str:
        return self.ns.ip4[3]

    def initial(self) -> list[str]:
        """The records served first: four IPv4 (one dropped) and two IPv6 addresses."""
        return [*self.ns.ip4[:4], *self.ns.ip6]

    def changed(self) -> list[str]:
        """The records after the change: ip4[1] gone, ip4[4] new."""
        return [self.ns.ip4[0], *self.ns.ip4[2:5], *self.ns.ip6]

    def target(self, n: int = 0) -> str:
        return f"{NAME}:{self.port + n}"


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    if shutil.which("iptables") is None:
        skip_or_fail("iptables is not installed")
    ns = hosts_namespace_or_skip(ip4_count=5, ip6_count=2)
    listener: subprocess.Popen[bytes] | None = None
    try:
        port = random.Random().randrange(20000, 30000)
        ns.drop_tcp(ns.ip4[3])
        listener = subprocess.Popen(
            ns.listener_command(port, 300), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert listener.stdout is not None
        assert listener.stdout.readline() == b"ready\n", "the namespace's listener did not start"
        yield Hosts(ns, port)
    finally:
        if listener is not None:
            assert listener.stdin is not None
            listener.stdin.close()
            try:
                listener.wait(5)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait(5)
        ns.destroy()
        assert not ns.exists(), "the hosts namespace was left behind"


def config(hosts: Hosts, dns: RecordsServer) -> str:
    module = {
        "prober": "tcp",
        "timeout": f"{PROBE_TIMEOUT:g}s",
        "every_address": {"max_addresses": 8},
        "tcp": {"preferred_ip_protocol": "ip4", "dns_server": dns.address, "dns_timeout": "1s"},
    }
    targets = [{"address": hosts.target(n), "module": "tcp_every"} for n in range(TARGETS)]
    return json.dumps({
        "dns_cache": {"min_ttl": "1s", "max_ttl": "1m"},
        "defaults": {"interval": f"{int(INTERVAL * 1000)}ms"},
        "modules": {"tcp_every": module},
        "targets": targets,
    })  # fmt: skip


def own(samples: list[Sample], name: str, target: str, **labels: str) -> float | None:
    """The target's own sample (the one without an ``ip`` label)."""
    found = [s for s in find(samples, name, target=target, **labels) if "ip" not in s.labels]
    assert len(found) <= 1, found
    return found[0].value if found else None


def own_probes(samples: list[Sample], target: str) -> float:
    """The target's own probes, all results together."""
    found = find(samples, "netprobe_probes_total", target=target)
    return sum(s.value for s in found if "ip" not in s.labels)


def ips_of(samples: list[Sample], target: str) -> set[str]:
    return {s.labels["ip"] for s in find(samples, "netprobe_up", target=target) if "ip" in s.labels}


def timed_out(samples: list[Sample], target: str, ip: str) -> float:
    return value(samples, "netprobe_probes_total", target=target, ip=ip, result="timeout") or 0.0


def check_every_address(exporter: Exporter, hosts: Hosts) -> None:
    """1. each address its own series, the dropped one down by timeout; per-family counts."""
    t, r = hosts.target(), hosts.target(1)
    expected = set(hosts.initial())

    def settled() -> list[Sample] | None:
        samples = exporter.metrics()
        for target in (t, r):
            if ips_of(samples, target) != expected or timed_out(samples, target, hosts.dropped) < 1:
                return None
        return samples

    samples = wait_for(settled, 15, f"a series per address of {t}", interval=0.2)
    for ip in expected - {hosts.dropped}:
        assert value(samples, "netprobe_up", target=t, ip=ip) == 1.0, ip
        assert value(samples, "netprobe_probes_total", target=t, ip=ip, result="success"), ip
    assert value(samples, "netprobe_up", target=t, ip=hosts.dropped) == 0.0
    assert value(samples, "netprobe_probes_total", target=t, ip=hosts.dropped,
                 result="success") == 0.0  # fmt: skip
    assert value(samples, "netprobe_target_addresses", target=t, family="ip4") == 4.0
    assert value(samples, "netprobe_target_addresses", target=t, family="ip6") == 2.0
    assert value(samples, "netprobe_target_addresses_up", target=t, family="ip4") == 3.0
    assert value(samples, "netprobe_target_addresses_up", target=t, family="ip6") == 2.0
    assert own(samples, "netprobe_up", t) == 0.0
    # a refused port: every address down, refused, but the dropped one, which times out
    assert value(samples, "netprobe_up", target=r, ip=hosts.ns.ip6[0]) == 0.0
    assert value(samples, "netprobe_target_addresses_up", target=r, family="ip4") == 0.0
    assert value(samples, "netprobe_target_addresses_up", target=r, family="ip6") == 0.0


def probing_processes(workers: str | None) -> int:
    """How many processes probe, each with its own DNS cache (the default: one per CPU)."""
    return 1 if workers == "0" else (os.cpu_count() or 1)


def check_cache(exporter: Exporter, dns: RecordsServer, caches: int) -> dict[str, float]:
    """2. over WINDOW seconds, about one A and one AAAA query per TTL per cache, not per probe.

    Bound asserted per type: caches * (window / TTL + 2) (one cache per probing process; +2
    for an entry that expires at each edge of the window). Without a cache 20 targets every
    500 ms ask 40 questions a second of each type.
    """
    own0 = exporter.metrics()
    before, t0 = dns.counts(), time.monotonic()
    time.sleep(WINDOW)
    after, t1 = dns.counts(), time.monotonic()
    own1 = exporter.metrics()
    window = t1 - t0
    probes = TARGETS * window / INTERVAL
    bound = caches * (window / TTL + 2)
    seen = {}
    for qtype in ("A", "AAAA"):
        key = f"{NAME} {qtype}"
        seen[qtype] = after.get(key, 0) - before.get(key, 0)
    print(f"cache: {seen} queries in {window:.1f}s for ~{probes:.0f} probes "
          f"(bound {bound:.1f} per type, {caches} cache(s))", file=sys.stderr)  # fmt: skip
    for qtype, n in seen.items():
        assert n <= bound, f"{n} {qtype} queries in {window:.1f}s (bound {bound:.1f}): no cache?"
        # the TTL is honoured: the answer is asked again once it expired
        assert n >= 1, f"no {qtype} query in {window:.1f}s with a {TTL}s TTL: cached too long"
    # the exporter's own counts say the same: queries near the server's, hits many more
    # (workers report theirs with each heartbeat, every 0.5 s: allow that much lag)

    def own(samples: list[Sample], name: str, **labels: str) -> float:
        return value(samples, name, **labels) or 0.0

    sent = own(own1, "netprobe_dns_queries_total") - own(own0, "netprobe_dns_queries_total")
    hits = own(own1, "netprobe_dns_cache_lookups_total", result="hit") - own(
        own0, "netprobe_dns_cache_lookups_total", result="hit"
    )
    assert 1 <= sent <= 2 * bound + 2 * caches, (sent, seen)
    assert hits >= 10 * sent, (hits, sent)
    return {**seen, "window": window}


def check_change(exporter: Exporter, hosts: Hosts, dns: RecordsServer) -> None:
    """3. the records change: the old address's series go, the new one's come, nothing resets."""
    t = hosts.target()
    gone, new = hosts.ns.ip4[1], hosts.ns.ip4[4]
    samples = exporter.metrics()
    changes = value(samples, "netprobe_target_address_changes_total", target=t)
    assert changes is not None
    probes = own_probes(samples, t)
    dns.write({NAME: hosts.changed()})
    started = time.monotonic()

    def changed() -> list[Sample] | None:
        samples = exporter.metrics()
        if value(samples, "netprobe_up", target=t, ip=new) != 1.0:
            return None
        # every target's probe begun before the change has ended: none keeps the old address
        if any(s.labels.get("ip") == gone for s in samples):
            return None
        return samples

    # TTL + a few intervals + the dropped address's timeout, with room for a loaded machine
    samples = wait_for(changed, TTL + 4 * INTERVAL + PROBE_TIMEOUT + 6, f"{t} to follow DNS",
                       interval=0.2)  # fmt: skip
    print(f"address change seen after {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert ips_of(samples, t) == set(hosts.changed())
    assert all(ips_of(samples, hosts.target(n)) == set(hosts.changed()) for n in range(TARGETS))
    after = value(samples, "netprobe_target_address_changes_total", target=t)
    assert after is not None and after >= changes + 1, (changes, after)
    assert len(find(samples, "netprobe_target_address_changes_total", target=t)) == 1
    assert own_probes(samples, t) > probes  # the target's own series kept counting
    assert value(samples, "netprobe_target_addresses", target=t, family="ip4") == 4.0
    assert value(samples, "netprobe_target_addresses_up", target=t, family="ip4") == 3.0


def check_probe(exporter: Exporter, hosts: Hosts) -> None:
    """4. /probe: the whole fails (one address dropped), each address has its own answer."""
    query = urllib.parse.urlencode({"target": hosts.target(), "module": "tcp_every"})
    resp = exporter.get(f"/probe?{query}")
    assert resp.status == 200, resp
    samples = parse_samples(resp.text)
    whole = [s for s in find(samples, "probe_success") if "ip" not in s.labels]
    assert [s.value for s in whole] == [0.0], resp.text
    for ip in hosts.changed():
        assert value(samples, "probe_success", ip=ip) == (0.0 if ip == hosts.dropped else 1.0), ip
    assert value(samples, "probe_addresses", family="ip4") == 4.0
    assert value(samples, "probe_addresses", family="ip6") == 2.0
    assert value(samples, "probe_addresses_success", family="ip4") == 3.0
    assert value(samples, "probe_addresses_success", family="ip6") == 2.0
    assert value(samples, "probe_ip_protocol", ip=hosts.ns.ip6[0]) == 6.0


@pytest.mark.parametrize("workers", ["0", None], ids=["in-process", "workers"])
def test_every_address_of_a_namespace_name(
    hosts: Hosts, workers: str | None, procs: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    with dns_records_process(tmp_path, {NAME: hosts.initial()}, TTL, NEGATIVE_TTL) as dns:
        cfg = tmp_path / "config.yml"
        cfg.write_text(config(hosts, dns))
        args = [f"--config.file={cfg}"]
        if workers is not None:
            args.append(f"--probe.workers={workers}")
        exporter = procs.start_exporter(*args)
        try:
            check_every_address(exporter, hosts)
            check_cache(exporter, dns, probing_processes(workers))
            check_change(exporter, hosts, dns)
            check_probe(exporter, hosts)
        except BaseException:
            print(exporter.stderr()[-4000:], file=sys.stderr)
            raise
    elapsed = time.monotonic() - started
    print(f"every_address namespace run ({workers=}): {elapsed:.1f}s", file=sys.stderr)
    assert elapsed < 60, f"the run took {elapsed:.1f}s"
