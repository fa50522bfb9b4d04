"""``every_address``: the module key, the runner, the per-address series, the worker frames
and the ``/probe`` answer; in memory (a fake resolver and a fake prober, no sockets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from netprobe_exporter import blackbox, exposition, protobuf_exposition
from netprobe_exporter.config import ConfigError, _core_series, parse_config, target_series
from netprobe_exporter.frames import FrameError
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import EveryAddress, Module, ProbeResult, Target
from netprobe_exporter.probes import ProbeContext, Prober
from netprobe_exporter.probes.everyaddress import choose, run_module
from netprobe_exporter.probes.tcp import TCPProbe
from netprobe_exporter.redact import module_doc
from netprobe_exporter.resolver import ResolveError
from netprobe_exporter.workerproto import decode_result, encode_result
from tests.support.metrics import find, parse_samples, value
from tests.support.protobuf import read_families, text_samples

NAME = "svc.example.test"


class FakeResolver:
    """Answers ``resolve_all`` from a table; records every call."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, str]] = []

    def resolve(
        self,
        host: str,
        preferred: str,
        fallback: bool,
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[str]:
        self.calls.append(("resolve", host))
        found = self.table.get(host)
        if not found:
            return defer.fail(ResolveError(f"{host}: no such host (NXDOMAIN)"))
        return defer.succeed(found[0])

    def resolve_all(
        self,
        host: str,
        families: tuple[int, ...],
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[list[str]]:
        self.calls.append(("resolve_all", host))
        found = [ip for ip in self.table.get(host, []) if (6 if ":" in ip else 4) in families]
        if host not in self.table:
            return defer.fail(ResolveError(f"{host}: no such host (NXDOMAIN)"))
        return defer.succeed(found)


def fake_prober(down: set[str], also: str | None = None) -> Prober:
    """Resolves the target's host as a prober does (and ``also``, as a redirect would) and
    fails for addresses in ``down``."""

    def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Any:
        async def run() -> ProbeResult:
            host = address.rsplit(":", 1)[0]
            ip = await ctx.resolver.resolve(host, "ip6", True, timeout)
            if also is not None:
                await ctx.resolver.resolve(also, "ip4", True, timeout)
            result = ProbeResult(ip not in down, "success" if ip not in down else "refused",
                                 0.001, connect_duration=0.0005, ip=ip,
                                 resolve_duration=0.0)  # fmt: skip
            if ip in down:
                result.detail = "connect: refused"
            return result

        return Deferred.fromCoroutine(run())

    return probe


DEFAULT = EveryAddress()


def module(every: EveryAddress | None = DEFAULT) -> Module:
    return Module("tcp_every", "tcp", 2.0, TCPProbe(), every_address=every)


def run(table: dict[str, list[str]], down: set[str], address: str = f"{NAME}:80",
        every: EveryAddress | None = DEFAULT, also: str | None = None
        ) -> tuple[ProbeResult, FakeResolver]:  # fmt: skip
    resolver = FakeResolver(table)
    ctx = ProbeContext(Clock(), resolver)  # type: ignore[arg-type]
    d = run_module({"tcp": fake_prober(down, also)}, ctx, address, module(every), 2.0)
    got: list[ProbeResult] = []
    d.addCallback(got.append)
    assert got, "the probe did not finish synchronously"
    return got[0], resolver


ADDRS = ["192.0.2.3", "2001:db8::1", "192.0.2.1", "192.0.2.2"]


# the module key


def test_every_address_is_read_in_both_forms_and_shown() -> None:
    cfg = parse_config(
        "modules:\n"
        "  a: {prober: tcp, every_address: true}\n"
        "  b: {prober: http, every_address: {max_addresses: 2, families: [ip6]}}\n"
        "  c: {prober: tcp, every_address: false}\n"
        "  d: {prober: icmp}\n"
    )
    assert cfg.modules["a"].every_address == EveryAddress(8, (4, 6))
    assert cfg.modules["b"].every_address == EveryAddress(2, (6,))
    assert cfg.modules["c"].every_address is None
    assert cfg.modules["d"].every_address is None
    assert module_doc(cfg.modules["b"])["every_address"] == {
        "max_addresses": 2, "families": ["ip6"]}  # fmt: skip
    assert "every_address" not in module_doc(cfg.modules["d"])


def test_every_address_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "modules:\n"
            "  a: {prober: tcp, every_address: {max_addresses: 0}}\n"
            "  b: {prober: tcp, every_address: {families: [ip5]}}\n"
            "  c: {prober: unix, every_address: true}\n"
            "  d: {prober: tcp, every_address: {max: 2}}\n"
            "  e: {prober: tcp, every_address: {families: []}}\n"
        )
    assert info.value.errors == [
        "config.yml:2: modules.a.every_address.max_addresses: 0 is out of range 1-64",
        "config.yml:3: modules.b.every_address.families: must list ip4, ip6 or both, each once",
        'config.yml:4: modules.c.every_address: prober "unix" targets are not resolved: there '
        "is only one address",
        "config.yml:5: modules.d.every_address.max: unknown key",
        "config.yml:6: modules.e.every_address.families: must list ip4, ip6 or both, each once",
    ]


# choosing the addresses


def test_choose_sorts_each_family_and_takes_them_in_turn_up_to_the_bound() -> None:
    addrs = ["192.0.2.9", "2001:db8::9", "192.0.2.1", "2001:db8::1", "192.0.2.5", "192.0.2.1"]
    assert choose(addrs, EveryAddress(8, (4, 6))) == [
        "192.0.2.1", "2001:db8::1", "192.0.2.5", "2001:db8::9", "192.0.2.9"]  # fmt: skip
    assert choose(addrs, EveryAddress(3, (6, 4))) == ["2001:db8::1", "192.0.2.1", "2001:db8::9"]
    # the order a server rotates its records in does not change which are probed
    assert choose(list(reversed(addrs)), EveryAddress(2, (4,))) == ["192.0.2.1", "192.0.2.5"]


# the runner


def test_each_address_is_probed_once_through_a_resolver_pinned_to_it() -> None:
    result, resolver = run({NAME: ADDRS}, down=set())
    assert result.success and result.result == "success"
    assert [ip for ip, _ in result.addresses or []] == [
        "192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.3"]  # fmt: skip
    assert all(child.ip == ip and child.success for ip, child in result.addresses or [])
    # one lookup of every address; the probes' own lookups were answered by the pin
    assert resolver.calls == [("resolve_all", NAME)]
    assert result.ip is None and result.resolve_duration is not None


def test_one_address_down_fails_the_probe_and_says_which() -> None:
    result, _ = run({NAME: ADDRS}, down={"192.0.2.2"})
    assert not result.success and result.result == "refused"
    assert result.detail == "1 of 4 addresses failed; 192.0.2.2: connect: refused"
    assert [c.success for _, c in result.addresses or []] == [True, True, False, True]


def test_another_name_the_prober_resolves_is_not_pinned() -> None:
    table = {NAME: ["192.0.2.1", "192.0.2.2"], "other.example.test": ["198.51.100.7"]}
    result, resolver = run(table, down=set(), also="other.example.test")
    assert result.success
    assert resolver.calls.count(("resolve", "other.example.test")) == 2


def test_families_and_bound_are_honoured() -> None:
    result, _ = run({NAME: ADDRS}, down=set(), every=EveryAddress(2, (4,)))
    assert [ip for ip, _ in result.addresses or []] == ["192.0.2.1", "192.0.2.2"]


def test_a_name_that_does_not_resolve_is_a_dns_error_without_addresses() -> None:
    result, _ = run({}, down=set())
    assert result.result == "dns_error" and result.addresses is None
    assert "NXDOMAIN" in result.detail
    result, _ = run({NAME: ["2001:db8::1"]}, down=set(), every=EveryAddress(8, (4,)))
    assert result.result == "dns_error" and result.detail.endswith("no address")


def test_an_ip_literal_is_its_own_single_address() -> None:
    result, resolver = run({}, down=set(), address="192.0.2.8:80")
    assert [ip for ip, _ in result.addresses or []] == ["192.0.2.8"] and result.success
    assert resolver.calls == []


def test_without_every_address_the_prober_runs_once() -> None:
    result, resolver = run({NAME: ADDRS}, down=set(), every=None)
    assert result.addresses is None and result.ip == ADDRS[0]
    assert resolver.calls == [("resolve", NAME)]


# the series


def whole(samples: list[Any], name: str, **labels: str) -> list[Any]:
    """The whole target's samples (those without an ``ip`` label)."""
    return [s for s in find(samples, name, **labels) if "ip" not in s.labels]


def _target(**kw: Any) -> Target:
    return Target(f"{NAME}:80", "tcp_every", 5.0, labels=(("team", "web"),), **kw)


def _store(target: Target) -> MetricsStore:
    store = MetricsStore()
    store.sync([target])
    return store


def _text(store: MetricsStore) -> str:
    return "".join(exposition.render(store, exposition.TEXT, None))


def _grouped(ips: list[str], down: set[str] = frozenset()) -> ProbeResult:  # type: ignore[assignment]
    result, _ = run({NAME: ips}, down=set(down))
    return result


def test_each_address_has_its_own_series_and_the_family_counts() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, _grouped(ADDRS, {"192.0.2.2"}), 1000.0)
    samples = parse_samples(_text(store))
    assert value(samples, "netprobe_up", target=t.address, ip="192.0.2.2") == 0.0
    assert value(samples, "netprobe_up", target=t.address, ip="2001:db8::1") == 1.0
    ups = find(samples, "netprobe_up", target=t.address)
    assert sorted(s.labels.get("ip", "") for s in ups) == [
        "", "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"]  # fmt: skip
    whole = [s for s in ups if "ip" not in s.labels]
    assert whole[0].value == 0.0 and whole[0].labels["team"] == "web"
    assert value(samples, "netprobe_target_addresses", family="ip4") == 3.0
    assert value(samples, "netprobe_target_addresses", family="ip6") == 1.0
    assert value(samples, "netprobe_target_addresses_up", family="ip4") == 2.0
    assert value(samples, "netprobe_target_addresses_up", family="ip6") == 1.0
    assert value(samples, "netprobe_connect_duration_seconds_count", ip="192.0.2.1") == 1.0
    # an address's ip is a label, so it has no target_info of its own (nor does the whole)
    assert find(samples, "netprobe_target_info") == []
    assert value(samples, "netprobe_target_address_changes_total", target=t.address) == 0.0
    assert len(find(samples, "netprobe_target_address_changes_total")) == 1


