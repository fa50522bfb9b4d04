"""Continuous probing in worker processes: the main process keeps the config and the store.

``WorkerPool`` stands in for ``ProbingService`` when ``--probe.workers`` is above 0. Worker i
of N probes the continuous targets whose stable hash, shifted past the bits ``--shard`` uses,
is i modulo N, so a target keeps its worker across reloads and restarts. A worker is
``python -m netprobe_exporter.worker``, spawned with ``reactor.spawnProcess`` (pipes; the
running reactor is never forked). The pool sends it the config's bytes and its target list
(``workerproto``); a reload or a target files change sends new ones to the running workers,
which re-plan their schedule as one process does (kept targets keep their cadence).

Results come back in batches and are replayed into the store's series here, so the series
outlive any worker: one that exits (SIGKILL included) is started again within a second, sent
the config and its targets, and its targets resume with their counters where they were. One
that sends nothing for ``hang_timeout`` (it heartbeats every half second; a new one has
``START_TIMEOUT`` for its first frame) is killed and replaced; one that sends a frame that
does not decode is too. Each restart counts in ``netprobe_worker_restarts_total``. Worker log
events and stderr lines come out of the main process's log with ``worker=``.

Why processes spawned, not forked: forking a running reactor copies its epoll set, timers and
threads; a fresh interpreter costs a second of imports once, then only its own memory.

``/probe``: requests are handed to workers (rather than workers sharing the listening
socket), so the main process keeps HTTP, TLS, basic auth, the parameter checks and
probe_policy's limits in one place; the worker with the fewest requests running probes and
renders the answer (metrics or debug page), the main process writes it. With no worker up,
or one that exits or lacks the module (a reload it has not parsed yet), the main process
probes itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error, protocol, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from netprobe_exporter.config import Config, Target
from netprobe_exporter.configmanager import ConfigChange, describe
from netprobe_exporter.frames import WORKER_FRAME_LIMIT, FrameDecoder, FrameError, encode
from netprobe_exporter.metrics import MetricsStore, SeriesPlan, TargetSeries, series_key
from netprobe_exporter.model import stable_hash
from netprobe_exporter.probe_endpoint import (
    DEBUG,
    METRICS,
    REFUSED,
    Outcome,
    ProbeRequest,
    WorkerUnavailable,
)
from netprobe_exporter.workerproto import (
    FAILED,
    LEVELS,
    UNAVAILABLE,
    decode_outcome,
    decode_result,
)
from netprobe_exporter.workerproto import count as frame_count

log = Logger()

TargetKey = tuple[str, str]
#: a worker silent this long (no heartbeat, no results) is hung: killed and replaced
HANG_TIMEOUT = 5.0
#: a worker's first frame may take this long (imports take seconds on a busy machine)
START_TIMEOUT = 30.0
#: after SIGTERM, a worker still running this long later is killed
STOP_GRACE = 0.8
#: a worker that lived at least this long before it died is restarted at once
STABLE_AFTER = 10.0
#: restart delays after quick deaths in a row: 0.05 s doubling, at most this
MAX_BACKOFF = 1.0
#: characters of a worker's stderr line logged; the rest is cut
MAX_LINE = 4096

Spawn = Callable[["WorkerLink"], IProcessTransport]
_ANSWERS = frozenset((METRICS, DEBUG, REFUSED, UNAVAILABLE, FAILED))


def worker_of(target: Target, count: int) -> int:
    """The worker that probes ``target``: bits of its hash that ``--shard`` (the low ones,
    modulo the shard count) does not decide alone."""
    return (stable_hash(target) >> 32) % count


def spawn_process(reactor: Any, level: str) -> Spawn:
    """Start ``python -m netprobe_exporter.worker`` with pipes on fds 0 (in), 1 and 2 (out)."""

    def spawn(link: WorkerLink) -> IProcessTransport:
        exe = sys.executable
        args = [exe, "-m", "netprobe_exporter.worker", "--index", str(link.index)]
        args += ["--log.level", level]
        transport: IProcessTransport = reactor.spawnProcess(
            link, exe, args, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"}
        )
        return transport

    return spawn


class WorkerLink(protocol.ProcessProtocol):
    """One worker process as the pool sees it: its pipes, pid, liveness and probes in flight."""

    def __init__(self, pool: WorkerPool, index: int, now: float) -> None:
        self.pool = pool
        self.index = index
        self.started = now
        self.last_seen = now
        #: set by its first frame: until then START_TIMEOUT applies, not the hang timeout
        self.answered = False
        self.inflight = 0
        self.pid: int | None = None
        self.process: IProcessTransport | None = None
        self.ended = False
        #: set once a bad frame came: nothing more is read from it until it has exited
        self.dropped = False
        self.decoder = FrameDecoder(WORKER_FRAME_LIMIT)
        self._stderr = b""
        #: /probe requests handed to it and not answered yet
        self.requests: dict[int, Deferred[Outcome]] = {}

    def send(self, frame: bytes) -> None:
        if self.process is not None and not self.ended:
            self.process.write(frame)

    def signal(self, name: str) -> None:
        if self.process is not None and not self.ended:
            with contextlib.suppress(error.ProcessExitedAlready, OSError):
                self.process.signalProcess(name)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if self.ended or self.dropped:
            return
        if childFD == 2:
            self._lines(data)
            return
        try:
            for message in self.decoder.feed(data):
                self.pool.handle(self, message)
        except Exception as exc:  # whatever a frame holds, it must not break the main process
            self.pool.malformed(self, exc)

    def _lines(self, data: bytes) -> None:
        *lines, rest = (self._stderr + data).split(b"\n")
        self._stderr = rest[-MAX_LINE:]
        for line in lines:
            text = line[:MAX_LINE].decode("utf-8", "replace").rstrip()
            if text:
                log.warn("worker output", worker=self.index, line=text)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        requests, self.requests = self.requests, {}
        for d in requests.values():  # probed again in the main process
            d.errback(Failure(WorkerUnavailable(f"probe worker {self.index} exited")))
        self.pool.ended(self, reason)


@dataclasses.dataclass(frozen=True, slots=True)
class PoolChange:
    """A change's series, target ids and worker frames, built; ``commit`` swaps them in."""

    pool: WorkerPool
    change: ConfigChange
    series: SeriesPlan
    ids: dict[TargetKey, int]
    table: dict[int, tuple[Target, TargetSeries]]
    config_frame: bytes | None
    target_frames: list[bytes]

    def commit(self) -> None:
        self.pool.commit(self)


