"""Typed results: a shared core on ``ProbeResult``, and each prober's measurements in its details.

No ``dict[str, float]`` of phases and no ``Any`` anywhere in a result; the connect engine's
findings (the handshake RTT) travel in the details of the probers that connect.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing

import pytest

from netprobe_exporter.model import Details, ProbeResult, SeriesSink
from netprobe_exporter.probes import PROBERS
from netprobe_exporter.probes.all import PROBERS as ALL

#: what every prober's result has (the probe's log and its bookkeeping included)
CORE = {
    "success", "result", "duration", "connect_duration", "ip", "resolve_duration", "details",
    "policy_refused", "addresses", "detail", "log", "log_dropped", "log_dropped_at", "wall",
    "_log_bytes",
}  # fmt: skip


class Recorder(SeriesSink):
    """A SeriesSink that keeps what it was given."""

    __slots__ = ("histograms",)

    def __init__(self) -> None:
        self.histograms: list[tuple[str, float, int]] = []

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        self.histograms.append((family, value, label))

    def gauge(self, family: str, value: float) -> None:
        pass

    def info(self, family: str, label_value: str) -> None:
        pass


def test_the_shared_result_holds_only_the_core() -> None:
    assert {f.name for f in dataclasses.fields(ProbeResult)} == CORE


def test_ip_protocol_follows_the_address() -> None:
    assert ProbeResult(True, "success", 0.1, ip="127.0.0.1").ip_protocol == 4
    assert ProbeResult(True, "success", 0.1, ip="::1").ip_protocol == 6
    assert ProbeResult(False, "dns_error", 0.1).ip_protocol == 0


def _details_types() -> list[type[Details]]:
    """Every details type the runnable probers' modules define."""
    assert ALL is PROBERS
    found: list[type[Details]] = []
    for spec in PROBERS.values():
        if spec.probe is None:
            continue
        module = importlib.import_module(spec.probe.__module__)
        own = [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Details) and v.__module__ == module.__name__
        ]
        assert own, f"prober {spec.name} defines no Details type"
        found += own
    return found


def _untyped(tp: object, where: str, seen: set[object]) -> list[str]:
    """Where a type, or any dataclass it holds, is ``Any`` or a dict."""
    if tp is typing.Any:
        return [where]
    origin = typing.get_origin(tp)
    if tp is dict or origin is dict:
        return [where]
    if origin in (typing.Union, types.UnionType) or origin in (tuple, list):
        return [p for arg in typing.get_args(tp) for p in _untyped(arg, where, seen)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in seen:
        seen.add(tp)
        hints = typing.get_type_hints(tp)
        return [
            p
            for f in dataclasses.fields(tp)
            for p in _untyped(hints[f.name], f"{where}.{f.name}", seen)
        ]
    return []


def test_every_details_field_is_typed() -> None:
    kinds = _details_types()
    assert len(kinds) >= 4  # tcp, http, dns, icmp
    bad = [p for kind in kinds for p in _untyped(kind, kind.__name__, set())]
    assert bad == []


def test_phases_are_listed_in_the_order_their_families_declare() -> None:
    from netprobe_exporter.probes import dns, http, icmp

    full = http.HTTPPhases(0.1, 0.2, 0.3, 0.4, 0.5, resolved=True)
    assert full.items() == tuple(zip(http.PHASES, (0.1, 0.2, 0.3, 0.4, 0.5), strict=True))
    assert http.DURATION.label_values == http.PHASES
    # resolution failed: the other phases are absent, not 0
    assert http.HTTPPhases(0.25).items() == (("resolve", 0.25),)
    assert dns.DNSPhases(0.1, 0.2, 0.3).items() == (
        ("resolve", 0.1), ("connect", 0.2), ("request", 0.3),
    )  # fmt: skip
    assert icmp.ICMPPhases(0.1, 0.2, 0.3).items() == (
        ("resolve", 0.1), ("setup", 0.2), ("rtt", 0.3),
    )  # fmt: skip


def test_an_answered_http_exchange_feeds_each_phase_its_own_histogram() -> None:
    from netprobe_exporter.probes import http

    out = Recorder()
    phases = http.HTTPPhases(0.1, 0.2, 0.3, 0.4, 0.5, resolved=True)
    http.HTTPDetails(200, phases=phases).observe(out, ProbeResult(True, "success", 1.0))
    assert [h for h in out.histograms if h[0] == http.DURATION.name] == [
        (http.DURATION.name, v, i) for i, v in enumerate((0.1, 0.2, 0.3, 0.4, 0.5))
    ]


@pytest.mark.parametrize("prober", ["tcp", "http", "dns"])
def test_the_handshake_rtt_is_in_the_details_of_the_probers_that_connect(prober: str) -> None:
    from netprobe_exporter.probes.connect import HANDSHAKE, ConnectInfo

    module = importlib.import_module(f"netprobe_exporter.probes.{prober}")
    kind = getattr(module, f"{prober.upper()}Details")
    assert HANDSHAKE in PROBERS[prober].families
    result = ProbeResult(True, "success", 0.01)
    measured, unmeasured = Recorder(), Recorder()
    kind(connect=ConnectInfo(0.003)).observe(measured, result)
    kind(connect=ConnectInfo()).observe(unmeasured, result)
    assert (HANDSHAKE.name, 0.003, 0) in measured.histograms
    assert all(h[0] != HANDSHAKE.name for h in unmeasured.histograms)
