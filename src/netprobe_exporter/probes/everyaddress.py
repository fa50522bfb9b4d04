"""``every_address``: probe each address a target's name resolves to, with any prober.

blackbox probes one address of a name (the first of the preferred family); a name with several
A and AAAA records can then look healthy while some of its addresses are not. A module with
``every_address`` resolves every address of the families it asks for, keeps up to
``max_addresses`` (the same ones each time: sorted, taken in turn from each family), and runs
its own prober once per address, at once, with a resolver pinned to that address. Each
address's result is kept whole in ``ProbeResult.addresses``; the probe as a whole succeeds
when every address did.

Nothing here knows a prober: the prober's declaration says which host its address names
(``ProberSpec.target_host``), and the prober resolves that host as always, through the
context's resolver, which now answers with the pinned address. A redirect or a second name
the prober resolves still goes to the real resolver.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred

from netprobe_exporter.addresses import parse_host
from netprobe_exporter.model import EveryAddress, Module, ProbeResult
from netprobe_exporter.probes import (
    PROBERS,
    AddressResolver,
    ProbeContext,
    Prober,
    run_probe,
)
from netprobe_exporter.probes.connect import via_dns_server

__all__ = ["choose", "probe_every_address", "run_module"]


def run_module(
    probers: Mapping[str, Prober], ctx: ProbeContext, address: str, module: Module, timeout: float
) -> Deferred[ProbeResult]:
    """Probe ``address`` with ``module``: once, or once per address with ``every_address``."""
    prober = probers[module.prober]
    every = module.every_address
    if every is None:
        return prober(ctx, address, module, timeout)
    spec = PROBERS.get(module.prober)
    host_of = spec.target_host if spec is not None else None
    if host_of is None:  # refused at load; a test's own prober may get here
        return prober(ctx, address, module, timeout)
    return probe_every_address(ctx, prober, host_of, every, address, module, timeout)


def choose(addresses: Sequence[str], every: EveryAddress) -> list[str]:
    """The addresses to probe: each family's sorted, taken in turn, ``max_addresses`` at most.

    Sorted so that a name with more addresses than the bound is probed at the same ones
    whatever order its server rotates them in (its series stay put).
    """
    by_family: dict[int, set[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    for text in addresses:
        ip = ipaddress.ip_address(text)
        by_family.setdefault(ip.version, set()).add(ip)
    queues = [sorted(by_family.get(f, ())) for f in every.families]
    out: list[str] = []
    depth = 0
    while len(out) < every.max_addresses and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < every.max_addresses:
                out.append(str(q[depth]))
        depth += 1
    return out


class PinnedResolver:
    """A resolver that answers ``host`` with one address, and asks ``base`` for any other."""

    def __init__(self, base: AddressResolver, host: str, ip: str) -> None:
        self._base = base
        self._host = host.lower().rstrip(".")
        self._ip = ip

    def _pinned(self, host: str) -> bool:
        return host.lower().rstrip(".") == self._host

    def resolve(
        self,
        host: str,
        preferred: str,
        fallback: bool,
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[str]:
        if self._pinned(host):
            return defer.succeed(self._ip)
        return self._base.resolve(host, preferred, fallback, timeout, servers)

    def resolve_all(
        self,
        host: str,
        families: tuple[int, ...],
        timeout: float,
        servers: Sequence[tuple[str, int]] | None = None,
    ) -> Deferred[list[str]]:
        if self._pinned(host):
            return defer.succeed([self._ip])
        return self._base.resolve_all(host, families, timeout, servers)


def _servers(module: Module, timeout: float) -> tuple[list[tuple[str, int]] | None, float]:
    """The module's ``dns_server`` (if its prober has one) and the time a lookup may take."""
    server = getattr(module.options, "dns_server", None)
    if not isinstance(server, str):
        return None, timeout
    limit = getattr(module.options, "dns_timeout", None)
    return via_dns_server(server, limit if isinstance(limit, float) else None, timeout)


def _family_names(families: tuple[int, ...]) -> str:
    return " or ".join(f"IPv{f}" for f in families)


def probe_every_address(
    ctx: ProbeContext,
    prober: Prober,
    host_of: Callable[[str], str],
    every: EveryAddress,
    address: str,
    module: Module,
    timeout: float,
) -> Deferred[ProbeResult]:
    """Resolve every address of ``address``'s host, then probe each with ``prober``."""
    clock = ctx.clock.monotonic

    async def work(result: ProbeResult, started: float) -> None:
        host = host_of(address)
        result.note("Resolving every address of the target", target=host,
                    families=_family_names(every.families))  # fmt: skip
        if parse_host(host):
            found = [host] if ipaddress.ip_address(host).version in every.families else []
            result.resolve_duration = clock() - started
            if not found:
                result.fail("dns_error", f"resolve: {host}: not an {_family_names(every.families)} "
                            "address")  # fmt: skip
                return
        else:
            servers, limit = _servers(module, timeout)
            try:
                found = await ctx.resolver.resolve_all(host, every.families, limit, servers)
            except defer.CancelledError:
                raise
            except Exception as exc:
                result.resolve_duration = clock() - started
                result.fail("dns_error", f"resolve: {exc}")
                return
            result.resolve_duration = clock() - started
        chosen = choose(found, every)
        result.note("Resolved every address of the target", target=host, found=len(found),
                    probed=",".join(chosen))  # fmt: skip
        left = max(timeout - (clock() - started), 0.001)
        probes = [
            prober(dataclasses.replace(ctx, resolver=PinnedResolver(ctx.resolver, host, ip)),
                   address, module, left)
            for ip in chosen
        ]  # fmt: skip
        try:
            results: list[ProbeResult] = await defer.gatherResults(probes, consumeErrors=True)
        except defer.FirstError as exc:  # probers fail only when cancelled: say it as that
            exc.subFailure.raiseException()
        result.addresses = list(zip(chosen, results, strict=True))
        for ip, child in result.addresses:
            result.adopt(child, ip=ip)
        failed = [(ip, child) for ip, child in result.addresses if not child.success]
        refused = [child.policy_refused for _, child in failed if child.policy_refused]
        if refused:  # /probe's probe_policy: one denied address refuses the whole target
            result.policy_refused = refused[0]
        if not chosen:
            result.fail("dns_error", f"resolve: {host}: no address")
        elif failed:
            ip, first = failed[0]
            result.fail(first.result, f"{len(failed)} of {len(chosen)} addresses failed; "
                        f"{ip}: {first.detail}")  # fmt: skip
        else:
            result.success = True
            result.result = "success"

    return run_probe(ctx, work)
