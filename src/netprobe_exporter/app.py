"""Wiring: config -> scheduler -> probers -> metrics store -> web, plus reload and shutdown.

This is the only module that knows all the others; each of them knows little of the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from twisted.internet import defer, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from netprobe_exporter import web
from netprobe_exporter.addresses import parse_host_port
from netprobe_exporter.config import (
    Config,
    ConfigError,
    Limits,
    Target,
    load_config,
    over_limits,
    with_extra_targets,
)
from netprobe_exporter.metrics import MetricsStore, SeriesPlan
from netprobe_exporter.probe_endpoint import ProbeEndpoint
from netprobe_exporter.probes import ProbeContext, ProbeResult, registry
from netprobe_exporter.resolver import Resolver
from netprobe_exporter.scheduler import SchedulePlan, Scheduler
from netprobe_exporter.sources import ShardedSource, TargetSource, static_source
from netprobe_exporter.targetfiles import Scan, file_targets, scan
from netprobe_exporter.webconfig import Guard, ServerContext, WebConfig, load_web_config

log = Logger()

# Twisted's default of 50 drops SYNs during a burst of scrapes and /probe requests (each retried
# a second later by the client); the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024


def split_listen_address(address: str) -> tuple[str, int]:
    """``:9716`` -> ("", 9716); ``[::]:9716`` -> ("::", 9716); port 0 picks a free port."""
    if address.startswith(":") and address[1:].isdigit():
        port = int(address[1:])
        if port > 65535:
            raise ValueError(f"{address!r}: port {port} is out of range")
        return "", port
    if address.endswith(":0"):
        hp = parse_host_port(address[:-2] + ":1")
        return hp.host, 0
    hp = parse_host_port(address)
    return hp.host, hp.port


def self_probe_address(host: str, port: int) -> str:
    """Where the embedded default points: the exporter's own listener, by loopback if wildcard."""
    if host in ("", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """Build a config's state (nodes, targets, series) without full garbage collections.

    Each full collection walks every tracked object and holds the GIL meanwhile; the hundreds
    of thousands of objects a 50,000-target reload builds trigger several, of 0.1-0.4 s each,
    whichever thread allocates. Young collections go on as usual; only the oldest one waits.
    A build that succeeds then calls ``gc.freeze()``, so that the new state it leaves alive is
    not walked by later full collections either (freed state still goes by reference count).
    """
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(t0, t1, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)


class ReloadFailed(Exception):
    """A reload that failed for a reason other than an invalid config (its text says which)."""


def describe(exc: BaseException | None) -> str:
    """An exception as one line for logs and answers: its kind, and its message if any."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """A config ready to run: everything built, nothing yet swapped in."""

    config: Config
    #: the target files' scan as read, and the one used (empty when it has too many targets)
    seen: Scan
    files: Scan
    files_problem: str | None
    targets: int
    series: SeriesPlan
    schedule: SchedulePlan
    ctx: ProbeContext


@dataclasses.dataclass(frozen=True, slots=True)
class _FilesPlan:
    """A changed target files' set ready to run."""

    targets: int
    series: SeriesPlan
    schedule: SchedulePlan


class App:
    def __init__(
        self,
        reactor: Any,
        config_file: str | None = None,
        extra_targets: Sequence[str] = (),
        resolver: Any = None,
        wall: Callable[[], float] = time.time,
        process_metrics: bool = True,
        timeout_offset: float = 0.5,
        shard: tuple[int, int] = (0, 1),
        web_config_file: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.shard = shard
        self.web_config_file = web_config_file
        self.web_config = load_web_config(web_config_file) if web_config_file else WebConfig()
        self.guard: Guard | None = None
        self.tls_context: ServerContext | None = None
        self.timeout_offset = timeout_offset
        self.config_file = config_file
        self.extra_targets = list(extra_targets)
        self.wall = wall
        self.store = MetricsStore()
        if web_config_file is not None:
            self.store.stats.web_reload_success_ts = wall()
        self.config: Config | None = None
        self.self_probe: str | None = None
        self.ports: list[IListeningPort] = []
        self.ctx = ProbeContext(reactor, resolver or Resolver(reactor))
        self.probers = registry()
        self.scheduler = Scheduler(
            reactor,
            self._run,
            self._on_result,
            on_lag=self.store.stats.lag.observe,
            on_skip=self._on_skip,
            max_inflight=Limits().max_concurrent_probes,
        )
        self.store.stats.inflight_source = lambda: self.scheduler.inflight
        self.registry: CollectorRegistry | None = None
        if process_metrics:
            self.registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=self.registry)
        self._reload_lock = defer.DeferredLock()
        self._contexts: dict[bool, tuple[Config | None, ProbeContext, ProbeContext]] = {}
        #: the target files' scan in use, and the latest one (the same unless it was refused)
        self.files = self._seen = Scan({})
        self._file_watch: task.LoopingCall | None = None

    # config
    def read_config(self) -> Config:
        """Load the config file (or the embedded default) plus ``--target``s; may block."""
        if self.config_file is not None:
            config = load_config(self.config_file)
        else:
            config = Config()
            if not self.extra_targets and self.self_probe is not None:
                config = with_extra_targets(config, [self.self_probe])
        return with_extra_targets(config, self.extra_targets)

    def source(self, config: Config, files: Scan | None = None) -> TargetSource:
        source = static_source(config, file_targets(files) if files is not None else ())
        index, count = self.shard
        return source if count == 1 else ShardedSource(source, index, count)

    def _too_many(self, config: Config, files: Scan) -> str | None:
        return over_limits(config, static_source(config, file_targets(files)).targets())

    def apply(self, config: Config, files: Scan | None = None) -> None:
        """Run ``config``; ``files`` is its target files' scan (made here, blocking, if None)."""
        if files is None:
            files = scan(config, self._seen.files, force=True)
        self._commit(self._prepare(config, files))

    def _prepare(self, config: Config, files: Scan) -> _Plan:
        """Everything a switch to ``config`` needs, built without changing anything running.

        Whatever can fail (or take long: series and schedules for 100,000 targets) happens
        here, off the reactor thread on a reload; it only reads the running state, which the
        reload lock keeps from changing meanwhile.
        """
        problem = self._too_many(config, files)
        used = Scan({}) if problem is not None else files
        targets = self.source(config, used).targets()
        return _Plan(
            config=config,
            seen=files,
            files=used,
            files_problem=problem,
            targets=len(targets),
            series=self.store.plan(targets),
            schedule=self.scheduler.plan(targets),
            ctx=dataclasses.replace(self.ctx, max_body_bytes=config.limits.max_body_bytes),
        )

    def _commit(self, plan: _Plan) -> None:
        """Swap ``plan`` in: assignments only (nothing here can fail), then report it."""
        config = plan.config
        self._seen = plan.seen
        self.files = plan.files
        self.config = config
        self.store.commit(plan.series)
        self.ctx = plan.ctx
        self.scheduler.max_inflight = config.limits.max_concurrent_probes
        self.scheduler.commit(plan.schedule)
        self.scheduler.drain()  # a raised max_concurrent_probes starts queued probes now
        stats = self.store.stats
        stats.reload_successful = 1.0
        stats.reload_success_ts = self.wall()
        self._report_files(plan.seen)
        if plan.files_problem is not None:
            log.error("target files ignored", error=plan.files_problem)
            stats.target_files_ok = 0.0
        for warning in config.warnings:
            log.warn("config warning", warning=warning)
        log.info(
            "config loaded",
            file=config.source,
            targets=plan.targets,
            modules=len(config.modules),
        )
        self._watch_files(config)

    # target files
    def _report_files(self, files: Scan) -> None:
        for line in files.errors:
            log.error("target file rejected, its previous targets kept", error=line)
        stats = self.store.stats
        stats.target_file_errors += len(files.errors)
        stats.target_files_ok = 1.0 if files.healthy else 0.0

    def _watch_files(self, config: Config) -> None:
        if self._file_watch is not None and self._file_watch.running:
            self._file_watch.stop()
        self._file_watch = None
        if config.target_files:
            every = min(spec.refresh_interval for spec in config.target_files)
            self._file_watch = task.LoopingCall(self.refresh_files)
            self._file_watch.clock = self.reactor
            self._file_watch.start(every, now=False).addErrback(
                lambda f: log.failure("target file watch stopped", f)
            )

    def refresh_files(self) -> Deferred[None] | None:
        """Look at the target files (off the reactor) and take up what changed."""
        if self._reload_lock.locked or self.config is None:
            return None  # a reload is re-reading them anyway
        return self._reload_lock.run(self._refresh_files)

    def _refresh_files(self) -> Deferred[None]:
        config, previous = self.config, self._seen
        assert config is not None
        d: Deferred[tuple[Scan, str | None, _FilesPlan | None]] = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._prepare_files, config, previous
        )

        def adopt(prepared: tuple[Scan, str | None, _FilesPlan | None]) -> None:
            files, problem, plan = prepared
            if self.config is not config or not self.scheduler.running:
                return  # a reload came first, or the exporter is stopping
            # Unchanged files are not read again next time, even when this change is refused
            # below: the refusal stands (and is not logged again) until a file changes.
            self._seen = files
            if not files.changed:
                return
            self._report_files(files)
            if problem is not None:
                log.error("target files change ignored, previous targets kept", error=problem)
                self.store.stats.target_files_ok = 0.0
                return
            assert plan is not None
            self.files = files
            self.store.commit(plan.series)
            self.scheduler.commit(plan.schedule)
            log.info("target files changed", targets=plan.targets, files=len(files.files))

        def failed(reason: Failure) -> None:
            log.failure("reading target files failed", reason)

        d.addCallbacks(adopt, failed)
        return d  # type: ignore[return-value]

    def _prepare_files(
        self, config: Config, previous: Scan
    ) -> tuple[Scan, str | None, _FilesPlan | None]:
        """Off the reactor: scan the files and, when they changed, plan the new target set."""
        with no_full_collections():
            prepared = self._scan_and_plan(config, previous)
            if prepared[2] is not None:  # new state was built (most looks find no change)
                gc.freeze()
            return prepared

    def _scan_and_plan(
        self, config: Config, previous: Scan
    ) -> tuple[Scan, str | None, _FilesPlan | None]:
        files = scan(config, previous.files)
        if not files.changed:
            return files, None, None
        problem = self._too_many(config, files)
        if problem is not None:
            return files, problem, None
        targets = self.source(config, files).targets()
        plan = _FilesPlan(len(targets), self.store.plan(targets), self.scheduler.plan(targets))
        return files, None, plan

    def reload(self) -> Deferred[None]:
        """Re-read the config off the reactor thread; one that fails changes nothing.

        Reading, validating and building the new state (series, schedule) all happen in a
        thread; the reactor only swaps the result in. Any failure before the swap, whatever
        its kind, leaves the running config whole, is logged and counts as a failed reload.
        """
        return self._reload_lock.run(self._reload)

    def _load(self) -> _Plan:
        with no_full_collections():
            config = self.read_config()
            # every file is read again; one that fails now keeps its last good targets
            plan = self._prepare(config, scan(config, self._seen.files, force=True))
            gc.freeze()
            return plan

    def _reload(self) -> Deferred[None]:
        d: Deferred[_Plan] = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._load
        )

        def swap(plan: _Plan) -> None:
            if self.config is not None and not self.scheduler.running:
                raise ReloadFailed("the exporter is stopping")
            self._commit(plan)

        def rejected(reason: Failure) -> Failure:
            self.store.stats.reload_successful = 0.0
            exc = reason.value
            if isinstance(exc, ConfigError):
                for line in exc.errors:
                    log.error("config reload rejected, previous config kept", error=line)
                return reason
            log.error("config reload failed, previous config kept", error=describe(exc))
            if isinstance(exc, ReloadFailed):
                return reason
            return Failure(ReloadFailed(describe(exc)))

        d.addCallback(swap)
        d.addErrback(rejected)
        return d  # type: ignore[return-value]

    def is_ready(self) -> bool:
        return self.config is not None and self.scheduler.running

    # probing
    def _run(self, target: Target, budget: float) -> Deferred[ProbeResult]:
        """Start one probe; ``budget`` is the time left before the target's next slot."""
        assert self.config is not None
        module = self.config.modules[target.module]
        timeout = min(module.continuous_timeout, budget)
        return self.probers[module.prober](self.ctx, target.address, module, timeout)

    def _on_result(self, target: Target, result: ProbeResult) -> None:
        before = self.store.up(target)
        self.store.observe(target, result, self.wall())
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

    # web
    def context(self, debug: bool = False) -> ProbeContext:
        """The context of one /probe request: the running config's probe_policy applies."""
        cached = self._contexts.get(debug)
        if cached is not None and cached[0] is self.config and cached[1] is self.ctx:
            return cached[2]
        policy = self.config.probe_policy.check if self.config is not None else None
        ctx: ProbeContext = dataclasses.replace(self.ctx, debug=debug, policy=policy)
        self._contexts[debug] = (self.config, self.ctx, ctx)  # until a reload changes either
        return ctx

    def site(self) -> web.Site:
        probe = ProbeEndpoint(
            lambda: self.config, self.context, self.probers, self.store.stats, self.timeout_offset
        )
        site = web.build_site(
            self.store,
            self.registry,
            self.is_ready,
            self.reload,
            probe,
            lambda: self.config,
            lambda: self.config.limits if self.config is not None else Limits(),
        )
        if self.web_config_file is not None:
            self.guard = Guard(site.resource, self.reactor, self.web_config)
            site.resource = self.guard
        return site

    def reload_web_config(self) -> None:
        """Re-read --web.config.file (on SIGHUP); a bad one is logged and the old one kept.

        It succeeds or fails on its own, whatever the main config's reload does: any error
        (an invalid file, a certificate or key OpenSSL cannot use) is logged and sets
        ``netprobe_web_config_last_reload_successful`` to 0; nothing is swapped before the
        new TLS context is built.
        """
        if self.web_config_file is None or self.guard is None:
            return
        path = self.web_config_file
        try:
            new = load_web_config(path)
            if (new.tls is None) != (self.web_config.tls is None):
                raise ConfigError(
                    [f"{path}: TLS cannot be switched on or off by a reload; restart"]
                )
            tls = None
            if new.tls is not None and self.tls_context is not None:
                tls = ServerContext(new.tls).context
        except ConfigError as exc:
            errors = exc.errors
        except Exception as exc:  # OpenSSL's errors for an unusable certificate, key or CA file
            errors = [f"{path}: tls_server_config: {describe(exc)}"]
        else:
            if tls is not None and self.tls_context is not None:
                self.tls_context.context = tls
            self.web_config = self.guard.config = new
            self.store.stats.web_reload_successful = 1.0
            self.store.stats.web_reload_success_ts = self.wall()
            log.info("web config loaded", file=path)
            return
        self.store.stats.web_reload_successful = 0.0
        for line in errors:
            log.error("web config rejected, previous one kept", error=line)

    def _listener(self) -> Callable[..., Any]:
        """listenTCP, or listenSSL with the web config's TLS settings."""
        tls = self.web_config.tls
        if tls is None:
            return lambda port, factory, interface="": self.reactor.listenTCP(
                port, factory, backlog=LISTEN_BACKLOG, interface=interface
            )
        if self.tls_context is None:
            self.tls_context = ServerContext(tls)
        ctx = self.tls_context
        return lambda port, factory, interface="": self.reactor.listenSSL(
            port, factory, ctx, backlog=LISTEN_BACKLOG, interface=interface
        )

    def listen(self, addresses: Sequence[str]) -> None:
        """Bind every listen address; raise CannotListenError (or ValueError) on failure."""
        site = self.site()
        for address in addresses:
            host, port = split_listen_address(address)
            listen = self._listener()
            if host == "":
                try:
                    p = listen(port, site, interface="::")
                except Exception:  # no IPv6 here: IPv4 wildcard only
                    p = listen(port, site, interface="")
            else:
                p = listen(port, site, interface=host)
            self.ports.append(p)
            bound = p.getHost()
            if self.self_probe is None:
                self.self_probe = self_probe_address(host, bound.port)
            log.info("listening", address=f"{address}", port=bound.port)

    def stop(self) -> Deferred[None]:
        """Cancel probes in flight, stop timers and close listeners."""
        if self._file_watch is not None and self._file_watch.running:
            self._file_watch.stop()
        self.scheduler.stop()
        ds = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        return defer.gatherResults(ds).addCallback(lambda _: None)