def test_an_address_that_goes_loses_its_series_and_counts_a_change() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, _grouped(ADDRS), 1000.0)
    store.observe(t, _grouped(ADDRS), 1001.0)
    gone = [ip for ip in ADDRS if ip != "192.0.2.3"]
    store.observe(t, _grouped(gone), 1002.0)
    samples = parse_samples(_text(store))
    assert find(samples, "netprobe_up", ip="192.0.2.3") == []
    assert value(samples, "netprobe_probes_total", ip="192.0.2.1", result="success") == 3.0
    assert value(samples, "netprobe_target_address_changes_total") == 1.0
    assert value(samples, "netprobe_target_addresses", family="ip4") == 2.0
    # the whole target's series never change identity
    assert [s.value for s in whole(samples, "netprobe_probes_total", result="success")] == [3.0]


def test_a_failed_lookup_keeps_the_addresses_series() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, _grouped(ADDRS), 1000.0)
    failed, _ = run({}, down=set())
    store.observe(t, failed, 1001.0)
    samples = parse_samples(_text(store))
    assert len(find(samples, "netprobe_up", target=t.address)) == 5
    assert [s.value for s in whole(samples, "netprobe_probes_total", result="dns_error")] == [1.0]
    assert value(samples, "netprobe_probes_total", ip="192.0.2.1", result="dns_error") == 0.0


