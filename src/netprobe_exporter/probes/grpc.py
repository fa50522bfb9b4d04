"""The grpc prober: the gRPC health-checking protocol (``grpc.health.v1.Health/Check``).

Semantics follow blackbox_exporter 0.23's grpc prober: the target is ``host[:port]``, optionally
after ``http://`` or ``https://`` (which say nothing about TLS: ``tls`` does), the port being
80, or 443 with ``tls``; the probe succeeds when the answer is ``SERVING``. Its families are
blackbox's: ``probe_grpc_status_code``, ``probe_grpc_healthcheck_response{serving_status}``,
``probe_grpc_duration_seconds{phase="resolve"|"check"}``, ``probe_grpc_ssl`` and the TLS ones of
an answered check (``metadata`` is 0.28's key, sent with the request).

grpcio speaks gRPC; the connection is ours. The target is resolved (``preferred_ip_protocol``),
connected from ``source_ip_address`` and, with ``tls``, handshaken with ``tls_config`` exactly as
the tcp prober does, on the reactor. grpcio's channel talks to that connection through an
abstract Unix socket only this process may connect to, relayed on the reactor, so every TLS
setting, the handshake's certificate details and the probe policy apply as for any other
prober. grpcio runs the call on its own threads; its completion comes back to the reactor with
``callFromThread``, and the reactor thread never waits for it (grpcio itself is imported by the
first grpc probe in a pool thread).
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from OpenSSL import SSL
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReadDescriptor,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netprobe_exporter import probes
from netprobe_exporter.addresses import parse_host
from netprobe_exporter.model import Details, Module, Options, Sample, SeriesSink
from netprobe_exporter.probes import (
    BlackboxFamily,
    Family,
    ProbeContext,
    ProbeReactor,
    ProbeResult,
    ProberSpec,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import (
    ADDRESSING,
    HANDSHAKE,
    RESOLVING,
    ConnectInfo,
    connect,
    resolve,
)
from netprobe_exporter.probes.tls import (
    TLS_OPTION,
    TLSConfig,
    TLSInfo,
    creator_or_fail,
    handshake_info,
    tls_connection,
)
from netprobe_exporter.schema import BOOL, STRING, Kind, Opt, Section
from netprobe_exporter.yamlcheck import REDACTED, Checker, is_null, is_secret_header, key_path

#: ``grpc.health.v1.HealthCheckResponse.ServingStatus``, by number
SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
#: gRPC status codes this prober sets itself
OK, DEADLINE_EXCEEDED, UNAVAILABLE = 0, 4, 14
#: bytes the relay holds for a side that is not there yet (the health check needs a few hundred)
MAX_PENDING = 256 * 1024
#: a health check answer is a few bytes: a server may not make grpcio take in more than this
MAX_MESSAGE = 64 * 1024
#: after the probe's deadline, how long grpcio's own deadline may take to come back
GRACE = 0.5

Metadata = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class GRPCProbe(Options):
    service: str = ""
    tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    #: request metadata (0.28): each key with its values, in the config's order
    metadata: Metadata = ()
    #: resolve the target through this server (``ip[:port]``), within ``dns_timeout``
    dns_server: str | None = None
    dns_timeout: float | None = None


#: blackbox's options of a module with no ``grpc:`` section: its module defaults leave out
#: the grpc prober's, so ``ip_protocol_fallback`` is false there (and true in a section)
NO_SECTION = GRPCProbe(ip_protocol_fallback=False)


@dataclass(slots=True)
class GRPCDetails(Details):
    """What a grpc probe showed besides the common core."""

    #: seconds from the resolved address to the check's end (blackbox's ``check`` phase);
    #: None when no check was made (the target did not parse or resolve)
    check: float | None = None
    #: request sent to status received, when the server answered (continuous mode)
    rpc: float | None = None
    status_code: int = 0
    #: the answer's serving status, "" when there was no answer
    serving_status: str = ""
    #: the check was answered over TLS
    ssl: bool = False
    connect: ConnectInfo = field(default_factory=ConnectInfo)
    tls: TLSInfo | None = None

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        self.connect.observe(out)
        if self.check is None:
            return
        out.gauge(STATUS.name, float(self.status_code))
        out.info(SERVING.name, self.serving_status or "none")
        if self.rpc is not None:
            out.histogram(RPC.name, self.rpc)
        tls_.observe(out, self.tls)

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        # blackbox's lookup time is 0 when no address was found
        resolve = result.resolve_duration if result.ip is not None else None
        phases = [({"phase": "resolve"}, round(resolve or 0.0, 9))]
        if self.check is not None:
            phases.append(({"phase": "check"}, round(self.check, 9)))
            out["probe_grpc_healthcheck_response"] = [
                ({"serving_status": s}, 1.0 if s == self.serving_status else 0.0)
                for s in SERVING_STATUSES
            ]
        out["probe_grpc_duration_seconds"] = phases
        out["probe_grpc_ssl"] = [({}, 1.0 if self.ssl else 0.0)]
        out["probe_grpc_status_code"] = [({}, float(self.status_code))]
        # 0.23 registers the expiry gauge in every answer, the labelled TLS ones when set
        t = self.tls if self.ssl else None
        out["probe_ssl_earliest_cert_expiry"] = [({}, t.earliest_expiry if t else 0.0)]
        if t is not None:
            out["probe_tls_version_info"] = [({"version": t.version}, 1.0)]
            out["probe_ssl_last_chain_info"] = [
                (
                    {
                        "fingerprint_sha256": t.fingerprint_sha256,
                        "issuer": t.issuer,
                        "subject": t.subject,
                        "subjectalternative": t.subject_alternative,
                    },
                    1.0,
                )
            ]


RPC = Family(
    "netprobe_grpc_check_duration_seconds", "histogram",
    "gRPC health Check time from sending the request to its status (connect and TLS "
    "excluded); checks the server answered.", order=105,
)  # fmt: skip
STATUS = Family(
    "netprobe_grpc_status_code", "gauge",
    "gRPC status code of the last health check (14 UNAVAILABLE: no connection).", order=135,
)  # fmt: skip
SERVING = Family(
    "netprobe_grpc_serving_status_info", "info",
    "Serving status of the last health check answer (none: no answer).", order=136,
    label="serving_status",
)  # fmt: skip

BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_grpc_duration_seconds", "Duration of gRPC request by phase"),
    BlackboxFamily("probe_grpc_ssl", "Indicates if SSL was used for the connection"),
    BlackboxFamily("probe_grpc_status_code", "Response gRPC status code"),
    BlackboxFamily("probe_grpc_healthcheck_response", "Response HealthCheck response"),
)


# the target


@dataclass(frozen=True, slots=True)
class GRPCTarget:
    host: str
    #: None: blackbox's default (80, or 443 with TLS)
    port: int | None
    ip_version: int

    def port_for(self, tls: bool) -> int:
        return self.port if self.port is not None else 443 if tls else 80

    def authority(self, tls: bool) -> str:
        host = f"[{self.host}]" if self.ip_version == 6 else self.host
        return f"{host}:{self.port_for(tls)}"


def parse_target(address: str) -> GRPCTarget:
    """``[http://|https://]host[:port][/...]``, as blackbox reads a grpc target."""
    rest = address
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    hostport = rest.split("/", 1)[0].split("?", 1)[0]
    if not hostport:
        raise ValueError(f"{address!r}: missing host")
    port_text: str | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"{address!r}: missing ']' after IPv6 address")
        host, tail = hostport[1:end], hostport[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"{address!r}: unexpected {tail!r} after ']'")
            port_text = tail[1:]
        if parse_host(host) != 6:
            raise ValueError(f"{address!r}: {host!r} is not an IPv6 address")
    else:
        host, sep, tail = hostport.partition(":")
        if ":" in tail:
            raise ValueError(f"{address!r}: IPv6 addresses need brackets, as [::1]:50051")
        port_text = tail if sep else None
    version = parse_host(host)
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(f"{address!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{address!r}: port {port} is out of range 1-65535")
    return GRPCTarget(host, port, version)


