"""Which probes resolve through the cache: continuous ones (one process and workers), not
``/probe``; and the running config's ``dns_cache`` reaches the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from netprobe_exporter.app import App
from netprobe_exporter.config import parse_modules
from netprobe_exporter.dnscache import CachingResolver
from netprobe_exporter.model import DNSCacheSettings
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probing import ProbingService
from netprobe_exporter.resolver import Resolver
from netprobe_exporter.worker import WorkerProbing


def inline(f: Any, /, *args: Any) -> Deferred[Any]:
    return defer.maybeDeferred(f, *args)


def app(reactor: MemoryReactorClock, path: Path, **kw: Any) -> App:
    return App(
        reactor,
        config_file=str(path),
        listen=["127.0.0.1:0"],
        process_metrics=False,
        probers={},
        offload=inline,
        **kw,
    )


def test_one_process_caches_for_continuous_probing_only(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("dns_cache:\n  max_ttl: 1m\n")
    reactor = MemoryReactorClock()
    a = app(reactor, path)
    a.privilegedStartService()
    a.startService()
    assert isinstance(a.probing, ProbingService)
    cache = a.probing.ctx.resolver
    assert isinstance(cache, CachingResolver)
    assert cache.settings == DNSCacheSettings(max_ttl=60.0)
    for ctx in a.web.contexts.values():  # /probe resolves afresh
        assert type(ctx.resolver) is Resolver
    path.write_text("dns_cache:\n  max_ttl: 0s\n")
    a.manager.reload()
    assert a.probing.ctx.resolver is cache and cache.settings.max_ttl == 0.0
    a.stopService()


def test_a_resolver_given_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("dns_cache:\n  max_ttl: 1m\n")
    given = Resolver(MemoryReactorClock())
    a = app(MemoryReactorClock(), path, resolver=given)
    a.privilegedStartService()
    a.startService()
    assert isinstance(a.probing, ProbingService)
    assert a.probing.ctx.resolver is given
    assert all(ctx.resolver is given for ctx in a.web.contexts.values())
    a.stopService()


def test_a_worker_caches_for_continuous_probing_only() -> None:
    clock = MemoryReactorClock()
    plain = Resolver(clock)
    cache = CachingResolver(clock)
    probing = WorkerProbing(clock, ProbeContext(clock, plain), {}, lambda _: None, cache)
    assert probing.ctx.resolver is cache
    probing.set_config(parse_modules("dns_cache:\n  min_ttl: 0s\n", "c.yml"), 10, 1024)
    assert cache.settings == DNSCacheSettings(min_ttl=0.0)
    assert probing.ctx.resolver is cache and probing.ctx.max_body_bytes == 1024
    for ctx in probing.contexts.values():
        assert ctx.resolver is plain and ctx.max_body_bytes == 1024 and ctx.policy is not None


def test_the_cache_counts_reach_metrics_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("dns_cache:\n  max_ttl: 1m\n")
    a = app(MemoryReactorClock(), path)
    a.privilegedStartService()
    a.startService()
    assert isinstance(a.probing, ProbingService)
    cache = a.probing.ctx.resolver
    assert isinstance(cache, CachingResolver)
    cache.hits, cache.misses, cache.queries = 7, 2, 3
    assert a.store.stats.dns() == (7, 2, 3)
    a.stopService()


def test_a_worker_heartbeat_carries_the_cache_counts_since_the_last() -> None:
    clock = MemoryReactorClock()
    cache = CachingResolver(clock)
    sent: list[list[Any]] = []
    probing = WorkerProbing(clock, ProbeContext(clock, Resolver(clock)), {}, sent.append, cache)
    cache.hits, cache.misses, cache.queries = 5, 1, 1
    probing.heartbeat()
    cache.hits += 4
    probing.heartbeat()
    assert [m[2] for m in sent] == [[5, 1, 1], [4, 0, 0]]
