"""The HTTP surface: ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``, ``/config``, ``/``.

``/metrics`` streams: the renderer yields chunks of a few hundred targets, and a pull producer
renders the next chunk only when the connection has taken the last. A 10,000-target scrape
thus never holds the reactor thread (and so never delays a probe's clock) for more than one
chunk's work, keeps one chunk in memory rather than the whole exposition, and needs no second
thread fighting for the GIL. Gzip is streamed the same way, at level 1 (level 9 costs ten
times the CPU for 25% less output).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

__all__ = ["Site", "build_site"]

from netprobe_exporter import exposition, protobuf_exposition, redact, status, status_assets
from netprobe_exporter.config import ConfigError, Limits
from netprobe_exporter.history import ProbeHistory
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.webserver import BoundedSite

log = Logger()


def plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")


class Endpoint(Resource):
    """A leaf that answers only the listed methods (HEAD goes with GET); others get 405."""

    isLeaf = True
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request: Request) -> bytes | int:
        method = request.method
        if method not in self.methods:
            request.setHeader(b"allow", b", ".join(self.methods))
            return plain(request, 405, f"method {method.decode('latin-1')} not allowed\n")
        if request.postpath:  # e.g. /metrics/x or /metrics/
            return plain(request, 404, "not found\n")
        return self.respond(request)

    def respond(self, request: Request) -> bytes | int:
        raise NotImplementedError


class NotFound(Endpoint):
    methods = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")

    def render(self, request: Request) -> bytes:
        return plain(request, 404, "not found\n")


class Healthy(Endpoint):
    def respond(self, request: Request) -> bytes:
        return plain(request, 200, "Healthy\n")


class Ready(Endpoint):
    def __init__(self, is_ready: Callable[[], bool]) -> None:
        super().__init__()
        self._is_ready = is_ready

    def respond(self, request: Request) -> bytes:
        if self._is_ready():
            return plain(request, 200, "Ready\n")
        return plain(request, 503, "Not ready: config not loaded or scheduler not running\n")


class Reload(Endpoint):
    methods = (b"POST", b"PUT")

    def __init__(self, reload: Callable[[], Deferred[None]]) -> None:
        super().__init__()
        self._reload = reload

    def respond(self, request: Request) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def ok(_: None) -> None:
            if not gone:
                request.write(plain(request, 200, "config reloaded\n"))
                request.finish()

        def bad(reason: Failure) -> None:
            if gone:
                return
            if reason.check(ConfigError):
                body = "config rejected, previous config still running:\n" + str(reason.value)
                request.write(plain(request, 400, body + "\n"))
            else:
                body = "reload failed, previous config still running: " + reason.getErrorMessage()
                request.write(plain(request, 500, body + "\n"))
            request.finish()

        self._reload().addCallbacks(ok, bad)
        return NOT_DONE_YET


class ConfigPage(Endpoint):
    """The running config as YAML, secrets redacted."""

    def __init__(self, config: Callable[[], Any]) -> None:
        super().__init__()
        self._config = config

    def respond(self, request: Request) -> bytes:
        config = self._config()
        if config is None:
            return plain(request, 503, "config not loaded yet\n")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return redact.config_yaml(config).encode("utf-8")


class StatusPage(Endpoint):
    """``/`` and ``/target``: a static shell; its script asks the JSON endpoints for data."""

    def __init__(self, body: str) -> None:
        super().__init__()
        self._body = body.encode("utf-8")

    def respond(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self._body


class StatusData(Endpoint):
    """``/status.json`` (the list, filtered and paged here) and ``/target.json?id=``.

    The view works in steps of a few hundred targets; each step runs in its own reactor turn
    (``callLater(0)``), so building a page of a 10,000-target exporter never holds the reactor
    for more than one step's work and probes keep their clock meanwhile.
    """

    def __init__(self, view: status.StatusView, one: bool, clock: IReactorTime | None) -> None:
        super().__init__()
        self._view = view
        self._one = one
        self._clock = clock

    def respond(self, request: Request) -> bytes | int:
        args = request.args or {}
        steps: status.Steps[dict[str, Any] | None]
        if self._one:
            steps = self._view.target_steps(args.get(b"id", [b""])[0].decode("latin-1"))
        else:
            try:
                steps = self._view.page_steps(status.parse_query(args))
            except ValueError as exc:
                return plain(request, 400, f"{exc}\n")
        encoded = _json_steps(steps)
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        self._step(request, encoded, clock, gone)
        return NOT_DONE_YET

    def _step(
        self,
        request: Request,
        steps: status.Steps[bytes | None],
        clock: IReactorTime,
        gone: list[bool],
    ) -> None:
        if gone:
            steps.close()
            return
        try:
            next(steps)
        except StopIteration as done:
            self._answer(request, done.value)
        except Exception:
            log.failure("building the status page failed")
            request.write(plain(request, 500, "internal error\n"))
            request.finish()
        else:
            clock.callLater(0, self._step, request, steps, clock, gone)

    def _answer(self, request: Request, data: bytes | None) -> None:
        if data is None:
            request.write(plain(request, 404, "no such target (gone with a reload?)\n"))
        else:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(data)
        request.finish()


def _json_steps(steps: status.Steps[dict[str, Any] | None]) -> status.Steps[bytes | None]:
    """The view's steps, then its answer as JSON, the rows ``ROW_CHUNK`` at a time."""
    data = yield from steps
    if data is None:
        return None
    rows = data.pop("rows", None)
    head = json.dumps(data, separators=(",", ":"))
    if rows is None:
        return head.encode("utf-8")
    parts: list[str] = []
    for start in range(0, len(rows), status.ROW_CHUNK):
        yield
        parts.extend(
            json.dumps(r, separators=(",", ":")) for r in rows[start : start + status.ROW_CHUNK]
        )
    return (head[:-1] + ',"rows":[' + ",".join(parts) + "]}").encode("utf-8")


