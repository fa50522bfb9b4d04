"""The unix prober: connect to a Unix-domain stream socket, then tcp's TLS and query_response.

As blackbox_exporter 0.28's unix prober: the target is the socket's path (``@name`` for
Linux's abstract namespace, as Go writes it), nothing is resolved, and the conversation is the
tcp prober's own (``tcp.converse``), with its limits. TLS over the socket checks the
certificate against ``tls_config.server_name``: a path is no host name (blackbox checks the
path and fails), so without ``server_name`` or ``insecure_skip_verify`` the probe fails saying
so. ``probe_policy`` sees the path as a name with no address: no network rule matches it, so
an ``allow`` list refuses it unless one of its host patterns (``*``) does.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import ClassVar

from twisted.internet.defer import Deferred

from netprobe_exporter import probes
from netprobe_exporter.model import Module, Options
from netprobe_exporter.probes import (
    ProbeContext,
    ProbeResult,
    ProberSpec,
    options_of,
    run_probe,
)
from netprobe_exporter.probes import tls as tls_
from netprobe_exporter.probes.connect import classify, strerror
from netprobe_exporter.probes.tcp import (
    CONVERSATION_FAMILIES,
    QUERY_RESPONSE,
    QueryResponse,
    TCPDetails,
    converse,
)
from netprobe_exporter.probes.tls import TLS_OPTION, TLSConfig, creator_or_fail
from netprobe_exporter.schema import BOOL, ListOf, Nested, Opt, Section

#: ``sun_path`` holds 108 bytes on Linux: a path needs its terminating NUL, an abstract name not
_SUN_PATH = 108


@dataclass(slots=True)
class UnixDetails(TCPDetails):
    """tcp's details: blackbox 0.28 writes the conversation's families only once connected."""

    regex_always: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class UnixProbe(Options):
    query_response: tuple[QueryResponse, ...] = ()
    tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)

    @property
    def may_speak_tls(self) -> bool:
        return self.tls or any(q.starttls for q in self.query_response)


def check_address(address: str) -> str | None:
    """Why ``address`` is not a Unix socket path (or ``@abstract`` name), or None."""
    if not address:
        return "a unix target is the socket's path, and it is empty"
    if "\0" in address:
        return "a unix socket path cannot hold a NUL byte"
    if "://" in address:
        return f'"{address}" is a URL: a unix target is the socket\'s path, e.g. /run/app.sock'
    size = len(address.encode("utf-8", "surrogateescape"))
    limit = _SUN_PATH if address.startswith("@") else _SUN_PATH - 1
    if size > limit:
        return f"a unix socket path holds at most {limit} bytes, this one has {size}"
    return None


def _sockaddr(address: str) -> str | bytes:
    if address.startswith("@"):  # Go's spelling of an abstract socket
        return b"\0" + address[1:].encode("utf-8", "surrogateescape")
    return address


def _dial(ctx: ProbeContext, address: str, result: ProbeResult) -> socket.socket | None:
    """The connected socket, or None with ``result`` failed. A Unix connect completes (or
    fails) in the call: there is no handshake to wait for."""
    result.note("Dialing unix socket", path=address)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        result.fail("error", f"socket: {exc.strerror}")
        return None
    sock.setblocking(False)
    clock = ctx.clock.monotonic
    started = clock()
    try:
        err = sock.connect_ex(_sockaddr(address))
    except OSError as exc:
        err = exc.errno or errno.EINVAL
    if err:
        sock.close()
        result.fail(classify(err), _dial_error(address, err))
        return None
    result.connect_duration = clock() - started
    result.note("Successfully dialed", seconds=f"{result.connect_duration:.6f}")
    return sock


def _dial_error(address: str, err: int) -> str:
    if err == errno.ENOENT:
        return f'connect: no socket at "{address}" ({strerror(err)})'
    if err in (errno.EACCES, errno.EPERM):
        return f'permission denied connecting to unix socket "{address}" ({strerror(err)})'
    if err == errno.EAGAIN:
        return f'connect: the listener of "{address}" has a full backlog ({strerror(err)})'
    return f'connect to "{address}": {strerror(err)}'


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Probe the Unix socket at ``address`` within ``timeout`` seconds."""
    opts = options_of(module, UnixProbe)
    return run_probe(
        ctx, lambda result, started: _run(ctx, address, opts, timeout, started, result)
    )


async def _run(
    ctx: ProbeContext,
    address: str,
    opts: UnixProbe,
    timeout: float,
    started: float,
    result: ProbeResult,
) -> None:
    details = result.details = UnixDetails()
    problem = check_address(address)
    if problem is not None:
        result.fail("error", problem)
        return
    if ctx.policy is not None:
        refused = ctx.policy(address, "")
        if refused is not None:
            result.policy_refused = refused
            result.fail("error", f"refused by probe_policy: {refused}")
            return
    creator = None
    if opts.may_speak_tls:
        cfg = opts.tls_config
        if not cfg.server_name and not cfg.insecure_skip_verify:
            result.fail(
                "error",
                "tls_config: a unix socket has no host name to check the certificate "
                "against: set server_name (or insecure_skip_verify)",
            )
            return
        creator = creator_or_fail(cfg, cfg.server_name or "", result)
        if creator is None:
            return
    sock = _dial(ctx, address, result)
    if sock is None:
        return
    if not opts.tls and not opts.query_response:
        sock.close()
        details.dialed = True
        result.success, result.result = True, "success"
        return
    remaining = timeout - (ctx.clock.monotonic() - started)
    await converse(ctx, sock, creator, opts, remaining, details, result)


OPTIONS = Section(
    UnixProbe(),
    (
        Opt("query_response", ListOf(Nested(QUERY_RESPONSE))),
        Opt("tls", BOOL),
        TLS_OPTION,
    ),
)


def _families(options: Options) -> tuple[probes.Family, ...]:
    assert isinstance(options, UnixProbe)
    return tls_.FAMILIES if options.may_speak_tls else ()


PROBER = probes.register(
    ProberSpec(
        name="unix",
        options=OPTIONS,
        check_address=check_address,
        probe=probe,
        families=tls_.FAMILIES,
        families_for=_families,
        blackbox_families=(*CONVERSATION_FAMILIES, *tls_.BLACKBOX_FAMILIES),
    )
)
