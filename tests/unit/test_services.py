"""Each service alone on a MemoryReactorClock: start, a config change, stop. No sockets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from netprobe_exporter.app import App
from netprobe_exporter.config import Config, ConfigError, parse_config
from netprobe_exporter.configmanager import ConfigChange, ConfigManager, ReloadFailed
from netprobe_exporter.metrics import ExporterStats, MetricsStore
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probing import ProbingService
from netprobe_exporter.webconfig import WebConfig, load_web_config
from netprobe_exporter.webservice import LISTEN_BACKLOG, WebService
from tests.support.pki import make_certs

WALL = 1_700_000_000.0


def inline(f: Callable[..., Any], /, *args: Any) -> Deferred[Any]:
    """The config manager's offload, run in the calling thread (a test has no thread pool)."""
    return defer.maybeDeferred(f, *args)


class NoResolver:
    async def resolve(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("no name is resolved in these tests")


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    observer: ILogObserver = seen.append  # type: ignore[assignment]
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def logged(events: list[dict[str, Any]], msg: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_format") == msg]


# the config manager


class Recorder:
    """A subscriber that keeps what it was told; ``fail`` makes its prepare raise."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name
        self.fail: Exception | None = None
        self.committed: list[ConfigChange] = []

    def prepare(self, change: ConfigChange) -> Any:
        self.log.append(f"{self.name} prepare")
        if self.fail is not None:
            raise self.fail
        recorder = self

        class Done:
            def commit(self) -> None:
                recorder.log.append(f"{recorder.name} commit")
                recorder.committed.append(change)

        return Done()


def manager(
    tmp_path: Path, text: str, clock: MemoryReactorClock | None = None
) -> tuple[ConfigManager, Path, ExporterStats]:
    path = tmp_path / "config.yml"
    path.write_text(text)
    stats = ExporterStats()
    clock = clock or MemoryReactorClock()
    m = ConfigManager(clock, inline, stats, lambda: WALL, config_file=str(path))
    return m, path, stats


def test_manager_starts_reloads_and_stops(tmp_path: Path) -> None:
    m, path, stats = manager(tmp_path, "targets:\n  - address: 127.0.0.1:1\n")
    order: list[str] = []
    first, second = Recorder(order, "a"), Recorder(order, "b")
    m.subscribe(first)
    m.subscribe(second)
    m.startService()
    assert order == ["a prepare", "b prepare", "a commit", "b commit"]
    assert [t.address for t in first.committed[0].targets] == ["127.0.0.1:1"]
    assert stats.reload_successful == 1.0 and stats.reload_success_ts == WALL

    path.write_text("targets:\n  - address: 127.0.0.1:2\n")
    done: list[object] = []
    m.reload().addBoth(done.append)
    assert done == [None]
    assert [t.address for t in second.committed[-1].targets] == ["127.0.0.1:2"]
    assert first.committed[-1].config is m.config and first.committed[-1].config_changed

    m.stopService()
    failed: list[Any] = []
    m.reload().addErrback(failed.append)
    assert failed and failed[0].check(ReloadFailed), failed
    assert "stopping" in str(failed[0].value)
    assert [t.address for t in m.config.targets] == ["127.0.0.1:2"]  # type: ignore[union-attr]


def test_manager_reload_is_all_or_nothing_across_subscribers(tmp_path: Path) -> None:
    m, path, stats = manager(tmp_path, "targets:\n  - address: 127.0.0.1:1\n")
    order: list[str] = []
    first, second = Recorder(order, "a"), Recorder(order, "b")
    m.subscribe(first)
    m.subscribe(second)
    m.startService()
    running = m.config
    order.clear()

    path.write_text("targets:\n  - address: 127.0.0.1:2\n")
    second.fail = MemoryError("no room for the schedule")
    failed: list[Any] = []
    m.reload().addErrback(failed.append)
    assert failed and failed[0].check(ReloadFailed), failed
    assert "MemoryError" in str(failed[0].value)
    assert order == ["a prepare", "b prepare"]  # the first prepared, and was never committed
    assert m.config is running and len(first.committed) == 1
    assert stats.reload_successful == 0.0

    path.write_text("targets: [\n")  # an invalid config reaches no subscriber at all
    order.clear()
    m.reload().addErrback(failed.append)
    assert failed[-1].check(ConfigError) and order == []
    m.stopService()


def test_auto_reload_reloads_when_the_content_changes_only(tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    m, path, stats = manager(tmp_path, "targets:\n  - address: 127.0.0.1:1\n", clock)
    m.auto_reload_interval = 30.0
    recorder = Recorder([], "a")
    m.subscribe(recorder)
    m.startService()
    assert len(recorder.committed) == 1
    clock.advance(30)  # same content: nothing happens
    assert len(recorder.committed) == 1
    path.write_text("targets:\n  - address: 127.0.0.1:2\n")
    clock.advance(29)
    assert len(recorder.committed) == 1  # not looked at yet
    clock.advance(1)
    assert [t.address for t in recorder.committed[-1].targets] == ["127.0.0.1:2"]
    assert stats.reload_successful == 1.0
    path.write_text("targets: [\n")  # a broken file: rejected, the old config stays
    clock.advance(30)
    assert stats.reload_successful == 0.0
    assert [t.address for t in m.config.targets] == ["127.0.0.1:2"]  # type: ignore[union-attr]
    commits = len(recorder.committed)
    clock.advance(30)  # still broken, unchanged: not tried again
    assert len(recorder.committed) == commits
    m.stopService()
    path.write_text("targets:\n  - address: 127.0.0.1:3\n")
    clock.advance(60)
    assert [t.address for t in m.config.targets] == ["127.0.0.1:2"]  # type: ignore[union-attr]


def test_auto_reload_is_off_by_default(tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    m, path, _ = manager(tmp_path, "targets:\n  - address: 127.0.0.1:1\n", clock)
    m.startService()
    path.write_text("targets:\n  - address: 127.0.0.1:2\n")
    clock.advance(120)
    assert [t.address for t in m.config.targets] == ["127.0.0.1:1"]  # type: ignore[union-attr]


def test_manager_watches_target_files_on_its_clock(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    clock = MemoryReactorClock()
    m, _, _ = manager(
        tmp_path,
        f"target_files:\n  - files: [{files}/*.yml]\n    refresh_interval: 10s\n",
        clock,
    )
    recorder = Recorder([], "a")
    m.subscribe(recorder)
    m.startService()
    assert list(recorder.committed[0].targets) == []

    target_file = files / "t.yml"
    target_file.write_text("- targets: ['127.0.0.1:7']\n")
    settled = time.time() - 60  # an edit counts once it has settled
    os.utime(target_file, (settled, settled))
    clock.advance(10)
    change = recorder.committed[-1]
    assert [t.address for t in change.targets] == ["127.0.0.1:7"]
    assert not change.config_changed and change.config is m.config

    m.stopService()
    assert clock.getDelayedCalls() == []  # the watch is off
    target_file.write_text("- targets: ['127.0.0.1:8']\n")
    os.utime(target_file, (settled + 1, settled + 1))
    clock.advance(10)
    assert len(recorder.committed) == 2


# the continuous-probing service


class Prober:
    """Probes that stay in flight until cancelled; records each start and each cancel."""

    def __init__(self) -> None:
        self.started: list[tuple[str, float]] = []
        self.cancelled: list[str] = []

    def __call__(self, ctx: ProbeContext, address: str, module: Any, timeout: float) -> Any:
        self.started.append((address, timeout))
        return Deferred(lambda d: self.cancelled.append(address))


def probing(clock: MemoryReactorClock) -> tuple[ProbingService, Prober, MetricsStore]:
    prober = Prober()
    store = MetricsStore()
    service = ProbingService(
        clock, ProbeContext(clock, NoResolver()), {"tcp": prober}, store, lambda: WALL
    )
    return service, prober, store


def change(text: str, changed: bool = True, config: Config | None = None) -> ConfigChange:
    config = config or parse_config(text)
    return ConfigChange(config, config.targets, config_changed=changed)


def test_probing_starts_changes_and_stop_cancels_probes_in_flight() -> None:
    clock = MemoryReactorClock()
    service, prober, store = probing(clock)
    service.startService()
    assert not service.probing  # nothing to probe before a config

    first = change("targets:\n  - address: 127.0.0.1:1\n    interval: 10s\n")
    service.prepare(first).commit()
    clock.advance(0)
    assert service.probing
    assert prober.started == [("127.0.0.1:1", 5.0)]  # the module's timeout, under the interval
    assert [k[0] for k in store.series] == ["127.0.0.1:1"]

    lines = "".join(f"  - address: 127.0.0.1:{p}\n    interval: 10s\n" for p in range(2, 1002))
    second = change("limits:\n  max_concurrent_probes: 2000\ntargets:\n" + lines)
    prepared = service.prepare(second)
    assert [k[0] for k in store.series] == ["127.0.0.1:1"]  # prepared: nothing changed yet
    prepared.commit()
    clock.pump([0.1] * 99 + [0.095])  # up to just before the new targets' second slots
    assert prober.cancelled == ["127.0.0.1:1"]  # a target gone: its probe in flight too
    assert len(prober.started) == 1001 and service.scheduler.inflight == 1000

    service.stopService()  # as on SIGTERM
    assert len(prober.cancelled) == 1001
    assert not service.probing and service.scheduler.inflight == 0
    assert clock.getDelayedCalls() == []


def test_probing_target_files_change_keeps_the_config() -> None:
    clock = MemoryReactorClock()
    service, prober, _ = probing(clock)
    config = parse_config("limits:\n  max_body_bytes: 1000B\n")
    service.prepare(change("", config=config)).commit()
    assert service.ctx.max_body_bytes == 1000
    with_file = parse_config("targets:\n  - address: 127.0.0.1:3\n")
    service.prepare(ConfigChange(config, with_file.targets, config_changed=False)).commit()
    clock.advance(0)
    assert service.config is config and prober.started[0][0] == "127.0.0.1:3"
    service.stopService()
    assert prober.cancelled == ["127.0.0.1:3"]


# the web service


class NoIPv6(MemoryReactorClock):
    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if interface == "::":
            raise CannotListenError(interface, port, OSError("address family not supported"))
        return super().listenTCP(port, factory, backlog, interface)


def web(reactor: MemoryReactorClock, addresses: list[str], **kw: Any) -> WebService:
    return WebService(
        reactor,
        addresses,
        store=MetricsStore(),
        registry=None,
        ctx=ProbeContext(reactor, NoResolver()),
        probers={},
        is_ready=lambda: False,
        reload=lambda: defer.succeed(None),
        wall=lambda: WALL,
        **kw,
    )


def render(service: WebService, path: bytes) -> tuple[int, bytes]:
    assert service.site is not None
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.uri = request.path = path
    resource = service.site.getResourceFor(request)
    body = resource.render(request)
    return request.responseCode or 200, body


def test_web_listens_through_endpoints_and_stops(events: list[dict[str, Any]]) -> None:
    reactor = MemoryReactorClock()
    service = web(reactor, [":9716", "127.0.0.1:0", "[::1]:9717"])
    service.startService()
    assert service.listening is not None and service.listening.called
    servers = [(port, backlog, interface) for port, _, backlog, interface in reactor.tcpServers]
    assert servers == [
        (9716, LISTEN_BACKLOG, "::"),  # dual stack
        (0, LISTEN_BACKLOG, "127.0.0.1"),
        (9717, LISTEN_BACKLOG, "::1"),
    ]
    assert all(factory is service.site for _, factory, _, _ in reactor.tcpServers)
    assert [(e["address"], e["port"]) for e in logged(events, "listening")] == [
        (":9716", 9716),
        ("127.0.0.1:0", 0),
        ("[::1]:9717", 9717),
    ]
    assert service.self_probe == "127.0.0.1:9716"

    assert render(service, b"/config")[0] == 503
    config = parse_config("probe_policy:\n  deny: [127.0.0.0/8]\n")
    prepared = service.prepare(change("", config=config))
    assert service.config is None  # prepared: nothing swapped yet
    prepared.commit()
    assert service.config is config and render(service, b"/config")[0] == 200
    policy = service.contexts[False].policy
    assert policy is not None and policy("x", "127.0.0.1") is not None
    assert service.contexts[True].debug

    ports = list(service.ports)
    stopped: list[object] = []
    service.stopService().addBoth(stopped.append)
    assert stopped == [None] and service.ports == [] and len(ports) == 3


def test_web_wildcard_falls_back_to_ipv4() -> None:
    reactor = NoIPv6()
    service = web(reactor, [":9716"])
    service.privilegedStartService()
    service.startService()  # does not listen twice
    assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(9716, "")]
    service.stopService()


def test_web_listen_failure_fails_listening() -> None:
    class Refusing(MemoryReactorClock):
        def listenTCP(self, port: int, *args: Any, **kw: Any) -> Any:
            raise CannotListenError("127.0.0.1", port, OSError("address already in use"))

    service = web(Refusing(), ["127.0.0.1:9716"])
    service.privilegedStartService()
    failed: list[Any] = []
    assert service.listening is not None
    service.listening.addErrback(failed.append)
    assert failed and failed[0].check(CannotListenError) and service.ports == []


def test_web_tls_listener_and_its_own_reload(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    path = tmp_path / "web.yml"
    tls = f"tls_server_config:\n  cert_file: {certs.leaf_cert}\n  key_file: {certs.leaf_key}\n"
    path.write_text(tls)
    reactor = MemoryReactorClock()
    service = web(
        reactor,
        ["127.0.0.1:9716"],
        web_config=load_web_config(str(path)),
        web_config_file=str(path),
    )
    service.startService()
    ((port, factory, context, backlog, interface),) = reactor.sslServers
    assert (port, backlog, interface) == (9716, LISTEN_BACKLOG, "127.0.0.1")
    assert factory is service.site
    assert context is service.tls_context and reactor.tcpServers == []
    stats = service.store.stats
    assert stats.web_reload_success_ts == WALL

    path.write_text(tls + 'http_server_config:\n  headers:\n    X-Test: "1"\n')
    service.reload_web_config()
    assert stats.web_reload_successful == 1.0
    assert service.guard is not None and service.guard.config.headers == (("X-Test", "1"),)

    path.write_text("tls_server_config: [\n")
    service.reload_web_config()
    assert stats.web_reload_successful == 0.0
    assert service.guard.config.headers == (("X-Test", "1"),)  # the previous one kept
    service.stopService()


def test_web_config_without_file_is_not_reloaded() -> None:
    service = web(MemoryReactorClock(), ["127.0.0.1:0"], web_config=WebConfig())
    service.startService()
    service.reload_web_config()
    assert service.guard is None and service.store.stats.web_reload_successful == 1.0
    service.stopService()


# the three together


def test_app_embedded_default_probes_the_bound_listener() -> None:
    reactor = MemoryReactorClock()
    prober = Prober()
    app = App(
        reactor,
        listen=["127.0.0.1:9716"],
        resolver=NoResolver(),
        process_metrics=False,
        probers={"tcp": prober},
        offload=inline,
        wall=lambda: WALL,
    )
    app.privilegedStartService()
    assert not app.is_ready()
    app.startService()
    reactor.advance(0)
    assert app.is_ready()
    assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(9716, "127.0.0.1")]
    assert prober.started and prober.started[0][0] == "127.0.0.1:9716"
    assert app.web.config is app.config is app.probing.config

    done: list[object] = []
    app.stopService().addBoth(done.append)
    assert done and prober.cancelled == ["127.0.0.1:9716"]
    assert not app.is_ready() and app.ports == []


def test_app_bad_config_reload_changes_no_service(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("targets:\n  - address: 127.0.0.1:1\n")
    reactor = MemoryReactorClock()
    app = App(
        reactor,
        config_file=str(path),
        listen=["127.0.0.1:0"],
        resolver=NoResolver(),
        process_metrics=False,
        probers={"tcp": Prober()},
        offload=inline,
    )
    app.privilegedStartService()
    app.startService()
    running = app.config
    path.write_text("targets:\n  - address: 127.0.0.1:1\n    interval: 5x\n")
    failed: list[Any] = []
    app.manager.reload().addErrback(failed.append)
    assert failed and failed[0].check(ConfigError)
    assert app.config is running and app.web.config is running and app.probing.config is running
    app.stopService()


def test_only_a_big_build_is_frozen_out_of_full_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A freeze keeps for good the reference cycles alive at that moment: small builds skip it."""
    import gc

    from netprobe_exporter import configmanager

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    configmanager.freeze_if_big(configmanager.FREEZE_TARGETS - 1)
    assert frozen == []
    configmanager.freeze_if_big(configmanager.FREEZE_TARGETS)
    assert frozen == [True]