def target_host(address: str) -> str:
    return parse_target(address).host


def check_address(address: str) -> str | None:
    try:
        parse_target(address)
    except ValueError as exc:
        return str(exc)
    return None


# the probe


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Health-check ``address`` within ``timeout`` seconds."""
    opts = options_of(module, GRPCProbe)
    return run_probe(
        ctx, lambda result, started: _run(ctx, address, opts, timeout, started, result)
    )


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: GRPCProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    details = result.details = GRPCDetails()
    try:
        target = parse_target(address)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    ip = await resolve(
        ctx, target.host, target.ip_version, opts.preferred_ip_protocol,
        opts.ip_protocol_fallback, timeout, result,
        dns_server=opts.dns_server, dns_timeout=opts.dns_timeout,
    )  # fmt: skip
    if ip is None:
        return
    clock = ctx.clock.monotonic
    check_started = clock()
    try:
        await _check(ctx, target, ip, opts, started + timeout, details, result)
    finally:
        details.check = clock() - check_started


async def _check(
    ctx: ProbeContext,
    target: GRPCTarget,
    ip: str,
    opts: GRPCProbe,
    deadline: float,
    details: GRPCDetails,
    result: ProbeResult,
) -> None:
    clock = ctx.clock.monotonic
    if _GRPCIO is None:  # before connecting: no connection waits for the import
        await _load_grpcio(ctx)
    try:  # what the module says is checked before any packet is sent
        metadata = _metadata(opts.metadata)
    except ValueError as exc:
        result.fail("error", str(exc))
        return
    creator = None
    if opts.tls:
        creator = creator_or_fail(opts.tls_config, target.host, result)
        if creator is None:
            return
    port = target.port_for(opts.tls)
    sock = await connect(
        ctx, ip, port, opts.source_ip_address, deadline - clock(), result, details.connect
    )
    if sock is None:
        details.status_code = UNAVAILABLE  # what grpc reports for a connection it cannot make
        return
    relay = _Relay(ctx.reactor)
    try:
        relay.open(ctx, sock, creator)
        if creator is not None:
            if not await relay.handshake(deadline - clock()):
                details.status_code = UNAVAILABLE
                result.fail("tls_error" if not relay.timed_out else "timeout",
                            f"TLS handshake failed: {relay.why()}")  # fmt: skip
                return
            conn = tls_connection(relay.upstream.transport)
            if conn is not None:
                details.tls = handshake_info(
                    conn, verified=not opts.tls_config.insecure_skip_verify
                )
            result.note("TLS Handshake (client) succeeded.")
        await _call(ctx, relay, target, opts, metadata, deadline, details, result)
    finally:
        relay.close()


async def _call(
    ctx: ProbeContext,
    relay: _Relay,
    target: GRPCTarget,
    opts: GRPCProbe,
    metadata: list[tuple[str, str | bytes]],
    deadline: float,
    details: GRPCDetails,
    result: ProbeResult,
) -> None:
    grpc, health_pb2, health_pb2_grpc = _GRPCIO or await _load_grpcio(ctx)
    clock = ctx.clock.monotonic
    relay.authority = target.authority(opts.tls)
    try:
        where = relay.listen()
    except OSError as exc:  # a local problem (out of descriptors): ours
        result.fail("error", f"grpc: relay socket: {exc.strerror or exc}")
        return
    channel = grpc.insecure_channel(
        where,
        options=[
            ("grpc.default_authority", relay.authority),
            ("grpc.enable_retries", 0),
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        result.note("Sending health check", service=opts.service)
        sent = clock()
        remaining = max(deadline - sent, 0.001)
        future = stub.Check.future(
            health_pb2.HealthCheckRequest(service=opts.service),
            timeout=remaining,
            metadata=metadata or None,
        )
        done = await _completion(ctx, future, remaining + GRACE)
        if done is None:
            details.status_code = DEADLINE_EXCEEDED
            result.fail("timeout", "health check: timed out")
            return
        code = future.code()
        details.status_code = int(code.value[0])
        if code != grpc.StatusCode.OK:
            _failed_call(relay, future, details, result)
            return
        details.rpc = clock() - sent
        status = future.result().status
        name = SERVING_STATUSES[status] if 0 <= status < len(SERVING_STATUSES) else "UNKNOWN"
        details.serving_status = name
        details.ssl = details.tls is not None
        result.note("Health check answered", serving_status=name)
        if name == "SERVING":
            result.success, result.result = True, "success"
        else:
            result.fail("protocol_error", f"health check: serving status {name}")
    finally:
        channel.close()


#: (grpc, health_pb2, health_pb2_grpc) once imported
_GRPCIO: tuple[Any, Any, Any] | None = None


def _import_grpcio() -> tuple[Any, Any, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return grpc, health_pb2, health_pb2_grpc


async def _load_grpcio(ctx: ProbeContext) -> tuple[Any, Any, Any]:
    """grpcio, imported by the first grpc probe in a thread of the reactor's pool: the import
    takes some 60 ms of CPU, which on the reactor thread would hold every other probe back
    (an exporter without grpc modules never loads it)."""
    global _GRPCIO
    reactor = cast(Any, ctx.reactor)
    found = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), _import_grpcio)
    _GRPCIO = found
    return found


def _failed_call(relay: _Relay, future: Any, details: GRPCDetails, result: ProbeResult) -> None:
    """A call that ended with an error status: grpcio's words, but about the target (its
    connection is the relay's socket, whose name means nothing to a reader)."""
    name = future.code().name
    said = str(future.details() or "")
    if relay.name:
        said = said.replace(f"unix-abstract:{relay.name}", relay.authority)
    if details.status_code == UNAVAILABLE and relay.upstream_lost is not None:
        said = "the server closed the connection"
    text = f"health check: {name}: {said}" if said else f"health check: {name}"
    result.fail("timeout" if details.status_code == DEADLINE_EXCEEDED else "protocol_error", text)


