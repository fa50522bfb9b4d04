"""Probers: one self-describing module per protocol, one registry, one result type.

Each ``probes/NAME.py`` declares ``PROBER = ProberSpec(...)``: its name, its module options (a
``schema.Section``: keys, kinds, secrets and checks, read and shown from that one declaration),
how a target address is checked, the probe function, the continuous-mode metric families it
feeds and the ``/probe`` families it writes. ``register`` puts it in
``PROBERS``; ``probes.all`` imports every prober module once, so whoever needs the full
registry imports that (this package never imports a prober module itself: no cycles).

A probe function is ``probe(ctx, address, module, timeout) -> Deferred[ProbeResult]``. It never
errbacks except with ``CancelledError`` when cancelled; every failure, including a bug in the
prober, comes back as a ProbeResult with ``success=False`` and a ``result`` reason. Probers know
nothing of Prometheus' text format: their details feed the families they declared.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReadDescriptor

from netprobe_exporter.model import (
    GO_ZERO_TIME,
    MAX_LOG_BYTES,
    MAX_LOG_LINES,
    RESULTS,
    Details,
    Module,
    Options,
    ProbeResult,
    Sample,
    SeriesSink,
)

if TYPE_CHECKING:
    import yaml

    from netprobe_exporter.schema import Section
    from netprobe_exporter.yamlcheck import Checker

__all__ = [
    "GO_ZERO_TIME",
    "MAX_LOG_BYTES",
    "MAX_LOG_LINES",
    "PROBERS",
    "RESULTS",
    "BlackboxFamily",
    "Clock",
    "Details",
    "Family",
    "ProbeContext",
    "ProbeFailure",
    "ProbeResult",
    "Prober",
    "ProberSpec",
    "Sample",
    "SeriesSink",
    "register",
    "run_probe",
]

OptionsT = TypeVar("OptionsT", bound=Options)


class ProbeFailure(Exception):
    """A failure already classified (``result``, a ``RESULTS`` name) and described."""

    def __init__(self, result: str, detail: str) -> None:
        super().__init__(detail)
        self.result = result


class ProbeReactor(Protocol):
    """What probers use of the reactor (IReactorTime, IReactorFDSet, IReactorSocket)."""

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall: ...

    def seconds(self) -> float: ...

    def addReader(self, reader: IReadDescriptor) -> None: ...

    def removeReader(self, reader: IReadDescriptor) -> None: ...

    def adoptStreamConnection(
        self, fileDescriptor: int, addressFamily: socket.AddressFamily, factory: IProtocolFactory
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Clock:
    """The clocks a probe reads: ``monotonic`` for durations, ``wall`` for timestamps."""

    monotonic: Callable[[], float] = time.perf_counter
    wall: Callable[[], float] = time.time
    wall_ns: Callable[[], int] = time.time_ns


class AddressResolver(Protocol):
    def resolve(
        self,
        host: str,
        preferred: str,
        fallback: bool,
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[str]: ...

    def resolve_all(
        self,
        host: str,
        families: tuple[int, ...],
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[list[str]]: ...


@dataclass(slots=True)
class ProbeContext:
    """Everything a prober may use besides its arguments: no hidden globals."""

    reactor: ProbeReactor
    resolver: AddressResolver
    #: keep a step-by-step log in each result
    debug: bool = False
    #: engines shared by every probe of this reactor (connect, icmp), by their owner's key
    engines: dict[str, object] = field(default_factory=dict)
    #: (host, ip) -> why the address may not be probed, or None; for /probe's probe_policy
    policy: Callable[[str, str], str | None] | None = None
    #: bytes of an HTTP body kept for body regular expressions (``limits.max_body_bytes``)
    max_body_bytes: int = 16 * 1024 * 1024
    clock: Clock = field(default_factory=Clock)

    def new_result(self) -> ProbeResult:
        return ProbeResult(False, "error", 0.0, log=[] if self.debug else None,
                           wall=self.clock.wall)  # fmt: skip


Prober = Callable[[ProbeContext, str, Module, float], "Deferred[ProbeResult]"]


@dataclass(frozen=True, slots=True)
class Family:
    """A continuous-mode family a prober feeds (``/metrics``).

    ``order`` places it among every family (the exposition's order is fixed). A histogram or
    counter with ``label`` has one per ``label_values`` entry (``phase="connect"``…,
    ``hop="1"``…), made up to the highest one observed (with the lower ones); an info gauge
    (``kind="info"``) is 1 with ``label`` set to the last value written.
    """

    name: str
    kind: str  # "histogram", "counter", "gauge" or "info"
    help: str
    order: int = 1000
    label: str = ""
    label_values: tuple[str, ...] = ()

    def series(self, buckets: int) -> int:
        """Series this family can show for one target with ``buckets`` bounds."""
        if self.kind == "histogram":
            return (buckets + 3) * max(len(self.label_values), 1)  # +Inf, _sum, _count
        if self.kind == "counter":
            return max(len(self.label_values), 1)
        return 1


@dataclass(frozen=True, slots=True)
class BlackboxFamily:
    """A gauge family blackbox_exporter writes for ``/probe``: its name and HELP text."""

    name: str
    help: str


@dataclass(frozen=True, slots=True)
class ProberSpec:
    """One prober, declared in one place by its module."""

    name: str
    #: the options of ``modules.NAME.<name>``: keys, kinds, secrets and checks, declared once;
    #: the dataclass they fill is the section's default (a module without the section gets it)
    options: Section[Options]
    #: why an address cannot be probed, or None
    check_address: Callable[[str], str | None]
    probe: Prober | None
    #: every continuous family the prober may feed
    families: tuple[Family, ...] = ()
    #: the families a module with these options can show (for ``limits.sample_limit``)
    families_for: Callable[[Options], tuple[Family, ...]] | None = None
    blackbox_families: tuple[BlackboxFamily, ...] = ()
    #: why these options cannot run within ``timeout`` seconds, or None; the third argument
    #: says where that timeout comes from (``{}`` standing for it), for the message
    check_timeout: Callable[[Options, float, str], str | None] | None = None
    #: the options as YAML-able values, secrets already redacted (None: generic)
    shown: Callable[[Options, dict[str, object]], dict[str, object]] | None = None
    #: the options with a ``/probe?hostname=`` override; ValueError says why not
    with_hostname: Callable[[Options, str], Options] | None = None

    @property
    def default(self) -> Options:
        """The options of a module that does not set its prober's section."""
        return self.options.default

    def parse(self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node) -> Options:
        """``modules.NAME.<name>`` (``node``; None when absent, ``where`` being the module)."""
        return self.options.read_or_default(c, node, path, where)

    def module_families(self, options: Options) -> tuple[Family, ...]:
        return self.families if self.families_for is None else self.families_for(options)


#: every prober by name, filled by the prober modules as ``probes.all`` imports them
PROBERS: dict[str, ProberSpec] = {}


def register(spec: ProberSpec) -> ProberSpec:
    """Add ``spec`` to the registry (each prober module does this once, at import)."""
    if spec.name in PROBERS:
        raise ValueError(f'prober "{spec.name}" registered twice')
    PROBERS[spec.name] = spec
    return spec


def options_of(module: Module, kind: type[OptionsT]) -> OptionsT:
    """The module's options as the prober's own type (a module of another prober is a bug)."""
    opts = module.options
    if not isinstance(opts, kind):
        raise TypeError(f'module "{module.name}" has no {kind.__name__} options')
    return opts


def engine(ctx: ProbeContext, key: str, make: Callable[[ProbeReactor], object]) -> object:
    """The context's shared engine ``key``, made for its reactor on first use."""
    found = ctx.engines.get(key)
    if found is None:
        found = ctx.engines[key] = make(ctx.reactor)
    return found


def run_probe(
    ctx: ProbeContext, work: Callable[[ProbeResult, float], Awaitable[None]]
) -> Deferred[ProbeResult]:
    """Run a prober body with the contract every prober keeps.

    ``work(result, started)`` fills in ``result``; this wraps it so the whole duration is
    recorded, the outcome is logged, cancellation propagates, and a bug becomes an ``error``
    result instead of an exception that would reach the scheduler.
    """
    monotonic = ctx.clock.monotonic

    async def body() -> ProbeResult:
        started = monotonic()
        result = ctx.new_result()
        try:
            await work(result, started)
        except CancelledError:
            raise
        except Exception as exc:
            result.fail("error", f"internal error: {exc!r}")
        result.duration = monotonic() - started
        if result.success:
            result.outcome("Probe succeeded", "info", duration_seconds=result.duration)
        else:
            result.outcome("Probe failed", "error", duration_seconds=result.duration)
        return result

    return Deferred.fromCoroutine(body())


def registry(probers: Mapping[str, ProberSpec] = PROBERS) -> dict[str, Prober]:
    """Map a module's ``prober:`` name to its probe function (runnable probers only)."""
    return {name: spec.probe for name, spec in probers.items() if spec.probe is not None}