class Logs(Endpoint):
    """``/logs?id=N`` or ``/logs?target=T[&module=M]``: a kept ``/probe`` request's log."""

    def __init__(self, history: ProbeHistory) -> None:
        super().__init__()
        self._history = history

    def respond(self, request: Request) -> bytes:
        args = request.args or {}

        def arg(name: bytes) -> str:
            values = args.get(name, [])
            return values[0].decode("utf-8", "replace") if values else ""

        raw_id, target, module = arg(b"id"), arg(b"target"), arg(b"module")
        record_id = int(raw_id) if raw_id.isdigit() else None
        problem = None
        if record_id is not None and target:
            problem = "Probe id and target can't be defined at the same time"
        elif record_id is None and not target:
            problem = "Probe id or target must be defined as http query parameters"
        elif module and not target:
            problem = "Probe module filter only works in conjunction with target parameter"
        if problem is not None:
            return plain(request, 400, problem + "\n")
        if target:
            record = self._history.by_target(target, module)
            if record is None:
                return plain(request, 404, "Probe target not found\n")
        else:
            assert record_id is not None
            record = self._history.by_id(record_id)
            if record is None:
                return plain(request, 404, "Probe id not found\n")
        return plain(request, 200, record.text)


class Metrics(Endpoint):
    def __init__(self, store: MetricsStore, registry: CollectorRegistry | None) -> None:
        super().__init__()
        self._store = store
        self._registry = registry

    def respond(self, request: Request) -> bytes | int:
        fmt = exposition.negotiate(_header(request, b"accept"))
        gz = exposition.wants_gzip(_header(request, b"accept-encoding"))
        request.setHeader(b"content-type", fmt.content_type.encode())
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        if gz:
            request.setHeader(b"content-encoding", b"gzip")
        if request.method == b"HEAD":
            return b""
        chunks: Iterator[str] | Iterator[bytes]
        if fmt.protobuf:
            chunks = protobuf_exposition.render(self._store, self._registry)
        else:
            chunks = exposition.render(self._store, fmt, self._registry)
        request.registerProducer(_RenderProducer(request, chunks, gz), False)
        return NOT_DONE_YET


@implementer(IPullProducer)
class _RenderProducer:
    """Renders the next chunk only when the connection has taken the previous one.

    Twisted asks for more (``resumeProducing``) once the socket's send buffer has drained, so
    each reactor turn does one chunk's work (a few hundred targets, a few ms) and at most one
    chunk waits in memory, however large the scrape and however slow the client.
    """

    def __init__(self, request: Request, chunks: Iterator[str] | Iterator[bytes], gz: bool) -> None:
        self._request = request
        self._chunks = chunks
        self._gzip = zlib.compressobj(1, zlib.DEFLATED, 31) if gz else None
        self._stopped = False

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        data = b""
        try:
            while not data:  # gzip may swallow a small chunk whole: render until output
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._finish()
                    return
                data = chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")
                if self._gzip is not None:
                    data = self._gzip.compress(data)
        except Exception:
            log.failure("rendering a page failed", path=self._request.path.decode("latin-1"))
            self._stopped = True
            self._request.unregisterProducer()
            self._request.loseConnection()
            return
        self._request.write(data)

    def _finish(self) -> None:
        self._stopped = True
        if self._gzip is not None:
            self._request.write(self._gzip.flush())
        self._request.unregisterProducer()
        self._request.finish()

    def stopProducing(self) -> None:  # the client went away
        self._stopped = True


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class Root(Resource):
    """A directory of endpoints: unknown children are 404; ``index`` answers for ``…/``."""

    def __init__(self, index: Resource | None = None) -> None:
        super().__init__()
        self._missing = NotFound()
        self._index = index or self._missing

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self._index if path == b"" else self._missing

    def render(self, request: Request) -> bytes:
        return plain(request, 404, "not found\n")


def build_site(
    store: MetricsStore,
    registry: CollectorRegistry | None,
    is_ready: Callable[[], bool],
    reload: Callable[[], Deferred[None]],
    probe: Resource,
    config: Callable[[], Any],
    limits: Callable[[], Limits] = Limits,
    history: ProbeHistory | None = None,
    clock: IReactorTime | None = None,
) -> BoundedSite:
    history = history if history is not None else ProbeHistory()

    def source() -> str:
        running = config()
        return str(running.source) if running is not None else "not loaded yet"

    view = status.StatusView(store, history, source)
    root = Root(index=StatusPage(status_assets.LIST_PAGE))
    root.putChild(b"target", StatusPage(status_assets.TARGET_PAGE))
    root.putChild(b"status.json", StatusData(view, one=False, clock=clock))
    root.putChild(b"target.json", StatusData(view, one=True, clock=clock))
    root.putChild(b"logs", Logs(history))
    root.putChild(b"metrics", Metrics(store, registry))
    root.putChild(b"probe", probe)
    root.putChild(b"config", ConfigPage(config))
    lifecycle = Root()
    lifecycle.putChild(b"healthy", Healthy())
    lifecycle.putChild(b"ready", Ready(is_ready))
    lifecycle.putChild(b"reload", Reload(reload))
    root.putChild(b"-", lifecycle)
    site = BoundedSite(root, limits)
    site.displayTracebacks = False
    return site
