"""Probers: one module per protocol, one call shape, one result type.

Every prober is a function ``probe(ctx, address, module, timeout) -> Deferred[ProbeResult]``. It
never errbacks except with ``CancelledError`` when cancelled; every failure, including a bug in
the prober, comes back as a ProbeResult with ``success=False`` and a ``result`` reason. Probers
know nothing of Prometheus: the metrics layer turns results into series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred

from netprobe_exporter.config import Module

#: every value ``ProbeResult.result`` may take, in the order metrics list them
RESULTS = (
    "success",
    "timeout",
    "refused",
    "unreachable",
    "dns_error",
    "tls_error",
    "protocol_error",
    "error",
)


@dataclass(slots=True)
class ProbeResult:
    success: bool
    result: str
    #: whole probe, resolution included, in seconds
    duration: float
    #: time to establish the TCP connection; None unless the connection was established
    connect_duration: float | None = None
    #: the address actually probed, once resolved
    ip: str | None = None
    #: name resolution time, when a name was resolved
    resolve_duration: float | None = None
    #: the kernel's smoothed RTT right after the handshake (TCP_INFO), when available
    handshake_rtt: float | None = None
    #: human-readable reason for a failure
    detail: str = ""
    #: step-by-step notes, for /probe?debug=true
    log: list[str] = field(default_factory=list)


class AddressResolver(Protocol):
    def resolve(
        self, host: str, preferred: str, fallback: bool, timeout: float
    ) -> Deferred[str]: ...


@dataclass(slots=True)
class ProbeContext:
    """Everything a prober may use besides its arguments: no hidden globals."""

    reactor: object
    resolver: AddressResolver


Prober = Callable[[ProbeContext, str, Module, float], "Deferred[ProbeResult]"]


def registry() -> dict[str, Prober]:
    """Map a module's ``prober:`` name to its function."""
    from netprobe_exporter.probes import tcp

    return {"tcp": tcp.probe}
