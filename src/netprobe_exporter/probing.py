"""Continuous probing: the scheduler runs each target's prober, the store keeps the results.

A subscriber of the config manager: a change's series and schedule are built in ``prepare``
(off the reactor on a reload) and swapped in by ``commit``. Stopping the service cancels every
timer and every probe in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from netprobe_exporter.config import Config, Limits, Target
from netprobe_exporter.configmanager import ConfigChange
from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.metrics import MetricsStore, SeriesPlan
from netprobe_exporter.probes import ProbeContext, Prober, ProbeResult
from netprobe_exporter.probes.everyaddress import run_module
from netprobe_exporter.scheduler import SchedulePlan, Scheduler

log = Logger()


@dataclasses.dataclass(frozen=True, slots=True)
class ProbingChange:
    """A change's series and schedule, built; ``commit`` swaps them in."""

    service: ProbingService
    change: ConfigChange
    series: SeriesPlan
    schedule: SchedulePlan
    ctx: ProbeContext

    def commit(self) -> None:
        self.service.commit(self)


class ProbingService(Service):
    """Probes the running config's continuous targets on their schedule into the store."""

    name = "probing"

    def __init__(
        self,
        clock: IReactorTime,
        ctx: ProbeContext,
        probers: Mapping[str, Prober],
        store: MetricsStore,
        wall: Callable[[], float],
    ) -> None:
        self.ctx = ctx
        self.probers = dict(probers)
        self.store = store
        self._wall = wall
        self.config: Config | None = None
        self.scheduler = Scheduler(
            clock,
            self._run,
            self._on_result,
            on_lag=store.stats.lag.observe,
            on_skip=self._on_skip,
            max_inflight=Limits().max_concurrent_probes,
        )
        store.stats.inflight_source = lambda: self.scheduler.inflight
        store.stats.dns_source = self._dns_counts

    @property
    def probing(self) -> bool:
        """A config is scheduled and the service has not been stopped."""
        return self.scheduler.running

    def stopService(self) -> None:
        """Cancel every timer and every probe in flight (their results are not recorded)."""
        super().stopService()
        self.scheduler.stop()

    def _dns_counts(self) -> tuple[int, int, int]:
        cache = self.ctx.resolver
        return cache.counts() if isinstance(cache, CachingResolver) else (0, 0, 0)

    # config changes
    def prepare(self, change: ConfigChange) -> ProbingChange:
        targets = change.targets
        ctx = self.ctx
        if change.config_changed:
            ctx = dataclasses.replace(ctx, max_body_bytes=change.config.limits.max_body_bytes)
        return ProbingChange(
            self, change, self.store.plan(targets), self.scheduler.plan(targets), ctx
        )

    def commit(self, prepared: ProbingChange) -> None:
        """Swap a prepared change in: assignments only, nothing here can fail."""
        change = prepared.change
        self.config = change.config
        self.ctx = prepared.ctx
        self.store.commit(prepared.series)
        if not change.config_changed:
            self.scheduler.commit(prepared.schedule)
            return
        self.scheduler.max_inflight = change.config.limits.max_concurrent_probes
        if isinstance(self.ctx.resolver, CachingResolver):
            self.ctx.resolver.configure(change.config.dns_cache)
        self.scheduler.commit(prepared.schedule)
        self.scheduler.drain()  # a raised max_concurrent_probes starts queued probes now

    # probing
    def _run(self, target: Target, budget: float) -> Deferred[ProbeResult]:
        """Start one probe; ``budget`` is the time left before the target's next slot."""
        assert self.config is not None
        module = self.config.modules[target.module]
        timeout = min(module.continuous_timeout, budget)
        return run_module(self.probers, self.ctx, target.address, module, timeout)

    def _on_result(self, target: Target, result: ProbeResult) -> None:
        before = self.store.up(target)
        self.store.observe(target, result, self._wall())
        after = self.store.up(target)
        if before is not None and after is not None and before != after:
            # state changes only: one line per transition, not one per probe
            log.info(
                "target up" if after else "target down",
                target=target.display_address,
                module=target.module,
                result=result.result,
                detail=result.detail,
            )
        elif not result.success:
            log.debug(
                "probe failed",
                target=target.display_address,
                module=target.module,
                result=result.result,
                detail=result.detail,
            )

    def _on_skip(self, target: Target, n: int) -> None:
        self.store.stats.skipped += n