def test_a_reload_that_keeps_the_target_keeps_its_addresses_series() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, _grouped(ADDRS), 1000.0)
    store.sync([t, Target("127.0.0.1:9", "tcp_connect", 5.0)])
    samples = parse_samples(_text(store))
    assert value(samples, "netprobe_probes_total", ip="192.0.2.1", result="success") == 1.0


def test_an_ip_label_of_the_config_gives_way_to_the_address() -> None:
    t = Target(f"{NAME}:80", "tcp_every", 5.0, labels=(("ip", "mine"),))
    store = _store(t)
    store.observe(t, _grouped(["192.0.2.1"]), 1000.0)
    samples = parse_samples(_text(store))
    assert sorted(s.labels["ip"] for s in find(samples, "netprobe_up")) == ["192.0.2.1", "mine"]


def test_protobuf_shows_the_same_series_as_text() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, _grouped(ADDRS, {"192.0.2.1"}), 1000.0)
    data = b"".join(protobuf_exposition.render(store, None))
    proto = text_samples(read_families(data))
    text = {(s.name, frozenset(s.labels.items())): s.value for s in parse_samples(_text(store))}
    own = {name for name, *_ in exposition.exporter_values(store)}
    target_names = {k for k in text if k[0] not in own}
    assert {k: text[k] for k in target_names} == {k: proto[k] for k in target_names}
    assert ("netprobe_target_addresses_up", frozenset({("target", t.address), ("module",
            "tcp_every"), ("team", "web"), ("family", "ip4")})) in proto  # fmt: skip


