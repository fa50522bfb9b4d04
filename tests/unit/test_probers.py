"""The prober seams: one registry filled by self-describing modules, typed results, clocks.

A prober is one module that registers a ``ProberSpec``; config, ``/metrics``, ``/probe`` and
``sample_limit`` then know it without any per-prober code of their own.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred

from netprobe_exporter import blackbox, exposition, probes
from netprobe_exporter.config import parse_config, target_series
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink, Target
from netprobe_exporter.probes import (
    PROBERS,
    BlackboxFamily,
    Clock,
    Family,
    ProbeContext,
    ProbeResult,
    ProberSpec,
    dns,
    http,
    icmp,
    tcp,
    unix,
)
from netprobe_exporter.resolver import Resolver
from netprobe_exporter.schema import Int, Opt, Section

ECHO = Family("netprobe_toy_echo_seconds", "histogram", "Toy echo time.", order=125,
              label="way", label_values=("out", "back"))  # fmt: skip
LAST = Family("netprobe_toy_last_code", "gauge", "Toy code.", order=126)


@dataclasses.dataclass(frozen=True, slots=True)
class ToyOptions(Options):
    code: int = 7


@dataclasses.dataclass(slots=True)
class ToyDetails(Details):
    code: int = 0

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        out.histogram(ECHO.name, 0.002, 0)
        out.histogram(ECHO.name, 0.02, 1)
        out.gauge(LAST.name, float(self.code))

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        out["probe_toy_code"] = [({}, float(self.code))]


TOY_OPTIONS = Section(ToyOptions(), (Opt("code", Int(0, 99)),))


def _probe(
    ctx: ProbeContext, address: str, module: Module, timeout: float
) -> Deferred[ProbeResult]:
    opts = probes.options_of(module, ToyOptions)
    result = ProbeResult(True, "success", 0.001, connect_duration=0.0005, ip="127.0.0.1")
    result.details = ToyDetails(opts.code)
    return defer.succeed(result)


TOY = ProberSpec(
    name="toy",
    options=TOY_OPTIONS,
    check_address=lambda a: None if a.startswith("toy:") else "must start with toy:",
    probe=_probe,
    families=(ECHO, LAST),
    blackbox_families=(BlackboxFamily("probe_toy_code", "The toy's code"),),
)


@pytest.fixture
def toy() -> Iterator[ProberSpec]:
    probes.register(TOY)
    try:
        yield TOY
    finally:
        del PROBERS["toy"]


def test_the_registry_holds_every_prober_module() -> None:
    assert list(PROBERS) == [
        "tcp",
        "http",
        "dns",
        "icmp",
        "grpc",
        "unix",
        "websocket",
        "traceroute",
    ]
    for name, mod in (("tcp", tcp), ("http", http), ("dns", dns), ("icmp", icmp), ("unix", unix)):
        assert PROBERS[name] is mod.PROBER and mod.PROBER.probe is mod.probe


def test_a_registered_prober_is_known_to_config_metrics_and_probe(toy: ProberSpec) -> None:
    cfg = parse_config(
        "modules:\n  t: {prober: toy, toy: {code: 42}}\n"
        "targets:\n  - {address: 'toy:a', module: t}\n"
    )
    module = cfg.modules["t"]
    assert module.options == ToyOptions(42)
    assert "must start with toy:" in "\n".join(_errors("targets:\n  - {address: x, module: t}\n"))
    assert _errors("modules:\n  t: {prober: toy, toy: {code: 100}}\n")[0].startswith(
        "c.yml:2: modules.t.toy.code:"
    )
    target = Target("toy:a", "t", 1.0, (), (0.01, 0.1))
    store = MetricsStore()
    store.sync([target])
    result: list[ProbeResult] = []
    toy.probe(_context(), target.address, module, 1.0).addCallback(result.append)  # type: ignore[misc]
    store.observe(target, result[0], 1000.0)
    text = "".join(exposition.render(store, exposition.TEXT, None))
    lbl = 'target="toy:a",module="t"'
    assert f'netprobe_toy_echo_seconds_bucket{{{lbl},way="back",le="0.1"}} 1\n' in text
    assert f'netprobe_toy_echo_seconds_count{{{lbl},way="out"}} 1\n' in text
    assert f"netprobe_toy_last_code{{{lbl}}} 42.0\n" in text
    # between icmp's (120) and the http status code (130), as the declared order says
    assert text.index("# HELP netprobe_toy_echo_seconds Toy echo time.") < text.index(
        "# HELP netprobe_toy_last_code"
    )
    shown = sum(1 for line in text.splitlines() if lbl in line)
    assert shown == target_series(len(target.buckets), module)
    answer = blackbox.render(result[0])
    assert (
        "# HELP probe_toy_code The toy's code\n# TYPE probe_toy_code gauge\nprobe_toy_code 42\n"
        in (answer)
    )


def _errors(text: str) -> list[str]:
    from netprobe_exporter.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config("modules:\n  t: {prober: toy}\n" + text if "modules" not in text else text,
                     "c.yml")  # fmt: skip
    return info.value.errors


def _context(clock: Clock | None = None, debug: bool = False) -> ProbeContext:
    resolver = Resolver(reactor, servers=[], hosts_path="/dev/null")
    return ProbeContext(reactor, resolver, debug=debug, clock=clock or Clock())


@pytest.mark.parametrize("mod", [tcp, http, dns, icmp])
def test_the_classified_failure_is_defined_once(mod: object) -> None:
    own = [
        name for name, obj in vars(mod).items()
        if isinstance(obj, type) and issubclass(obj, Exception)
        and obj.__module__ == getattr(mod, "__name__", "")
    ]  # fmt: skip
    assert own == []


def _imported(module: str) -> set[str]:
    """Top-level names of the modules ``module`` imports, following the project's own."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                else []
            )  # fmt: skip
            for full in names:
                found.add(full.split(".")[0])
                if full.startswith("netprobe_exporter"):
                    todo.append(full)
    return found


def test_the_model_module_imports_no_yaml_or_twisted() -> None:
    assert _imported("netprobe_exporter.model") & {"yaml", "twisted"} == set()
