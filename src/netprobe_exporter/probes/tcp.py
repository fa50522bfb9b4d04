"""The tcp prober: can a TCP connection be established, and how long does the handshake take?

The connect is a non-blocking socket registered with the reactor as a write descriptor rather
than ``connectTCP``/endpoints: no protocol, factory or transport objects are built for a
connection that is closed as soon as it opens, which more than halves the CPU per probe.

Where the clock starts and stops, and why:
- start: immediately before ``connect_ex``, which is the syscall that sends the SYN. Everything
  before it (socket creation, bind) is local work, not network latency.
- stop: the first statement of ``doWrite`` (handshake done, socket writable) or
  ``connectionLost`` (Twisted's delivery of EPOLLERR/EPOLLHUP, e.g. a RST answering the SYN).
  The only error left is the reactor's delay in dispatching the event.
- ``TCP_INFO``'s smoothed RTT, read right after the handshake, is the kernel's own measurement
  and is immune even to that delay; it is reported beside the wall-clock figure.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from netprobe_exporter.addresses import parse_host_port
from netprobe_exporter.config import Module
from netprobe_exporter.probes import ProbeContext, ProbeResult

_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_INFO_LEN = 104
_REFUSED = {errno.ECONNREFUSED}
_UNREACHABLE = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.EADDRNOTAVAIL,
}
_TIMEOUT = {errno.ETIMEDOUT}


def classify(err: int) -> str:
    """Map a connect errno to a ``netprobe_probes_total`` result."""
    if err in _REFUSED:
        return "refused"
    if err in _UNREACHABLE:
        return "unreachable"
    if err in _TIMEOUT:
        return "timeout"
    return "error"


def _strerror(err: int) -> str:
    return f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"


def handshake_rtt(sock: socket.socket) -> float | None:
    """The kernel's smoothed RTT (``tcpi_rtt``) in seconds, or None where unavailable."""
    if _TCP_INFO is None:
        return None
    try:
        buf = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(buf) < 8 + 16 * 4:
        return None
    rtt_us: int = struct.unpack_from("8B24I", buf.ljust(_TCP_INFO_LEN, b"\0"))[8 + 15]
    return rtt_us / 1e6


class _Connector:
    """One connection attempt, registered with the reactor as an IWriteDescriptor."""

    def __init__(
        self,
        reactor: Any,
        ip: str,
        port: int,
        source: str | None,
        timeout: float,
        result: ProbeResult,
        started: float,
    ) -> None:
        self._reactor = reactor
        self._result = result
        self._started = started
        self.deferred: Deferred[ProbeResult] = Deferred(self._cancel)
        self._sock: socket.socket | None = None
        self._timer: Any = None
        self._registered = False
        self._t0 = 0.0
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._finish("error", f"socket: {exc.strerror}")
            return
        self._sock = sock
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
        except OSError as exc:  # a local problem (address not ours, wrong family): not the path's
            self._finish("error", f"bind {source}: {exc.strerror}")
            return
        try:
            addr: tuple[Any, ...] = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
            # Clock start: the SYN leaves with this call.
            self._t0 = time.perf_counter()
            err = sock.connect_ex(addr)
        except OSError as exc:
            self._finish(classify(exc.errno or 0), f"connect: {exc.strerror}")
            return
        if err == 0:
            self._connected(time.perf_counter())
            return
        if err != errno.EINPROGRESS:
            self._finish(classify(err), f"connect: {_strerror(err)}")
            return
        self._timer = reactor.callLater(max(timeout, 0.0), self._timed_out)
        reactor.addWriter(self)
        self._registered = True

    # IWriteDescriptor
    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:
        return "tcp-probe"

    def doWrite(self) -> None:
        t1 = time.perf_counter()  # clock stop: the handshake completed (socket writable)
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if self._sock else 0
        self._unregister()
        if err:
            self._finish(classify(err), f"connect: {_strerror(err)}", t1)
        else:
            self._connected(t1)

    def connectionLost(self, reason: Failure) -> None:
        # Twisted reports EPOLLERR/EPOLLHUP (a refused or failed connect) here, not in doWrite.
        t1 = time.perf_counter()
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if self._sock else 0
        self._registered = False
        self._cancel_timer()
        self._finish(classify(err) if err else "error", f"connect: {_strerror(err)}", t1)

    # internals
    def _connected(self, t1: float) -> None:
        self._result.connect_duration = t1 - self._t0
        if self._sock is not None:
            self._result.handshake_rtt = handshake_rtt(self._sock)
        self._result.log.append(f"connected in {self._result.connect_duration:.6f}s")
        self._finish("success", "", t1)

    def _timed_out(self) -> None:
        self._timer = None
        self._unregister()
        self._finish("timeout", "connect: timed out", time.perf_counter())

    def _cancel(self, _: Deferred[ProbeResult]) -> None:
        self._unregister()
        self._close()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _unregister(self) -> None:
        self._cancel_timer()
        if self._registered:
            self._registered = False
            self._reactor.removeWriter(self)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(self, result: str, detail: str, now: float | None = None) -> None:
        self._close()
        r = self._result
        r.result = result
        r.success = result == "success"
        r.detail = detail
        r.duration = (now if now is not None else time.perf_counter()) - self._started
        if detail:
            r.log.append(detail)
        if not self.deferred.called:
            self.deferred.callback(r)