def test_the_series_estimate_holds_every_address_to_its_bound() -> None:
    every = EveryAddress(4, (4, 6))
    t = _target()
    store = _store(t)
    result, _ = run({NAME: [*ADDRS, "2001:db8::2", "192.0.2.4"]}, down=set(), every=every)
    assert len(result.addresses or []) == 4
    store.observe(t, result, 1000.0)
    # the fake prober's results have no details: the tcp families it may add are counted
    # by the estimate but not shown, so the estimate is an upper bound here
    shown = len(parse_samples(_text(store))) - len(
        parse_samples("".join(exposition._exporter_families(store, False)))
    )
    estimate = target_series(len(t.buckets), module(every))
    assert shown <= estimate
    plain = target_series(len(t.buckets), module(None))
    core = _core_series(len(t.buckets))
    assert estimate == core - 1 + 2 * 2 + 4 * (plain - 2)


def test_a_single_address_target_counts_its_address_changes() -> None:
    t = Target("db.example.test:5432", "tcp_connect", 5.0)
    store = _store(t)
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2", "192.0.2.1"):
        store.observe(t, ProbeResult(True, "success", 0.001, ip=ip), 1000.0)
    samples = parse_samples(_text(store))
    assert value(samples, "netprobe_target_address_changes_total") == 2.0
    assert value(samples, "netprobe_target_info", ip="192.0.2.1") == 1.0
    # every other series kept its identity: one of each, none with an address label
    assert len(find(samples, "netprobe_up")) == 1
    assert all("ip" not in s.labels for s in samples if s.name != "netprobe_target_info")


# worker frames


def test_a_worker_row_carries_each_address_result() -> None:
    result, _ = run({NAME: ADDRS}, down={"2001:db8::1"})
    kept: dict[str, dict[str, str]] = {"198.51.100.1": {}}
    row = encode_result(7, result, {}, kept)
    assert "198.51.100.1" not in kept and set(kept) == {ip for ip, _ in result.addresses or []}
    target_id, back = decode_result(row)
    assert target_id == 7 and back.addresses is not None
    assert [(ip, c.success, c.ip, c.connect_duration) for ip, c in back.addresses] == [
        (ip, c.success, c.ip, c.connect_duration) for ip, c in result.addresses or []]  # fmt: skip


@pytest.mark.parametrize(
    "addresses",
    [
        "x",
        [["not-an-ip", [1, 0, 0.1, None, None, "", 0]]],
        [["192.0.2.1", [1, 0, 0.1, None, None, ""]]],
        [["192.0.2.1", [1, 0, 0.1, None, None, "", 0]]] * 65,
        [["192.0.2.1", [1, 0, 0.1, None, None, "", 0, [["192.0.2.2", []]]]]],
    ],
)
def test_a_bad_address_row_is_a_frame_error(addresses: object) -> None:
    with pytest.raises(FrameError):
        decode_result([1, 1, 0, 0.1, None, None, "", 0, addresses])


# the /probe answer


def test_probe_answer_has_each_address_families_with_an_ip_label() -> None:
    result, _ = run({NAME: ADDRS}, down={"192.0.2.2"})
    text = blackbox.render(result, 2.0)
    samples = parse_samples(text)
    assert value(samples, "probe_success", ip="192.0.2.2") == 0.0
    assert value(samples, "probe_success", ip="192.0.2.1") == 1.0
    assert [s.value for s in find(samples, "probe_success") if not s.labels] == [0.0]
    assert value(samples, "probe_addresses", family="ip4") == 3.0
    assert value(samples, "probe_addresses_success", family="ip4") == 2.0
    assert value(samples, "probe_ip_protocol", ip="2001:db8::1") == 6.0
    assert [s for s in find(samples, "probe_ip_protocol") if not s.labels] == []
    assert value(samples, "probe_dns_lookup_time_seconds", ip="192.0.2.1") is not None
    assert len([s for s in find(samples, "probe_dns_lookup_time_seconds") if not s.labels]) == 1


