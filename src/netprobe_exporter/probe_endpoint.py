"""``GET /probe?target=…&module=…[&debug=true]``: one probe now, answered as blackbox would.

Parameters, checks (in blackbox's order), timeout rule and output follow blackbox_exporter 0.23,
with one deliberate difference: a target the module cannot probe (no port, a malformed URL)
is a 400 with the reason rather than a 200 with ``probe_success 0``, because it is a mistake in
the scrape config, not a failed probe.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import time
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from netprobe_exporter import blackbox, exposition
from netprobe_exporter.addresses import redact_url
from netprobe_exporter.config import Config, target_address_error
from netprobe_exporter.history import ProbeHistory, kept_size
from netprobe_exporter.metrics import ExporterStats
from netprobe_exporter.model import Module
from netprobe_exporter.probes import ProbeContext, Prober, ProbeResult
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.probes.everyaddress import run_module
from netprobe_exporter.web import Endpoint, plain

log = Logger()
DEFAULT_SCRAPE_TIMEOUT = 120.0


class ProbeRequestError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _param(request: Request, name: str) -> str:
    values = request.args.get(name.encode(), []) if request.args else []
    if not values:
        return ""
    try:
        return str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        raise ProbeRequestError(400, f"parameter {name!r} is not valid UTF-8") from None


def probe_timeout(header: str | None, module: Module, offset: float) -> float:
    """blackbox's rule: scrape timeout (120 s if unset) minus the offset, capped by the module's."""
    scrape = DEFAULT_SCRAPE_TIMEOUT
    if header:
        try:
            scrape = float(header)
        except ValueError:
            raise ProbeRequestError(
                400, f"Failed to parse timeout from Prometheus header: {header!r} is not a number"
            ) from None
        if scrape != scrape:  # NaN
            raise ProbeRequestError(400, "Failed to parse timeout from Prometheus header: NaN")
        scrape = scrape or DEFAULT_SCRAPE_TIMEOUT
    limit = scrape - offset
    if (0 < module.timeout < limit) or limit < 0:
        return module.timeout
    return limit


def _with_host(module: Module, hostname: str) -> Module:
    """The module with ``/probe?hostname=`` applied, for a prober that takes it."""
    hook = PROBERS[module.prober].with_hostname
    if hook is None:
        return module
    try:
        options = hook(module.options, hostname)
    except ValueError as exc:
        raise ProbeRequestError(400, str(exc)) from None
    return dataclasses.replace(module, options=options)


#: what a probe's answer is: the ``/probe`` metrics, the debug page, or a probe_policy refusal
METRICS, DEBUG, REFUSED = "metrics", "debug", "refused"
LogEntry = tuple[float, str, str, dict[str, object]]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A finished probe's answer, rendered where it ran (here or in a probe worker), with what
    the ``/probe`` history keeps of it."""

    kind: str
    body: str
    success: bool = False
    result: str = ""
    duration: float = 0.0
    detail: str = ""
    #: the probe's notes, when they were kept (debug, or the history is on)
    log: tuple[LogEntry, ...] | None = None
    log_dropped: int = 0
    log_dropped_at: int = 0
    log_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeRequest:
    """A checked ``/probe`` request, as handed to a probe worker."""

    module: str
    target: str
    hostname: str
    timeout: float
    debug: bool
    started: float
    #: keep the probe's notes (for the history's debug page) even without ``debug``
    keep_log: bool = False


class WorkerUnavailable(Exception):
    """A probe worker could not answer (it exited, or has not the module yet)."""


Handoff = Callable[[ProbeRequest], "Deferred[Outcome] | None"]


def outcome(
    result: ProbeResult, module: Module, target: str, timeout: float, debug: bool, started: float
) -> Outcome:
    """What a finished probe answers, rendered where it ran (here or in a probe worker)."""
    if result.policy_refused is not None:
        return Outcome(REFUSED, result.policy_refused)
    if debug:
        kind, body = DEBUG, blackbox.debug_output(module, target, timeout, result, started)
    else:
        kind, body = METRICS, blackbox.render(result, timeout)
    log = None if result.log is None else tuple(result.log)
    return Outcome(
        kind, body, result.success, result.result, result.duration, result.detail, log,
        result.log_dropped, result.log_dropped_at, result.log_bytes,
    )  # fmt: skip


def history_page(module: Module, target: str, timeout: float, o: Outcome, started: float) -> str:
    """The debug page of a kept request, made when ``/logs`` asks for it: the page itself for a
    ``debug=true`` request, else from its notes and the metrics it answered."""
    if o.kind == DEBUG:
        return o.body
    return blackbox.debug_page(
        module, target, timeout, list(o.log or ()), o.log_dropped, o.log_dropped_at, o.body,
        started,
    )  # fmt: skip


def with_host(module: Module, hostname: str) -> Module:
    """The module with ``/probe?hostname=`` applied (a probe worker applies it too)."""
    return _with_host(module, hostname) if hostname else module


