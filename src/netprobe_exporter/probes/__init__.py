"""Probers: one module per protocol, one call shape, one result type.

Every prober is a function ``probe(ctx, address, module, timeout) -> Deferred[ProbeResult]``. It
never errbacks except with ``CancelledError`` when cancelled; every failure, including a bug in
the prober, comes back as a ProbeResult with ``success=False`` and a ``result`` reason. Probers
know nothing of Prometheus: ``metrics`` (continuous mode) and ``blackbox`` (``/probe``) turn
results into series.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred

from netprobe_exporter.modules import Module

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

#: a debug log keeps at most this many entries and about this many bytes of their text; past
#: either, entries are only counted (a flooding peer must not grow it, nor the answer, unbounded)
MAX_LOG_LINES = 2000
MAX_LOG_BYTES = 512 * 1024

#: Go's zero time as a Unix timestamp: blackbox's value for "no verified chain"
GO_ZERO_TIME = -62135596800.0


@dataclass(slots=True)
class TLSInfo:
    """What the TLS handshake showed."""

    version: str = "unknown"  # "TLS 1.2", "TLS 1.3"
    #: earliest NotAfter of the certificates the peer presented
    earliest_expiry: float = 0.0
    #: earliest NotAfter of the verified chain; GO_ZERO_TIME when nothing was verified
    last_chain_expiry: float = GO_ZERO_TIME
    fingerprint_sha256: str = ""
    subject: str = ""
    issuer: str = ""
    #: DNS subject alternative names, comma-separated
    subject_alternative: str = ""


@dataclass(slots=True)
class HTTPInfo:
    """What the HTTP exchange showed (of the final response, phases summed over redirects)."""

    status_code: int = 0
    content_length: int = 0
    body_length: int = 0
    redirects: int = 0
    ssl: bool = False
    version: float = 0.0
    last_modified: float | None = None
    #: resolve, connect, tls, processing, transfer; only resolve if resolution failed
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class DNSInfo:
    """What a DNS exchange showed."""

    #: resolve, connect, request
    phases: dict[str, float] = field(default_factory=dict)
    answer_rrs: int = 0
    authority_rrs: int = 0
    additional_rrs: int = 0
    query_succeeded: bool = False
    #: the zone serial, for SOA queries (0 when no SOA came back); None for other queries
    serial: float | None = None


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
    #: 4 or 6 once an address was chosen, else 0
    ip_protocol: int = 0
    #: the target named a host that was resolved (or an IP literal checked against the
    #: preferred protocol); blackbox emits its resolution metrics exactly then
    resolve_attempted: bool = False
    #: name resolution time
    resolve_duration: float | None = None
    #: the kernel's smoothed RTT right after the handshake (TCP_INFO), when available
    handshake_rtt: float | None = None
    #: an expected pattern (tcp expect, http body/header rules) decided the failure
    failed_due_to_regex: bool = False
    tls: TLSInfo | None = None
    http: HTTPInfo | None = None
    dns: DNSInfo | None = None
    #: icmp: resolve, setup and rtt phases; the reply's TTL / hop limit
    icmp: dict[str, float] | None = None
    icmp_hop_limit: int | None = None
    #: why probe_policy refused the address, when it did (the probe was not sent)
    policy_refused: str | None = None
    #: human-readable reason for a failure
    detail: str = ""
    #: step-by-step notes (time, level, message, fields), kept only when debugging
    log: list[tuple[float, str, str, dict[str, Any]]] | None = None
    #: notes not kept because the log was full (``MAX_LOG_LINES`` / ``MAX_LOG_BYTES``)
    log_dropped: int = 0
    #: where in ``log`` the dropped notes would have been
    log_dropped_at: int = 0
    _log_bytes: int = 0

    def note(self, msg: str, level: str = "info", **fields: Any) -> None:
        """Record a step for ``/probe?debug=true``; free when not debugging, bounded when."""
        if self.log is None:
            return
        if self.log_dropped or len(self.log) >= MAX_LOG_LINES:
            self._drop()  # once one is dropped, later ones are too: no gaps in the middle
            return
        size = len(msg) + sum(len(k) + len(str(v)) + 2 for k, v in fields.items())
        if self._log_bytes + size > MAX_LOG_BYTES:
            self._drop()
            return
        self._log_bytes += size
        self.log.append((time.time(), level, msg, fields))

    def outcome(self, msg: str, level: str, **fields: Any) -> None:
        """Record how the probe ended: kept even when the log is full, as it says the most."""
        if self.log is not None:
            self.log.append((time.time(), level, msg, fields))

    def _drop(self) -> None:
        assert self.log is not None
        if not self.log_dropped:
            self.log_dropped_at = len(self.log)
        self.log_dropped += 1

    def fail(self, result: str, detail: str) -> ProbeResult:
        self.success = False
        self.result = result
        self.detail = detail
        self.outcome(detail, "error")
        return self


class AddressResolver(Protocol):
    def resolve(
        self, host: str, preferred: str, fallback: bool, timeout: float
    ) -> Deferred[str]: ...


@dataclass(slots=True)
class ProbeContext:
    """Everything a prober may use besides its arguments: no hidden globals."""

    reactor: Any
    resolver: AddressResolver
    #: keep a step-by-step log in each result
    debug: bool = False
    #: the shared connect engine (probes.connect.ConnectEngine); made for the reactor if None
    engine: Any = None
    #: the shared ICMP sockets (probes.icmp.IcmpEngine); made for the reactor if None
    icmp: Any = None
    #: (host, ip) -> why the address may not be probed, or None; for /probe's probe_policy
    policy: Callable[[str, str], str | None] | None = None
    #: bytes of an HTTP body kept for body regular expressions (``limits.max_body_bytes``)
    max_body_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.engine is None:
            from netprobe_exporter.probes.connect import ConnectEngine

            self.engine = ConnectEngine(self.reactor)
        if self.icmp is None:
            from netprobe_exporter.probes.icmp import IcmpEngine

            self.icmp = IcmpEngine(self.reactor)

    def new_result(self) -> ProbeResult:
        return ProbeResult(False, "error", 0.0, log=[] if self.debug else None)


Prober = Callable[[ProbeContext, str, Module, float], "Deferred[ProbeResult]"]


def run_probe(
    ctx: ProbeContext, work: Callable[[ProbeResult, float], Awaitable[None]]
) -> Deferred[ProbeResult]:
    """Run a prober body with the contract every prober keeps.

    ``work(result, started)`` fills in ``result``; this wraps it so the whole duration is
    recorded, the outcome is logged, cancellation propagates, and a bug becomes an ``error``
    result instead of an exception that would reach the scheduler.
    """

    async def body() -> ProbeResult:
        started = time.perf_counter()
        result = ctx.new_result()
        try:
            await work(result, started)
        except CancelledError:
            raise
        except Exception as exc:
            result.fail("error", f"internal error: {exc!r}")
        result.duration = time.perf_counter() - started
        if result.success:
            result.outcome("Probe succeeded", "info", duration_seconds=result.duration)
        else:
            result.outcome("Probe failed", "error", duration_seconds=result.duration)
        return result

    return Deferred.fromCoroutine(body())


def registry() -> dict[str, Prober]:
    """Map a module's ``prober:`` name to its function."""
    from netprobe_exporter.probes.dns import probe as dns_probe
    from netprobe_exporter.probes.http import probe as http_probe
    from netprobe_exporter.probes.icmp import probe as icmp_probe
    from netprobe_exporter.probes.tcp import probe as tcp_probe

    return {"tcp": tcp_probe, "http": http_probe, "dns": dns_probe, "icmp": icmp_probe}