def _completion(ctx: ProbeContext, future: Any, wait: float) -> Deferred[Any]:
    """Fire on the reactor with ``future`` once grpcio completes it, or None after ``wait``.

    grpcio calls back from its own thread (or from this one if the call is already over):
    ``callFromThread`` hands the event to the reactor either way.
    """
    reactor = cast(Any, ctx.reactor)

    def cancel(_: Deferred[Any]) -> None:
        if timer.active():
            timer.cancel()
        future.cancel()

    d: Deferred[Any] = Deferred(cancel)

    def fire(value: Any) -> None:
        if not d.called:
            if timer.active():
                timer.cancel()
            d.callback(value)

    def expired() -> None:
        future.cancel()
        fire(None)

    timer = ctx.reactor.callLater(wait, expired)
    future.add_done_callback(lambda f: reactor.callFromThread(fire, f))
    return d


def _metadata(pairs: Metadata) -> list[tuple[str, str | bytes]]:
    """The request's metadata as grpcio takes it: keys lower-case, ``-bin`` values as bytes."""
    out: list[tuple[str, str | bytes]] = []
    for key, values in pairs:
        name = key.lower()
        if not name or any(c not in _KEY_CHARS for c in name):
            raise ValueError(f"metadata: key {key!r} is not a valid gRPC metadata key")
        for value in values:
            if name.endswith("-bin"):
                out.append((name, value.encode("utf-8")))
            elif not value.isascii() or not value.isprintable():
                raise ValueError(f"metadata: the value of {key!r} is not printable ASCII")
            else:
                out.append((name, value))
    return out


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


