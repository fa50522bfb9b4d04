"""A probe worker: ``python -m netprobe_exporter.worker``, started by the main process.

It runs its own reactor and scheduler over the targets the main process sends it on stdin
(``workerproto``), and writes their results, batched every few milliseconds, to stdout. It keeps
no series: the main process's store does, so a worker that dies loses nothing but the probes
in flight. A new target list is planned and committed by the same scheduler as in one process,
so a reload keeps the cadence of kept targets. Its log events go to the main process as frames
(one per event); stderr is read by the main process too. It exits when stdin ends (the main
process is gone) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import signal
import sys
from collections.abc import Sequence
from typing import Any, cast

from twisted.internet import defer, protocol, stdio, task, threads
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTime, ITransport
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import provider

from netprobe_exporter import logs
from netprobe_exporter.addresses import redact_url
from netprobe_exporter.config import Config, ConfigError, parse_modules
from netprobe_exporter.configmanager import describe, freeze_if_big, no_full_collections
from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.frames import (
    MAIN_FRAME_LIMIT,
    FrameDecoder,
    FrameError,
    decode_body,
    encode,
)
from netprobe_exporter.model import Module, Target
from netprobe_exporter.probe_endpoint import (
    Outcome,
    ProbeRequest,
    ProbeRequestError,
    outcome,
    with_host,
)
from netprobe_exporter.probes import ProbeContext, Prober, ProbeReactor, ProbeResult, registry
from netprobe_exporter.probes.everyaddress import run_module
from netprobe_exporter.resolver import Resolver
from netprobe_exporter.scheduler import SchedulePlan, Scheduler, TargetKey
from netprobe_exporter.workerproto import FAILED, UNAVAILABLE, encode_outcome, encode_result

log = Logger(namespace="netprobe_exporter.worker")  # also when run as __main__

#: results wait at most this long before they are sent, or until there are this many
FLUSH_DELAY = 0.02
FLUSH_COUNT = 1000
HEARTBEAT = 0.5
#: frames larger than this (big target lists) are decoded off the reactor
RAW_ABOVE = 64 * 1024


class WorkerProbing:
    """The worker's scheduler and the batch of results it has not sent yet."""

    def __init__(
        self,
        clock: IReactorTime,
        ctx: ProbeContext,
        probers: dict[str, Prober],
        send: Any,
        cache: CachingResolver | None = None,
    ) -> None:
        self._clock = clock
        #: /probe resolves afresh with ``ctx``'s resolver; continuous probing through ``cache``
        self._probe_ctx = ctx
        self.cache = cache
        #: the cache's hits, misses and queries as last sent
        self._dns_sent = [0, 0, 0]
        self.ctx = ctx if cache is None else dataclasses.replace(ctx, resolver=cache)
        self.probers = probers
        self._send = send
        self.modules: dict[str, Module] = Config().modules
        self.contexts = {debug: dataclasses.replace(ctx, debug=debug) for debug in (False, True)}
        #: /probe requests running, by the main process's request id
        self.requests: dict[int, Deferred[Outcome]] = {}
        self.ids: dict[tuple[str, str], int] = {}
        #: each target's info values as last sent (see workerproto.RecordingSink), by id
        self.infos: dict[int, dict[str, str]] = {}
        #: with every_address: each address's info values, by target id and address
        self.address_infos: dict[int, dict[str, dict[str, str]]] = {}
        self.results: list[list[Any]] = []
        #: results waiting, each address of an every_address result counted as one more, so
        #: that a batch stays far below the frame limit whatever the modules
        self.weight = 0
        self.lags: list[float] = []
        self.skipped = 0
        self._flush: Any = None
        self.scheduler = Scheduler(
            clock, self._run, self._on_result, on_lag=self._on_lag, on_skip=self._on_skip
        )

    def set_config(self, config: Config, inflight: int, body: int) -> None:
        self.modules = config.modules
        self.ctx.max_body_bytes = body
        self._probe_ctx.max_body_bytes = body
        if self.cache is not None:
            self.cache.configure(config.dns_cache)
        # /probe's contexts: the config's probe_policy checks every address they resolve
        base = dataclasses.replace(self._probe_ctx, policy=config.probe_policy.check)
        self.contexts = {debug: dataclasses.replace(base, debug=debug) for debug in (False, True)}
        self.scheduler.max_inflight = inflight
        self.scheduler.drain()

    def plan_targets(self, rows: list[list[Any]]) -> tuple[dict[TargetKey, int], SchedulePlan]:
        """The ids and schedule of a target list; only reads the running schedule, so a big
        list is planned off the reactor (as the main process plans a reload)."""
        ids: dict[TargetKey, int] = {}
        targets: list[Target] = []
        # as the main process builds a reload: no full collection (each holds the GIL, the
        # reactor's too, for as long as it walks everything), then frozen out of later ones
        with no_full_collections():
            for target_id, address, module, interval in rows:
                t = Target(str(address), str(module), float(interval))
                ids[t.key] = int(target_id)
                targets.append(t)
            plan = self.scheduler.plan(targets)
            freeze_if_big(len(targets))
        return ids, plan

    def commit_targets(self, planned: tuple[dict[TargetKey, int], SchedulePlan]) -> None:
        ids, plan = planned
        self.ids = ids
        kept = set(ids.values())
        self.infos = {i: v for i, v in self.infos.items() if i in kept}
        self.address_infos = {i: v for i, v in self.address_infos.items() if i in kept}
        self.scheduler.commit(plan)
        log.info("targets assigned", targets=len(plan.entries))

    def _run(self, target: Target, budget: float) -> Deferred[ProbeResult]:
        module = self.modules[target.module]
        timeout = min(module.continuous_timeout, budget)
        return run_module(self.probers, self.ctx, target.address, module, timeout)

    def _on_result(self, target: Target, result: ProbeResult) -> None:
        target_id = self.ids.get(target.key)
        if target_id is None:
            return
        infos = self.infos.get(target_id)
        if infos is None:
            infos = self.infos[target_id] = {}
        addresses = None
        if result.addresses is not None:
            addresses = self.address_infos.setdefault(target_id, {})
        self.results.append(encode_result(target_id, result, infos, addresses))
        self.weight += 1 + (0 if result.addresses is None else len(result.addresses))
        if self.weight >= FLUSH_COUNT:
            self.flush()
        elif self._flush is None:
            self._flush = self._clock.callLater(FLUSH_DELAY, self.flush)

    def _on_lag(self, lag: float) -> None:
        self.lags.append(lag)

    def _on_skip(self, target: Target, n: int) -> None:
        self.skipped += n

    def flush(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        if self.results or self.lags or self.skipped:
            batch = ["b", self.results, self.lags, self.skipped, self.scheduler.inflight]
            self.results, self.lags, self.skipped, self.weight = [], [], 0, 0
            self._send(batch)

    def probe(self, request_id: int, request: ProbeRequest) -> None:
        """Run one /probe request and send its rendered answer back."""
        module = self.modules.get(request.module)
        if module is None:
            self._send(["p", request_id, UNAVAILABLE, ""])
            return
        try:
            module = with_host(module, request.hostname)
        except ProbeRequestError as exc:
            self._send(["p", request_id, UNAVAILABLE, str(exc)])
            return
        target, timeout, debug = request.target, request.timeout, request.debug
        context = self.contexts[debug or request.keep_log]
        probed = run_module(self.probers, context, target, module, timeout)
        d = probed.addCallback(outcome, module, target, timeout, debug, request.started)
        self.requests[request_id] = d

        def answer(found: Outcome) -> None:
            self.requests.pop(request_id, None)
            self._send(encode_outcome(request_id, found))

        def failed(reason: Failure) -> None:
            self.requests.pop(request_id, None)
            if reason.check(CancelledError):
                return  # the client went away: the main process expects nothing
            log.failure("probe failed unexpectedly", reason, target=redact_url(target),
                        module=request.module)  # fmt: skip
            self._send(["p", request_id, FAILED, ""])

        d.addCallbacks(answer, failed)

    def cancel(self, request_id: int) -> None:
        d = self.requests.pop(request_id, None)
        if d is not None:
            d.cancel()

    def heartbeat(self) -> None:
        """Probes in flight, and the DNS cache's counts since the last heartbeat."""
        counts = [0, 0, 0]
        cache = self.cache
        if cache is not None:
            now = list(cache.counts())
            counts = [a - b for a, b in zip(now, self._dns_sent, strict=True)]
            self._dns_sent = now
        self._send(["h", self.scheduler.inflight, counts])


class MainLink(protocol.Protocol):
    """The worker's end of the pipes: frames from the main process in, frames out."""

    def __init__(self, reactor: IReactorCore, level: str) -> None:
        self.reactor = reactor
        self.level = level
        self.decoder = FrameDecoder(MAIN_FRAME_LIMIT, raw_above=RAW_ABOVE)
        self.out: ITransport | None = None
        clock = IReactorTime(reactor)
        ctx = ProbeContext(cast(ProbeReactor, reactor), Resolver(clock))
        self.probing = WorkerProbing(clock, ctx, registry(), self.send, CachingResolver(clock))
        self._beat = task.LoopingCall(self.probing.heartbeat)
        self._beat.clock = clock
        #: config and target changes not applied yet (``_serially``), and their chain
        self._changing = 0
        self._serial: Deferred[None] = defer.succeed(None)

    def send(self, message: list[Any]) -> None:
        if self.out is not None:
            self.out.write(encode(message))

    def connectionMade(self) -> None:
        self.out = self.transport
        self._beat.start(HEARTBEAT, now=True)

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            log.error("bad frame from the main process, exiting", error=str(exc))
            self.reactor.stop()
            return
        for message in messages:
            if isinstance(message, bytes):  # a big config or target list: decoded in turn
                self._serially(message)
            else:
                self.handle(message)

    def handle(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == "probe":
            _, request_id, module, target, hostname, timeout, debug, started, keep = message
            if self._changing:  # its module may be about to change: the main process probes
                self.send(["p", request_id, UNAVAILABLE, ""])
                return
            request = ProbeRequest(str(module), str(target), str(hostname), float(timeout),
                                   bool(debug), float(started), bool(keep))  # fmt: skip
            self.probing.probe(int(request_id), request)
        elif kind == "cancel":
            self.probing.cancel(int(message[1]))
        elif kind in ("config", "targets"):
            self._serially(message)

    def _serially(self, message: list[Any] | bytes) -> None:
        """Config and target lists take effect in the order sent, each built off the reactor
        (a big frame's JSON, the config's modules, a big target list's schedule), then
        swapped in on it."""
        self._changing += 1

        def step(_: object) -> Deferred[None]:
            if isinstance(message, bytes):
                d = threads.deferToThread(decode_body, message).addCallback(change)
            else:
                d = change(message)
            return d.addErrback(self._change_failed)

        def change(m: list[Any]) -> Deferred[None]:
            if m[0] == "config":
                return self._config(m)
            if m[0] == "targets":
                return self._targets(m[1])
            raise FrameError("a big frame must be a config or a target list")

        def done(_: object) -> None:
            self._changing -= 1

        self._serial = self._serial.addCallback(step).addBoth(done)

    def _targets(self, rows: list[list[Any]]) -> Deferred[None]:
        probing = self.probing
        return threads.deferToThread(probing.plan_targets, rows).addCallback(probing.commit_targets)

    def _config(self, message: list[Any]) -> Deferred[None]:
        _, filename, text, inflight, body = message
        if text is None:
            self.probing.set_config(Config(), int(inflight), int(body))
            return defer.succeed(None)
        d = threads.deferToThread(parse_modules, str(text), str(filename))
        return d.addCallback(lambda c: self.probing.set_config(c, int(inflight), int(body)))

    def _change_failed(self, reason: Failure) -> None:
        exc = reason.value
        errors = exc.errors if isinstance(exc, ConfigError) else [describe(exc)]
        for line in errors:
            log.error("change from the main process not applied", error=line)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """stdin ended: the main process is gone or stopping us."""
        self.probing.scheduler.stop()
        if self.reactor.running:
            self.reactor.stop()


def frame_observer(link: MainLink, level: str) -> ILogObserver:
    """Log events as ``["l", level, message, fields]`` frames to the main process."""
    threshold = logs.LEVELS[level]

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        event_level = event.get("log_level", LogLevel.info)
        if event_level < threshold:
            return
        fields = logs.event_fields(event)
        fields.pop("ts", None)
        name = str(fields.pop("level", "info"))
        message = str(fields.pop("msg", ""))
        plain = {str(k): v if isinstance(v, int | float) else str(v) for k, v in fields.items()}
        with contextlib.suppress(Exception):  # a log line must never take the worker down
            link.send(["l", name, message, plain])

    return cast(ILogObserver, observe)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netprobe-exporter-worker")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--log.level", dest="log_level", default="info", choices=list(logs.LEVELS))
    args = p.parse_args(argv)
    from twisted.internet import reactor as _reactor

    reactor = IReactorCore(_reactor)
    sys.setswitchinterval(0.0005)
    link = MainLink(reactor, args.log_level)
    globalLogBeginner.beginLoggingTo(
        [frame_observer(link, args.log_level)], redirectStandardIO=False, discardBuffer=True
    )
    # stdout carries frames only: anything printed goes to stderr, which the main process logs
    sys.stdout = sys.stderr
    stdio.StandardIO(link)
    # what the imports made lives as long as the process: out of every later full collection,
    # or the first ones hold the reactor for a good part of a second on a busy machine
    gc.freeze()
    # SIGTERM keeps its default action (exit at once, probes in flight or not); a terminal's
    # Ctrl-C reaches the whole process group, but stopping workers is the main process's job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cast(Any, reactor).run(installSignalHandlers=False)
    link.probing.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
