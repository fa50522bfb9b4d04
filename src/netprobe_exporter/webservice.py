"""The web service: the site, its listeners and the ``--web.config.file`` reload.

Listeners are opened through ``twisted.internet.endpoints`` in ``privilegedStartService`` (so
that the command line knows whether it could listen before it loads the config's state) or,
when that was not called, in ``startService``. The web config reloads on its own: it succeeds
or fails whatever the main config's reload does, and has its own metric. As a subscriber of
the config manager the service keeps the running config and the ``/probe`` contexts made from
it (its ``probe_policy`` and ``limits.max_body_bytes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorSSL,
    IReactorTCP,
    IStreamServerEndpoint,
)
from twisted.logger import Logger

from netprobe_exporter import web
from netprobe_exporter.addresses import parse_host_port
from netprobe_exporter.config import Config, ConfigError, Limits
from netprobe_exporter.configmanager import ConfigChange, describe
from netprobe_exporter.history import ProbeHistory
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.probe_endpoint import Handoff, ProbeEndpoint
from netprobe_exporter.probes import ProbeContext, Prober
from netprobe_exporter.webconfig import Guard, ServerContext, WebConfig, load_web_config
from netprobe_exporter.webserver import BoundedSite

log = Logger()

# Twisted's default of 50 drops SYNs during a burst of scrapes and /probe requests (each retried
# a second later by the client); the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024


def split_listen_address(address: str) -> tuple[str, int]:
    """``:9716`` -> ("", 9716); ``[::]:9716`` -> ("::", 9716); port 0 picks a free port."""
    if address.isdigit():
        raise ValueError(
            f"{address!r}: missing host: want host:port, as :{address} (every address) or "
            f"127.0.0.1:{address}"
        )
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


@dataclasses.dataclass(frozen=True, slots=True)
class WebChange:
    """A change's ``/probe`` contexts, built; ``commit`` swaps them in with the config."""

    service: WebService
    config: Config
    contexts: dict[bool, ProbeContext] | None

    def commit(self) -> None:
        self.service.config = self.config
        if self.contexts is not None:
            self.service.contexts = self.contexts


class WebService(Service):
    """Serves the site on every listen address; reloads the web config on demand."""

    name = "web"

    def __init__(
        self,
        reactor: IReactorCore,
        addresses: Sequence[str],
        *,
        store: MetricsStore,
        registry: CollectorRegistry | None,
        ctx: ProbeContext,
        probers: Mapping[str, Prober],
        is_ready: Callable[[], bool],
        reload: Callable[[], Deferred[None]],
        wall: Callable[[], float],
        web_config: WebConfig | None = None,
        web_config_file: str | None = None,
        timeout_offset: float = 0.5,
        handoff: Handoff | None = None,
    ) -> None:
        self._reactor = reactor
        self._handoff = handoff
        self.addresses = list(addresses)
        self.store = store
        self._registry = registry
        self._ctx = ctx
        self.probers = dict(probers)
        self._is_ready = is_ready
        self._reload = reload
        self._wall = wall
        self.web_config_file = web_config_file
        self.web_config = web_config if web_config is not None else WebConfig()
        if web_config_file is not None:
            store.stats.web_reload_success_ts = wall()
        self.timeout_offset = timeout_offset
        self.config: Config | None = None
        #: the context of a /probe request, by its debug flag (policy: the running config's)
        self.contexts = {debug: dataclasses.replace(ctx, debug=debug) for debug in (False, True)}
        #: the last /probe requests and their logs (``--history.limit``)
        self.history = ProbeHistory()
        self.guard: Guard | None = None
        self.tls_context: ServerContext | None = None
        self.site: BoundedSite | None = None
        self.ports: list[IListeningPort] = []
        #: the embedded default's target: the first listener's address (known once bound)
        self.self_probe: str | None = None
        #: fires once every listener is open, or with the first that could not be
        self.listening: Deferred[None] | None = None

    # config changes
    def prepare(self, change: ConfigChange) -> WebChange:
        config = change.config
        if not change.config_changed:
            return WebChange(self, config, None)
        base = dataclasses.replace(self._ctx, max_body_bytes=config.limits.max_body_bytes)
        policy = config.probe_policy.check
        contexts = {
            debug: dataclasses.replace(base, debug=debug, policy=policy) for debug in (False, True)
        }
        return WebChange(self, config, contexts)

    # the site
    def build_site(self) -> BoundedSite:
        probe = ProbeEndpoint(
            lambda: self.config,
            lambda debug: self.contexts[debug],
            self.probers,
            self.store.stats,
            self.timeout_offset,
            self._handoff,
        )
        probe.history = self.history
        site = web.build_site(
            self.store,
            self._registry,
            self._is_ready,
            self._reload,
            probe,
            lambda: self.config,
            lambda: self.config.limits if self.config is not None else Limits(),
            history=self.history,
        )
        if self.web_config_file is not None:
            self.guard = Guard(site.resource, self._reactor, self.web_config)
            site.resource = self.guard
        return site

    # listening
    def privilegedStartService(self) -> None:
        """Open every listener (see ``listening`` for the outcome)."""
        super().privilegedStartService()
        if self.listening is None:
            self.listening = Deferred.fromCoroutine(self._listen())

    def startService(self) -> None:
        super().startService()
        if self.listening is None:
            self.listening = Deferred.fromCoroutine(self._listen())

    def stopService(self) -> Deferred[None]:
        """Close every listener (connections already accepted finish on their own)."""
        super().stopService()
        ports, self.ports = self.ports, []
        self.listening = None
        ds = [defer.maybeDeferred(p.stopListening) for p in ports]
        return defer.gatherResults(ds).addCallback(lambda _: None)

    async def _listen(self) -> None:
        if self.site is None:
            self.site = self.build_site()
        for address in self.addresses:
            host, port = split_listen_address(address)
            if host == "":
                try:
                    p = await self._endpoint("::", port).listen(self.site)
                except Exception:  # no IPv6 here: IPv4 wildcard only
                    p = await self._endpoint("", port).listen(self.site)
            else:
                p = await self._endpoint(host, port).listen(self.site)
            self.ports.append(p)
            bound = p.getHost()
            bound_port: int = getattr(bound, "port", port)
            if self.self_probe is None:
                self.self_probe = self_probe_address(host, bound_port)
            log.info("listening", address=f"{address}", port=bound_port)

    def _endpoint(self, host: str, port: int) -> IStreamServerEndpoint:
        """A TCP endpoint, or a TLS one with the web config's TLS settings."""
        tls = self.web_config.tls
        if tls is not None:
            if self.tls_context is None:
                self.tls_context = ServerContext(tls)
            return SSL4ServerEndpoint(
                IReactorSSL(self._reactor),
                port,
                self.tls_context,
                backlog=LISTEN_BACKLOG,
                interface=host,
            )
        tcp = IReactorTCP(self._reactor)
        if ":" in host:
            return TCP6ServerEndpoint(tcp, port, backlog=LISTEN_BACKLOG, interface=host)
        return TCP4ServerEndpoint(tcp, port, backlog=LISTEN_BACKLOG, interface=host)

    # the web config
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
            self.store.stats.web_reload_success_ts = self._wall()
            log.info("web config loaded", file=path)
            return
        self.store.stats.web_reload_successful = 0.0
        for line in errors:
            log.error("web config rejected, previous one kept", error=line)
