"""The config manager: loads the config, reloads it all or nothing, watches the target files.

It owns the running config and the target files' scans, and tells its subscribers (the probing
and web services) what changed in two steps. ``prepare`` builds whatever a subscriber needs for
the change, off the reactor thread, and may fail; ``commit`` swaps it in, on the reactor, and
may not. Every subscriber prepares before any commits, so a failure in any one of them leaves
all of them (and the manager) exactly as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from netprobe_exporter.config import (
    Config,
    ConfigError,
    Target,
    load_config,
    over_limits,
    with_extra_targets,
)
from netprobe_exporter.metrics import ExporterStats
from netprobe_exporter.sources import ShardedSource, TargetSource, static_source
from netprobe_exporter.targetfiles import Scan, file_targets, scan

log = Logger()
#: reload and target file errors kept for the status page (all are logged)
MAX_SHOWN_ERRORS = 20

T = TypeVar("T")


class Offload(Protocol):
    """Runs a blocking function away from the reactor thread (a thread pool in production)."""

    def __call__(self, f: Callable[..., T], /, *args: Any) -> Deferred[T]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigChange:
    """What a subscriber is told: the config to run and this replica's continuous targets."""

    config: Config
    targets: Sequence[Target]
    #: False when only the target files changed (the config object is the running one)
    config_changed: bool = True


class Prepared(Protocol):
    """A subscriber's part of a change, built and ready: ``commit`` only assigns."""

    def commit(self) -> None: ...


class Subscriber(Protocol):
    def prepare(self, change: ConfigChange) -> Prepared:
        """Build what ``change`` needs without changing anything running; may raise.

        Called off the reactor thread on a reload or a target files change: it may read the
        running state (which nothing changes meanwhile) but must not modify it.
        """
        ...


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """Build a config's state (nodes, targets, series) without full garbage collections.

    Each full collection walks every tracked object and holds the GIL meanwhile; the hundreds
    of thousands of objects a 50,000-target reload builds trigger several, of 0.1-0.4 s each,
    whichever thread allocates. Young collections go on as usual; only the oldest one waits.
    A big build that succeeds then calls ``gc.freeze()`` (``freeze_if_big``), so that the new
    state it leaves alive is not walked by later full collections either (freed state still
    goes by reference count).
    """
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(t0, t1, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)


#: a build of at least this many targets is frozen out of later full collections; smaller ones
#: are not worth it, and each freeze also keeps, for good, whatever reference cycles are alive
#: at that moment (probes in flight), so it is done only where it pays
FREEZE_TARGETS = 10_000