def test_a_worker_flushes_by_addresses_carried_not_only_by_results() -> None:
    from netprobe_exporter.worker import FLUSH_COUNT, WorkerProbing

    sent: list[list[Any]] = []
    clock = Clock()
    probing = WorkerProbing(clock, ProbeContext(clock, FakeResolver({})), {}, sent.append)  # type: ignore[arg-type]
    probing.ids = {(f"{NAME}:{p}", "tcp_every"): p for p in range(1, 40)}
    many = [f"192.0.2.{i}" for i in range(1, 65)]
    result, _ = run({NAME: many}, down=set(), every=EveryAddress(64, (4,)))
    per = 1 + len(result.addresses or [])
    for port in range(1, 40):
        probing._on_result(Target(f"{NAME}:{port}", "tcp_every", 1.0), result)
    # a batch went as soon as the addresses carried reached FLUSH_COUNT, long before
    # FLUSH_COUNT results
    first = -(-FLUSH_COUNT // per)
    assert [len(b[1]) for b in sent] == [first, first]
    assert all(len(row) == 9 and len(row[8]) == 64 for row in sent[0][1])


def test_an_address_probe_policy_refuses_refuses_the_whole_probe() -> None:
    def policy(host: str, ip: str) -> str | None:
        return "192.0.2.2 is in deny 192.0.2.2/32" if ip == "192.0.2.2" else None

    def refusing(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Any:
        async def body() -> ProbeResult:
            ip = await ctx.resolver.resolve(NAME, "ip4", True, timeout)
            r = ProbeResult(True, "success", 0.001, ip=ip)
            why = ctx.policy(NAME, ip) if ctx.policy is not None else None
            if why is not None:
                r.policy_refused = why
                r.fail("error", f"refused by probe_policy: {why}")
            return r

        return Deferred.fromCoroutine(body())

    ctx = ProbeContext(Clock(), FakeResolver({NAME: ADDRS}), policy=policy)  # type: ignore[arg-type]
    got: list[ProbeResult] = []
    run_module({"tcp": refusing}, ctx, f"{NAME}:80", module(), 2.0).addCallback(got.append)
    assert got[0].policy_refused == "192.0.2.2 is in deny 192.0.2.2/32"
    assert not got[0].success


def test_a_reload_that_turns_every_address_off_or_on_leaves_no_stale_series() -> None:
    t = _target()
    store = _store(t)
    store.observe(t, ProbeResult(True, "success", 0.001, ip="192.0.2.9"), 1000.0)
    store.observe(t, _grouped(ADDRS), 1001.0)  # turned on: target_info goes
    samples = parse_samples(_text(store))
    assert find(samples, "netprobe_target_info") == []
    assert len(find(samples, "netprobe_up")) == 5
    store.observe(t, ProbeResult(True, "success", 0.001, ip="192.0.2.9"), 1002.0)  # and off
    samples = parse_samples(_text(store))
    assert [s.labels.get("ip") for s in find(samples, "netprobe_up")] == [None]
    assert find(samples, "netprobe_target_addresses") == []
    assert value(samples, "netprobe_target_info", ip="192.0.2.9") == 1.0


def test_a_familys_own_ip_label_is_kept_as_exported_ip() -> None:
    from netprobe_exporter.model import Details, Sample

    class Hops(Details):
        def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
            out["probe_traceroute_hop_info"] = [({"hop": "1", "ip": "198.51.100.1"}, 1.0)]

    result, _ = run({NAME: ["192.0.2.1"]}, down=set())
    for _, child in result.addresses or []:
        child.details = Hops()
    samples = parse_samples(blackbox.render(result, 2.0))
    assert [s.labels for s in find(samples, "probe_traceroute_hop_info")] == [
        {"exported_ip": "198.51.100.1", "hop": "1", "ip": "192.0.2.1"}
    ]


def test_cancelling_an_every_address_probe_cancels_each_address_probe() -> None:
    cancelled: list[str] = []

    def hanging(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Any:
        return Deferred(lambda _: cancelled.append(address))

    ctx = ProbeContext(Clock(), FakeResolver({NAME: ADDRS}))  # type: ignore[arg-type]
    d = run_module({"tcp": hanging}, ctx, f"{NAME}:80", module(), 2.0)
    failures: list[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert len(cancelled) == 4
    assert len(failures) == 1 and failures[0].check(defer.CancelledError)


def test_a_worker_row_with_a_bad_address_is_a_frame_error() -> None:
    row = encode_result(3, ProbeResult(True, "success", 0.1, ip="192.0.2.1"))
    assert decode_result(row)[1].ip == "192.0.2.1"
    row[5] = '192.0.2.1"} 1\nnetprobe_up{x="'
    with pytest.raises(FrameError):
        decode_result(row)