def probe(ctx: ProbeContext, address: str, module: Module, timeout: float) -> Deferred[ProbeResult]:
    """Connect to ``address`` (``host:port``) within ``timeout`` seconds."""
    started = time.perf_counter()
    result = ProbeResult(success=False, result="error", duration=0.0)
    try:
        hp = parse_host_port(address)
    except ValueError as exc:
        result.detail = str(exc)
        result.log.append(result.detail)
        return defer.succeed(result)
    opts = module.tcp
    if hp.ip_version:
        return _connect(ctx, hp.host, hp.port, opts.source_ip_address, timeout, result, started)

    current: list[Deferred[Any]] = []

    def cancel(_: Deferred[ProbeResult]) -> None:
        for d in current:
            d.cancel()

    outer: Deferred[ProbeResult] = Deferred(cancel)
    result.log.append(f"resolving {hp.host} ({opts.preferred_ip_protocol} preferred)")
    resolving = ctx.resolver.resolve(
        hp.host, opts.preferred_ip_protocol, opts.ip_protocol_fallback, timeout
    )
    current.append(resolving)

    def resolved(ip: str) -> None:
        now = time.perf_counter()
        result.resolve_duration = now - started
        result.log.append(f"resolved {hp.host} to {ip} in {result.resolve_duration:.6f}s")
        current.clear()
        connecting = _connect(
            ctx, ip, hp.port, opts.source_ip_address, timeout - (now - started), result, started
        )
        current.append(connecting)
        connecting.addCallbacks(outer.callback, _ignore_cancel)

    def failed(reason: Failure) -> None:
        current.clear()
        if reason.check(defer.CancelledError):
            return
        result.result = "dns_error"
        result.detail = f"resolve: {reason.getErrorMessage()}"
        result.log.append(result.detail)
        result.duration = time.perf_counter() - started
        outer.callback(result)

    resolving.addCallbacks(resolved, failed)
    return outer


def _ignore_cancel(reason: Failure) -> None:
    reason.trap(defer.CancelledError)


def _connect(
    ctx: ProbeContext,
    ip: str,
    port: int,
    source: str | None,
    timeout: float,
    result: ProbeResult,
    started: float,
) -> Deferred[ProbeResult]:
    result.ip = ip
    result.log.append(f"connecting to {ip} port {port}")
    return _Connector(ctx.reactor, ip, port, source, timeout, result, started).deferred