def freeze_if_big(targets: int) -> None:
    """``gc.freeze()`` after a build of ``targets`` targets, when that many are worth it."""
    if targets >= FREEZE_TARGETS:
        gc.freeze()


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
    prepared: tuple[Prepared, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _FilesPlan:
    """A changed target files' set: the scan, why it is refused (or None), or its commits."""

    files: Scan
    problem: str | None = None
    targets: int = 0
    prepared: tuple[Prepared, ...] | None = None


def _digest_of(path: str) -> bytes | None:
    """The file's content digest, or None if it cannot be read now (blocks: not on the
    reactor)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError:
        return None


class ConfigManager(Service):
    """Owns the running config; loads, reloads and watches target files for its subscribers."""

    name = "config"

    def __init__(
        self,
        clock: IReactorTime,
        offload: Offload,
        stats: ExporterStats,
        wall: Callable[[], float],
        config_file: str | None = None,
        extra_targets: Sequence[str] = (),
        shard: tuple[int, int] = (0, 1),
        self_probe: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._clock = clock
        self._offload = offload
        self._stats = stats
        self._wall = wall
        self.config_file = config_file
        self.extra_targets = list(extra_targets)
        self.shard = shard
        self._self_probe = self_probe
        self._subscribers: list[Subscriber] = []
        self.config: Config | None = None
        #: read before start (so that a bad config fails before anything listens)
        self.initial: Config | None = None
        #: the target files' scan in use, and the latest one (the same unless it was refused)
        self.files = self._seen = Scan({})
        self._file_watch: task.LoopingCall | None = None
        self._lock = defer.DeferredLock()
        self._stopped = False
        #: ``--config.enable-auto-reload``: seconds between looks at the config file (0: off)
        self.auto_reload_interval = 0.0
        self._auto_watch: task.LoopingCall | None = None
        #: a digest of the config file as last read for a reload (or at start)
        self._digest: bytes | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        """Tell ``subscriber`` of every change from now on, after those subscribed before."""
        self._subscribers.append(subscriber)

    # service
    def startService(self) -> None:
        """Run the config read before start, or read it now (the embedded default needs the
        self-probe address, known only once the web service listens)."""
        super().startService()
        self._stopped = False
        config, self.initial = self.initial, None
        self.apply(config if config is not None else self.read_config())
        if self.auto_reload_interval > 0 and self.config_file is not None:
            self._auto_watch = task.LoopingCall(self._look_at_config)
            self._auto_watch.clock = self._clock
            self._auto_watch.start(self.auto_reload_interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        for watch in (self._file_watch, self._auto_watch):
            if watch is not None and watch.running:
                watch.stop()

    def _look_at_config(self) -> Deferred[None]:
        """``--config.enable-auto-reload``: reload when the file's content changed (as
        blackbox 0.28, which reloads only on a change of content, whatever asked for it).
        The first look only notes the content the start read (or nearly: a change between the
        two is seen by the first reload the operator asks for)."""
        assert self.config_file is not None
        d = self._offload(_digest_of, self.config_file)

        def seen(digest: bytes | None) -> Deferred[None] | None:
            if digest is None or digest == self._digest:
                return None  # unreadable (the reload would say so) or unchanged
            first, self._digest = self._digest is None, digest
            if first:
                return None
            log.info("config file changed, reloading", file=self.config_file)
            return self.reload().addErrback(lambda _: None)  # logged and counted there

        done: Deferred[None] = d.addCallback(seen)
        return done.addErrback(lambda f: log.failure("config auto-reload look failed", f))

    # reading
    def read_config(self) -> Config:
        """Load the config file (or the embedded default) plus ``--target``s; may block."""
        if self.config_file is not None:
            config = load_config(self.config_file)
        else:
            config = Config()
            default = self._self_probe()
            if not self.extra_targets and default is not None:
                config = with_extra_targets(config, [default])
        return with_extra_targets(config, self.extra_targets)

    def source(self, config: Config, files: Scan | None = None) -> TargetSource:
        source = static_source(config, file_targets(files) if files is not None else ())
        index, count = self.shard
        return source if count == 1 else ShardedSource(source, index, count)

    def _too_many(self, config: Config, files: Scan) -> str | None:
        return over_limits(config, static_source(config, file_targets(files)).targets())

    def _prepare_all(self, change: ConfigChange) -> tuple[Prepared, ...]:
        return tuple(s.prepare(change) for s in self._subscribers)

    # applying
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
            prepared=self._prepare_all(ConfigChange(config, targets)),
        )

    def _commit(self, plan: _Plan) -> None:
        """Swap ``plan`` in: assignments only (nothing here can fail), then report it."""
        config = plan.config
        self._seen = plan.seen
        self.files = plan.files
        self.config = config
        for prepared in plan.prepared:
            prepared.commit()
        stats = self._stats
        stats.reload_successful = 1.0
        stats.reload_success_ts = self._wall()
        stats.reload_errors = []
        self._report_files(plan.seen)
        if plan.files_problem is not None:
            log.error("target files ignored", error=plan.files_problem)
            stats.target_files_ok = 0.0
            stats.target_file_problems.append(plan.files_problem)
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
        stats = self._stats
        stats.target_file_errors += len(files.errors)
        stats.target_files_ok = 1.0 if files.healthy else 0.0
        stats.target_file_problems = list(files.errors[:MAX_SHOWN_ERRORS])

    def _watch_files(self, config: Config) -> None:
        if self._file_watch is not None and self._file_watch.running:
            self._file_watch.stop()
        self._file_watch = None
        if config.target_files and not self._stopped:
            every = min(spec.refresh_interval for spec in config.target_files)
            self._file_watch = task.LoopingCall(self.refresh_files)
            self._file_watch.clock = self._clock
            self._file_watch.start(every, now=False).addErrback(
                lambda f: log.failure("target file watch stopped", f)
            )

    def refresh_files(self) -> Deferred[None] | None:
        """Look at the target files (off the reactor) and take up what changed."""
        if self._lock.locked or self.config is None:
            return None  # a reload is re-reading them anyway
        return self._lock.run(self._refresh_files)

    def _refresh_files(self) -> Deferred[None]:
        config, previous = self.config, self._seen
        assert config is not None
        d = self._offload(self._prepare_files, config, previous)

        def adopt(plan: _FilesPlan) -> None:
            if self.config is not config or self._stopped:
                return  # a reload came first, or the exporter is stopping
            files = plan.files
            # Unchanged files are not read again next time, even when this change is refused
            # below: the refusal stands (and is not logged again) until a file changes.
            self._seen = files
            if not files.changed:
                return
            self._report_files(files)
            if plan.problem is not None:
                log.error("target files change ignored, previous targets kept", error=plan.problem)
                self._stats.target_files_ok = 0.0
                self._stats.target_file_problems.append(plan.problem)
                return
            assert plan.prepared is not None
            self.files = files
            for prepared in plan.prepared:
                prepared.commit()
            log.info("target files changed", targets=plan.targets, files=len(files.files))

        def failed(reason: Failure) -> None:
            log.failure("reading target files failed", reason)

        return d.addCallbacks(adopt, failed)

    def _prepare_files(self, config: Config, previous: Scan) -> _FilesPlan:
        """Off the reactor: scan the files and, when they changed, prepare the new target set."""
        with no_full_collections():
            plan = self._scan_and_prepare(config, previous)
            if plan.prepared is not None:  # new state was built (most looks find no change)
                freeze_if_big(plan.targets)
            return plan

    def _scan_and_prepare(self, config: Config, previous: Scan) -> _FilesPlan:
        files = scan(config, previous.files)
        if not files.changed:
            return _FilesPlan(files)
        problem = self._too_many(config, files)
        if problem is not None:
            return _FilesPlan(files, problem)
        targets = self.source(config, files).targets()
        prepared = self._prepare_all(ConfigChange(config, targets, config_changed=False))
        return _FilesPlan(files, targets=len(targets), prepared=prepared)

    # reloading
    def reload(self) -> Deferred[None]:
        """Re-read the config off the reactor thread; one that fails changes nothing.

        Reading, validating and building the new state (every subscriber's) all happen in a
        thread; the reactor only swaps the result in. Any failure before the swap, whatever
        its kind, leaves the running config whole, is logged and counts as a failed reload.
        """
        return self._lock.run(self._reload)

    def _load(self) -> _Plan:
        with no_full_collections():
            config = self.read_config()
            # every file is read again; one that fails now keeps its last good targets
            plan = self._prepare(config, scan(config, self._seen.files, force=True))
            freeze_if_big(plan.targets)
            return plan

    def _reload(self) -> Deferred[None]:
        d = self._offload(self._load)

        def swap(plan: _Plan) -> None:
            if self._stopped:
                raise ReloadFailed("the exporter is stopping")
            self._commit(plan)

        def rejected(reason: Failure) -> Failure:
            self._stats.reload_successful = 0.0
            exc = reason.value
            errors = exc.errors if isinstance(exc, ConfigError) else [describe(exc)]
            self._stats.reload_errors = list(errors[:MAX_SHOWN_ERRORS])
            if isinstance(exc, ConfigError):
                for line in exc.errors:
                    log.error("config reload rejected, previous config kept", error=line)
                return reason
            log.error("config reload failed, previous config kept", error=describe(exc))
            if isinstance(exc, ReloadFailed):
                return reason
            return Failure(ReloadFailed(describe(exc)))

        swapped: Deferred[None] = d.addCallback(swap)
        return swapped.addErrback(rejected)