def config_frame(config: Config, workers: int) -> bytes:
    """The config as a worker rebuilds its modules from it: the text the main process parsed,
    less its targets (``Config.worker_text``)."""
    limits = config.limits
    text = config.worker_text
    inflight = max(1, -(-limits.max_concurrent_probes // workers))
    return encode(["config", config.source, text, inflight, limits.max_body_bytes])


class WorkerPool(Service):
    """Runs ``count`` probe workers over the running config's continuous targets."""

    name = "probing"

    def __init__(
        self,
        clock: IReactorTime,
        spawn: Spawn,
        store: MetricsStore,
        wall: Callable[[], float],
        count: int,
        hang_timeout: float = HANG_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._spawn = spawn
        self.store = store
        self._wall = wall
        self.count = count
        self.hang_timeout = hang_timeout
        self.config: Config | None = None
        self.links: list[WorkerLink | None] = [None] * count
        self._quick_deaths = [0] * count
        self._answered = [False] * count
        self._respawns: list[IDelayedCall | None] = [None] * count
        self._config_frame: bytes | None = None
        self._target_frames: list[bytes] = [encode(["targets", []])] * count
        self._ids: dict[TargetKey, int] = {}
        self._next_id = 0
        self._table: dict[int, tuple[Target, TargetSeries]] = {}
        self._watch: task.LoopingCall | None = None
        self._stopping: list[Deferred[None]] = []
        self._request_id = 0
        store.stats.inflight_source = self.inflight

    @property
    def probing(self) -> bool:
        """A config is committed, every worker has answered once since the start (probing is
        under way: imports take a second or more) and the pool has not been stopped. A worker
        restarting later leaves it true: its series stay and it is back within seconds."""
        return bool(self.running) and self.config is not None and all(self._answered)

    def inflight(self) -> int:
        return sum(link.inflight for link in self.links if link is not None)

    def pids(self) -> list[int | None]:
        return [None if link is None else link.pid for link in self.links]

    # service
    def startService(self) -> None:
        super().startService()
        for i in range(self.count):
            self._start(i)
        self._watch = task.LoopingCall(self._check_hung)
        self._watch.clock = self._clock
        self._watch.start(min(1.0, self.hang_timeout / 4), now=False)

    def stopService(self) -> Deferred[None]:
        """Close each worker's stdin and SIGTERM it; SIGKILL what is left ``STOP_GRACE`` on."""
        super().stopService()
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        for i, call in enumerate(self._respawns):
            if call is not None and call.active():
                call.cancel()
            self._respawns[i] = None
        live = [link for link in self.links if link is not None and not link.ended]
        if not live:
            return defer.succeed(None)
        for link in live:
            if link.process is not None:
                with contextlib.suppress(Exception):
                    link.process.closeStdin()
            link.signal("TERM")
        done: Deferred[None] = Deferred()
        self._stopping.append(done)
        kill = self._clock.callLater(STOP_GRACE, self._kill_all)
        done.addBoth(lambda r: kill.cancel() if kill.active() else None)
        return done

    def _kill_all(self) -> None:
        for link in self.links:
            if link is not None:
                link.signal("KILL")

    # workers
    def _start(self, index: int) -> None:
        self._respawns[index] = None
        if not self.running:
            return
        link = WorkerLink(self, index, self._clock.seconds())
        try:
            link.process = self._spawn(link)
        except Exception as exc:
            log.error("worker could not be started", worker=index, error=describe(exc))
            self._schedule_restart(index)
            return
        link.pid = link.process.pid
        self.links[index] = link
        if self._config_frame is not None:  # None before the first config is committed
            link.send(self._config_frame)
            link.send(self._target_frames[index])
        log.info("worker started", worker=index, pid=link.pid)

    def _schedule_restart(self, index: int) -> None:
        deaths = self._quick_deaths[index]
        delay = min(0.05 * 2**deaths, MAX_BACKOFF)
        self._quick_deaths[index] = deaths + 1
        self._respawns[index] = self._clock.callLater(delay, self._start, index)

    def ended(self, link: WorkerLink, reason: Failure) -> None:
        """A worker exited: restart it (unless stopping); its series stay in the store."""
        index = link.index
        if self.links[index] is link:
            self.links[index] = None
        if not self.running:
            if all(x is None for x in self.links):
                waiting, self._stopping = self._stopping, []
                for d in waiting:
                    d.callback(None)
            return
        if self._respawns[index] is not None:
            return
        self.store.stats.worker_restarts += 1
        value = reason.value
        status = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        log.warn("worker exited, restarting it", worker=index, pid=link.pid, exit_code=status,
                 signal=sig)  # fmt: skip
        if self._clock.seconds() - link.started >= STABLE_AFTER:
            self._quick_deaths[index] = 0
        self._schedule_restart(index)

    def replace(self, link: WorkerLink, why: str) -> None:
        """Kill a worker that cannot go on; ``ended`` restarts it."""
        log.error("worker replaced", worker=link.index, pid=link.pid, reason=why)
        link.signal("KILL")

    def malformed(self, link: WorkerLink, exc: Exception) -> None:
        if not link.ended and not link.dropped:
            link.dropped = True
            self.replace(link, f"bad frame: {describe(exc)}")

    def _check_hung(self) -> None:
        now = self._clock.seconds()
        for link in self.links:
            if link is None or link.ended:
                continue
            limit = self.hang_timeout if link.answered else START_TIMEOUT
            if now - link.last_seen > limit:
                self.replace(link, f"no heartbeat for {limit:g}s")
                link.last_seen = now  # one kill per timeout, should SIGKILL be slow to act

    # frames from workers
    def handle(self, link: WorkerLink, message: list[Any]) -> None:
        link.last_seen = self._clock.seconds()
        link.answered = True
        self._answered[link.index] = True
        kind = message[0]
        if kind == "b":
            self._batch(link, message)
        elif kind == "h":
            link.inflight = frame_count(message[1])
            if len(message) > 2:  # the DNS cache's counts since the worker's last heartbeat
                counts, stats = message[2], self.store.stats
                if not isinstance(counts, list) or len(counts) != 3:
                    raise FrameError("a heartbeat's DNS counts are not 3 counts")
                for i, n in enumerate(counts):
                    stats.dns_counts[i] += frame_count(n)
        elif kind == "l":
            self._log(link, message)
        elif kind == "p":
            self._answer(link, message)
        else:
            raise FrameError("unknown frame kind")

    def _batch(self, link: WorkerLink, message: list[Any]) -> None:
        _, results, lags, skipped, inflight = message
        if not isinstance(results, list) or not isinstance(lags, list):
            raise FrameError("a batch's results and lags must be lists")
        now = self._wall()
        table = self._table
        for row in results:
            target_id, result = decode_result(row)
            found = table.get(target_id)
            if found is None:
                continue  # the target left the config while its probe ran
            target, series = found
            before = series.up
            series.observe(result, now)
            if before is not None and before != series.up:
                # state changes only: one line per transition, not one per probe
                log.info("target up" if result.success else "target down",
                         target=target.display_address, module=target.module,
                         result=result.result, detail=result.detail)  # fmt: skip
            elif not result.success:
                log.debug("probe failed", target=target.display_address, module=target.module,
                          result=result.result, detail=result.detail)  # fmt: skip
        stats = self.store.stats
        for lag in lags:
            if type(lag) is not float and type(lag) is not int:
                raise FrameError("a lag is not a number")
            stats.lag.observe(max(0.0, float(lag)))
        stats.skipped += frame_count(skipped)
        link.inflight = frame_count(inflight)

    def _answer(self, link: WorkerLink, message: list[Any]) -> None:
        request_id, found = decode_outcome(message)
        if found.kind not in _ANSWERS:
            raise FrameError("a /probe answer needs a known kind")
        d = link.requests.pop(request_id, None)
        if d is None:
            return  # cancelled meanwhile
        if found.kind == UNAVAILABLE:
            why = found.body or "the worker has not the module yet"
            d.errback(Failure(WorkerUnavailable(why)))
        elif found.kind == FAILED:
            d.errback(Failure(RuntimeError(f"the probe failed in worker {link.index}")))
        else:
            d.callback(found)

    # /probe
    def probe(self, request: ProbeRequest) -> Deferred[Outcome] | None:
        """Hand a checked /probe request to the worker with the fewest running; None if no
        worker is up (the caller then probes in this process)."""
        live = [x for x in self.links if x is not None and not x.ended and not x.dropped]
        if not live or self._config_frame is None:
            return None
        link = min(live, key=lambda x: len(x.requests))
        self._request_id += 1
        request_id = self._request_id

        def cancel(_: Deferred[Outcome]) -> None:
            if link.requests.pop(request_id, None) is not None:
                link.send(encode(["cancel", request_id]))

        d: Deferred[Outcome] = Deferred(cancel)
        link.requests[request_id] = d
        link.send(encode(["probe", request_id, request.module, request.target, request.hostname,
                          request.timeout, request.debug, request.started,
                          request.keep_log]))  # fmt: skip
        return d

    def _log(self, link: WorkerLink, message: list[Any]) -> None:
        _, level, text, fields = message
        if level not in LEVELS or type(text) is not str or not isinstance(fields, dict):
            raise FrameError("a log event needs a level, a message and fields")
        kept = {
            k: v
            for k, v in fields.items()
            if k.isidentifier() and not k.startswith("log_") and k not in ("worker", "format")
        }
        log.emit(LogLevel.levelWithName(level), text, worker=link.index, **kept)

    # config changes
    def prepare(self, change: ConfigChange) -> PoolChange:
        targets = change.targets
        plan = self.store.plan(targets)
        old = self._ids
        ids: dict[TargetKey, int] = {}
        table: dict[int, tuple[Target, TargetSeries]] = {}
        rows: list[list[list[Any]]] = [[] for _ in range(self.count)]
        for t in targets:
            key = t.key
            target_id = old.get(key)
            if target_id is None:
                target_id = self._next_id
                self._next_id += 1
            ids[key] = target_id
            table[target_id] = (t, plan.series[series_key(t)])
            rows[worker_of(t, self.count)].append([target_id, t.address, t.module, t.interval])
        frames = [encode(["targets", r]) for r in rows]
        config = config_frame(change.config, self.count) if change.config_changed else None
        return PoolChange(self, change, plan, ids, table, config, frames)

    def commit(self, prepared: PoolChange) -> None:
        """Swap a prepared change in and tell the running workers (assignments and writes)."""
        self.config = prepared.change.config
        self.store.commit(prepared.series)
        self._ids = prepared.ids
        self._table = prepared.table
        if prepared.config_frame is not None:
            self._config_frame = prepared.config_frame
            for link in self.links:
                if link is not None:
                    link.send(prepared.config_frame)
        old, self._target_frames = self._target_frames, prepared.target_frames
        for i, link in enumerate(self.links):
            if link is not None and old[i] != self._target_frames[i]:
                link.send(self._target_frames[i])