# the relay: grpcio's side on a Unix socket, the target's side on the connected socket


class _Side(Protocol):
    """One end of the relay: what it receives goes to the other end."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.other: _Side | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None and other.lost is None:
            other.transport.write(data)
            return
        self.pending_bytes += len(data)
        if self.pending_bytes > MAX_PENDING:
            cast(Any, self.transport).abortConnection()
            return
        self.pending.append(data)

    def flush_to(self, other: _Side) -> None:
        self.other = other
        assert other.transport is not None
        for chunk in self.pending:
            other.transport.write(chunk)
        self.pending.clear()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = reason
        other = self.other
        if other is not None and other.transport is not None and other.lost is None:
            cast(Any, other.transport).loseConnection()
        self.relay.side_lost(self, reason)


@implementer(IHandshakeListener)
class _Upstream(_Side):
    def handshakeCompleted(self) -> None:
        self.relay.handshake_done(None)


@implementer(IOpenSSLClientConnectionCreator)
class _H2Creator:
    """The module's TLS client settings, offering ALPN ``h2`` as gRPC requires."""

    def __init__(self, inner: IOpenSSLClientConnectionCreator) -> None:
        self._inner = inner

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = self._inner.clientConnectionForTLS(tlsProtocol)
        conn.set_alpn_protos([b"h2"])
        return conn


