"""The exporter as one ``MultiService``: config manager, continuous probing and web service.

Continuous probing is the in-process ``ProbingService`` with ``workers=0``, else a
``WorkerPool`` of probe worker processes (``workerpool``) feeding the same store.

``App`` only assembles: it takes the collaborators (reactor, resolver, wall clock, store,
registry, web config) and wires the three services together. They start in the order web
(listeners), probing, config (which loads the config and commits it to the other two) and
stop in the reverse one: the target file watch, then the probes in flight, then the listeners.
The methods below delegate to the service that owns each concern.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from twisted.application.service import MultiService
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IReactorThreads,
    IReactorTime,
)
from twisted.python.failure import Failure

from netprobe_exporter.config import Config
from netprobe_exporter.configmanager import (
    ConfigManager,
    Offload,
    ReloadFailed,
    describe,
    no_full_collections,
)
from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.probe_endpoint import Handoff
from netprobe_exporter.probes import (
    AddressResolver,
    ProbeContext,
    Prober,
    ProbeReactor,
    registry,
)
from netprobe_exporter.probing import ProbingService
from netprobe_exporter.resolver import Resolver
from netprobe_exporter.scheduler import Scheduler
from netprobe_exporter.targetfiles import Scan
from netprobe_exporter.webconfig import WebConfig, load_web_config
from netprobe_exporter.webservice import (
    LISTEN_BACKLOG,
    WebService,
    self_probe_address,
    split_listen_address,
)
from netprobe_exporter.workerpool import Spawn, WorkerPool, spawn_process

T = TypeVar("T")

__all__ = [
    "LISTEN_BACKLOG",
    "App",
    "ReloadFailed",
    "describe",
    "no_full_collections",
    "self_probe_address",
    "split_listen_address",
]


class ThreadOffload:
    """Runs blocking work (config reads, reload builds) in the reactor's thread pool."""

    def __init__(self, reactor: IReactorCore) -> None:
        self._reactor = reactor

    def __call__(self, f: Callable[..., T], /, *args: Any) -> Deferred[T]:
        pool = IReactorThreads(self._reactor).getThreadPool()
        return threads.deferToThreadPool(IReactorFromThreads(self._reactor), pool, f, *args)


def process_registry() -> CollectorRegistry:
    """The ``process_*`` metrics (CPU, memory, file descriptors) of this process."""
    reg = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=reg)
    return reg


class App(MultiService):
    """The three services, wired; ``stop()`` (or ``stopService``) cancels probes in flight."""

    def __init__(
        self,
        reactor: IReactorCore,
        config_file: str | None = None,
        extra_targets: Sequence[str] = (),
        resolver: AddressResolver | None = None,
        wall: Callable[[], float] = time.time,
        process_metrics: bool = True,
        timeout_offset: float = 0.5,
        shard: tuple[int, int] = (0, 1),
        web_config_file: str | None = None,
        *,
        listen: Sequence[str] = (),
        web_config: WebConfig | None = None,
        store: MetricsStore | None = None,
        metrics_registry: CollectorRegistry | None = None,
        probers: Mapping[str, Prober] | None = None,
        offload: Offload | None = None,
        workers: int = 0,
        spawn: Spawn | None = None,
        log_level: str = "info",
    ) -> None:
        super().__init__()
        if web_config is None and web_config_file is not None:
            web_config = load_web_config(web_config_file)
        if metrics_registry is None and process_metrics:
            metrics_registry = process_registry()
        self.reactor = reactor
        self.store = store if store is not None else MetricsStore()
        self.registry = metrics_registry
        clock = IReactorTime(reactor)
        # the running reactor provides every interface a prober uses (ProbeReactor); /probe
        # resolves afresh, continuous probing through a cache (unless given a resolver)
        ctx = ProbeContext(cast(ProbeReactor, reactor), resolver or Resolver(clock))
        continuous = ctx
        if resolver is None:
            continuous = dataclasses.replace(ctx, resolver=CachingResolver(clock))
        found = dict(probers) if probers is not None else registry()
        self.probing: ProbingService | WorkerPool
        handoff: Handoff | None = None
        if workers > 0:
            spawn = spawn or spawn_process(reactor, log_level)
            self.probing = pool = WorkerPool(clock, spawn, self.store, wall, workers)
            handoff = pool.probe  # /probe runs in the workers too (main keeps HTTP and checks)
        else:
            self.probing = ProbingService(clock, continuous, found, self.store, wall)
        self.manager = ConfigManager(
            clock,
            offload or ThreadOffload(reactor),
            self.store.stats,
            wall,
            config_file=config_file,
            extra_targets=extra_targets,
            shard=shard,
            self_probe=lambda: self.web.self_probe,
        )
        self.web = WebService(
            reactor,
            listen,
            store=self.store,
            registry=metrics_registry,
            ctx=ctx,
            probers=found,
            is_ready=self.is_ready,
            reload=self.manager.reload,
            wall=wall,
            web_config=web_config,
            web_config_file=web_config_file,
            timeout_offset=timeout_offset,
            handoff=handoff,
        )
        self.manager.subscribe(self.probing)
        self.manager.subscribe(self.web)
        for service in (self.web, self.probing, self.manager):
            service.setServiceParent(self)

    def is_ready(self) -> bool:
        """``/-/ready``: a config is running and probing has not been stopped."""
        return self.manager.config is not None and self.probing.probing

    # the config manager's
    @property
    def config(self) -> Config | None:
        return self.manager.config

    @property
    def files(self) -> Scan:
        return self.manager.files

    def read_config(self) -> Config:
        return self.manager.read_config()

    def apply(self, config: Config, files: Scan | None = None) -> None:
        self.manager.apply(config, files)

    def reload(self) -> Deferred[None]:
        return self.manager.reload()

    def refresh_files(self) -> Deferred[None] | None:
        return self.manager.refresh_files()

    # the probing service's
    @property
    def scheduler(self) -> Scheduler:
        assert isinstance(self.probing, ProbingService), "probing runs in worker processes"
        return self.probing.scheduler

    @property
    def probers(self) -> dict[str, Prober]:
        """Continuous probing's probers (a test may replace one before ``apply``)."""
        assert isinstance(self.probing, ProbingService), "probing runs in worker processes"
        return self.probing.probers

    # the web service's
    @property
    def ports(self) -> list[IListeningPort]:
        return self.web.ports

    @property
    def self_probe(self) -> str | None:
        return self.web.self_probe

    def listen(self, addresses: Sequence[str]) -> None:
        """Bind ``addresses`` now; raise what the first that could not be bound raised."""
        self.web.addresses = list(addresses)
        self.web.privilegedStartService()
        assert self.web.listening is not None
        failed: list[Failure] = []
        self.web.listening.addErrback(failed.append)
        if failed:
            failed[0].raiseException()

    def reload_web_config(self) -> None:
        self.web.reload_web_config()

    def stop(self) -> Deferred[None]:
        """Stop every service: the file watch, then the probes in flight, then the listeners."""
        d: Deferred[Any] = self.stopService()
        return d.addCallback(lambda _: None)