class ProbeEndpoint(Endpoint):
    """``/probe``. Requests are checked here (parameters, module, probe_policy's limits); the
    probe itself runs in a probe worker when ``handoff`` finds one, else in this process."""

    methods = (b"GET", b"HEAD", b"POST")
    #: where each finished request goes, for the status page and ``/logs`` (None: nowhere)
    history: ProbeHistory | None = None

    def __init__(
        self,
        config: Callable[[], Config | None],
        context: Callable[[bool], ProbeContext],
        probers: dict[str, Prober],
        stats: ExporterStats,
        timeout_offset: float,
        handoff: Handoff | None = None,
    ) -> None:
        super().__init__()
        self._handoff = handoff
        self._config = config
        self._context = context
        self._probers = probers
        self._stats = stats
        self._offset = timeout_offset
        self._running = 0
        self._per_source: dict[str, int] = {}

    def respond(self, request: Request) -> bytes | int:
        try:
            return self._start(request)
        except ProbeRequestError as exc:
            return plain(request, exc.code, f"{exc}\n")

    def _start(self, request: Request) -> int:
        config = self._config()
        if config is None:
            raise ProbeRequestError(503, "config not loaded yet")
        name = _param(request, "module") or "http_2xx"
        module = config.modules.get(name)
        if module is None:
            self._stats.module_unknown += 1
            raise ProbeRequestError(400, f'Unknown module "{name}"')
        header = request.getHeader(b"x-prometheus-scrape-timeout-seconds")
        timeout = probe_timeout(header.decode("latin-1") if header else None, module, self._offset)
        target = _param(request, "target")
        if not target:
            raise ProbeRequestError(400, "Target parameter is missing")
        hostname = _param(request, "hostname")
        if hostname:
            module = _with_host(module, hostname)
        problem = target_address_error(target, module)
        if problem is not None:
            raise ProbeRequestError(400, f"invalid target for module {name!r}: {problem}")
        debug = _param(request, "debug") == "true"
        policy = config.probe_policy
        timeout = min(timeout, policy.max_timeout)
        source = _client(request)
        if self._running >= policy.max_concurrent:
            raise ProbeRequestError(429, "too many /probe requests running; try again later")
        if self._per_source.get(source, 0) >= policy.max_per_source:
            raise ProbeRequestError(429, f"too many /probe requests running from {source}")
        self._running += 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        started = time.time()
        keep_log = debug or (self.history is not None and self.history.enabled)
        d = self._run(name, module, target, hostname, timeout, debug, started, keep_log)
        gone: list[bool] = []  # the client went away: nothing more is written

        def client_gone(_: Failure) -> None:
            gone.append(True)
            d.cancel()

        request.notifyFinish().addErrback(client_gone)

        def release(passthrough: object) -> object:
            self._running -= 1
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]
            return passthrough

        d.addBoth(release)

        def answer(outcome: Outcome) -> None:
            self._stats.probe_requests += 1
            kind, body = outcome.kind, outcome.body
            if kind == REFUSED:
                if not request.finished and not gone:
                    text = f"target refused by probe_policy: {body}\n"
                    request.write(plain(request, 403, text))
                    request.finish()
                return
            self._record(module, target, timeout, outcome, started)
            if kind == DEBUG:
                _write(request, body, "text/plain", gzip_ok=False, gone=bool(gone))
            else:
                gz = exposition.wants_gzip(_header(request, b"accept-encoding"))
                _write(request, body, exposition.TEXT.content_type, gzip_ok=gz, gone=bool(gone))

        def failed(reason: Failure) -> None:
            if reason.check(CancelledError):
                return  # the client went away
            log.failure("probe failed unexpectedly", reason, target=redact_url(target), module=name)
            if not request.finished and not gone:
                request.write(plain(request, 500, "internal error\n"))
                request.finish()

        d.addCallbacks(answer, failed)
        return NOT_DONE_YET

    def _record(
        self, module: Module, target: str, timeout: float, o: Outcome, started: float
    ) -> None:
        """Keep the finished request in the history; its debug page is made if /logs asks."""
        history = self.history
        if history is None or not history.enabled:
            return
        page = functools.partial(history_page, module, target, timeout, o, started)
        size = kept_size(len(o.log or ()), o.log_bytes)
        history.add(started, module.name, target, o.success, o.result,
                    o.duration, o.detail, page, size)  # fmt: skip

    def _run(
        self,
        name: str,
        module: Module,
        target: str,
        hostname: str,
        timeout: float,
        debug: bool,
        started: float,
        keep_log: bool,
    ) -> Deferred[Outcome]:
        """The probe's answer: from a probe worker when there is one, else probed here."""

        def local() -> Deferred[Outcome]:
            d = run_module(self._probers, self._context(keep_log), target, module, timeout)
            return d.addCallback(outcome, module, target, timeout, debug, started)

        if self._handoff is None:
            return local()
        request = ProbeRequest(name, target, hostname, timeout, debug, started, keep_log)
        remote = self._handoff(request)
        if remote is None:
            return local()

        def fallback(reason: Failure) -> Deferred[Outcome]:
            reason.trap(WorkerUnavailable)  # the worker exited or lacks the module: probe here
            return local()

        return remote.addErrback(fallback)


def _client(request: Request) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _write(request: Request, body: str, content_type: str, gzip_ok: bool, gone: bool) -> None:
    if request.finished or gone:
        return
    data = body.encode("utf-8")
    request.setHeader(b"content-type", content_type.encode())
    if gzip_ok:
        data = gzip.compress(data, compresslevel=1)
        request.setHeader(b"content-encoding", b"gzip")
    request.setHeader(b"content-length", str(len(data)).encode())
    if request.method != b"HEAD":
        request.write(data)
    request.finish()