@implementer(IReadDescriptor)
class _Listener:
    """A Unix socket in the abstract namespace (no file to clean up, even after a kill) that
    accepts grpcio's one connection, then closes. Only a connection from this process is taken
    (``SO_PEERCRED``): anything else on the host that finds the name is hung up on, as the
    relay speaks with the module's TLS client identity."""

    def __init__(self, relay: _Relay, reactor: ProbeReactor, name: str) -> None:
        self._relay = relay
        self._reactor = reactor
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind("\0" + name)
            sock.listen(4)
        except OSError:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        reactor.addReader(self)

    def fileno(self) -> int:
        return -1 if self.sock is None else self.sock.fileno()

    def logPrefix(self) -> str:
        return "grpc-relay"

    def doRead(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if _peer_pid(conn) != os.getpid():
                conn.close()
                continue
            self.close()
            self._relay.accepted(conn)

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self._reactor.removeReader(self)
            self.sock.close()
            self.sock = None


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _peer_pid(conn: socket.socket) -> int:
    """The process at the other end of a Unix connection, -1 when it cannot be told."""
    try:
        pid, _, _ = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except (OSError, AttributeError, struct.error):
        return -1
    return int(pid)


class _Relay:
    """Bytes between grpcio's connection and the probe's, both on the reactor."""

    def __init__(self, reactor: ProbeReactor) -> None:
        self._reactor = reactor
        self.upstream = _Upstream(self)
        self.downstream = _Side(self)
        self.upstream_lost: Failure | None = None
        self.timed_out = False
        self._handshake: Deferred[bool] | None = None
        self._listener: _Listener | None = None
        #: the abstract Unix socket grpcio connects to, and the target it stands for
        self.name = ""
        self.authority = ""

    def open(self, ctx: ProbeContext, sock: socket.socket, creator: Any) -> None:
        from netprobe_exporter.probes.connect import adopt

        factory: Any = Factory.forProtocol(lambda: self.upstream)
        if creator is not None:
            self._handshake = Deferred()
            factory = TLSMemoryBIOFactory(_H2Creator(creator), True, factory)
        adopt(ctx, sock, factory)

    def handshake(self, timeout: float) -> Deferred[bool]:
        """Fire True once the TLS handshake is done, False if it failed or timed out."""
        assert self._handshake is not None
        d = self._handshake

        def expired() -> None:
            self.timed_out = True
            self.handshake_done(Failure(TimeoutError("timed out")))

        timer = self._reactor.callLater(max(timeout, 0.0), expired)

        def settled(outcome: object) -> object:
            if timer.active():
                timer.cancel()
            return outcome  # cancelled (a Failure) as well as done

        return d.addBoth(settled)

    def handshake_done(self, failure: Failure | None) -> None:
        d, self._handshake = self._handshake, None
        if d is not None and not d.called:
            d.callback(failure is None)

    def why(self) -> str:
        if self.timed_out:
            return "timed out"
        return self.upstream_lost.getErrorMessage() if self.upstream_lost else "closed"

    def listen(self) -> str:
        """Open the relay's socket; the grpcio target that reaches it."""
        self.name = f"netprobe-grpc-{os.getpid()}-{_NONCE}-{next(_SEQ)}"
        self._listener = _Listener(self, self._reactor, self.name)
        return f"unix-abstract:{self.name}"

    def accepted(self, conn: socket.socket) -> None:
        try:
            factory = Factory.forProtocol(lambda: self.downstream)
            self._reactor.adoptStreamConnection(conn.fileno(), socket.AF_UNIX, factory)
        finally:
            conn.close()
        if self.upstream.lost is not None:
            cast(Any, self.downstream.transport).loseConnection()
            return
        self.upstream.flush_to(self.downstream)
        self.downstream.flush_to(self.upstream)
        up, down = cast(Any, self.upstream.transport), cast(Any, self.downstream.transport)
        up.registerProducer(down, True)
        down.registerProducer(up, True)

    def side_lost(self, side: _Side, reason: Failure) -> None:
        if side is self.upstream:
            self.upstream_lost = reason
            self.handshake_done(reason)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for side in (self.downstream, self.upstream):
            if side.transport is not None and side.lost is None:
                cast(Any, side.transport).abortConnection()


#: relay socket names: unguessable per process, unique per probe
_NONCE = secrets.token_hex(8)
_SEQ = itertools.count()


# options


@dataclass(frozen=True, slots=True)
class _MetadataKind(Kind[Metadata]):
    """``metadata``: keys each with a list of values (blackbox's ``map[string][]string``);
    values of credential-like keys (``authorization``…) are shown as ``<secret>``."""

    def read(self, c: Checker, node: yaml.Node, path: str) -> Metadata | None:
        if not isinstance(node, yaml.MappingNode):
            if is_null(node):
                return ()
            c.error(node, path, "must be a mapping of keys to lists of strings")
            return None
        out: list[tuple[str, tuple[str, ...]]] = []
        for knode, vnode in node.value:
            key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
            values = c.strings(vnode, key_path(path, key))
            if key and values is not None:
                out.append((key, values))
        return tuple(out)

    def dump(self, value: Metadata) -> object:
        return {k: [REDACTED] * len(v) if is_secret_header(k) else list(v) for k, v in value}

    def holds_secret(self) -> bool:
        return True


OPTIONS = Section(
    GRPCProbe(),
    (
        Opt("service", STRING),
        Opt("tls", BOOL),
        TLS_OPTION,
        *ADDRESSING,
        *RESOLVING,
        Opt("metadata", _MetadataKind()),
    ),
)


def _families(options: Options) -> tuple[Family, ...]:
    assert isinstance(options, GRPCProbe)
    own = (HANDSHAKE, RPC, STATUS, SERVING)
    return (*own, *tls_.FAMILIES) if options.tls else own


@dataclass(frozen=True, slots=True)
class _GRPCSpec(ProberSpec):
    """The grpc prober's declaration: a module without a ``grpc:`` section gets
    ``NO_SECTION``, as in blackbox, not the section's defaults."""

    @property
    def default(self) -> Options:
        return NO_SECTION

    def parse(self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node) -> Options:
        if node is None:
            return NO_SECTION
        return self.options.read_or_default(c, node, path, where)


PROBER = probes.register(
    _GRPCSpec(
        name="grpc",
        options=OPTIONS,
        check_address=check_address,
        target_host=target_host,
        probe=probe,
        families=(HANDSHAKE, RPC, STATUS, SERVING, *tls_.FAMILIES),
        families_for=_families,
        blackbox_families=BLACKBOX_FAMILIES,
    )
)

__all__ = ["OPTIONS", "PROBER", "GRPCDetails", "GRPCProbe", "check_address", "parse_target"]
