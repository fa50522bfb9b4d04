"""Network namespaces for tests that need a real network path with known behaviour.

``RoutedNamespace.create()`` builds, in the root namespace::

    root ns  veth <root_ip>/30  <==>  veth <ns_ip>/30  test ns (forwarding on)
             route <blackhole_net>   via <ns_ip>        route blackhole   <blackhole_net>
             route <unreachable_net> via <ns_ip>        route unreachable <unreachable_net>

so a SYN sent to ``blackhole_ip`` is silently dropped (a connect times out) and a SYN sent to
``unreachable_ip`` is answered with ICMP host unreachable (a connect fails with EHOSTUNREACH).
All addresses lie in 198.18.0.0/15 (RFC 2544 benchmarking, never routed on the Internet); the
third octet and the names are random, so parallel runs on one machine do not collide.

``destroy()`` removes the routes, the veth pair and the namespace, tolerating parts that were
never created, so it is safe to call after a failed ``create()``. Needs root and iproute2.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import unittest
from collections.abc import Sequence
from dataclasses import dataclass, field

_CMD_TIMEOUT = 10.0
_MAX_SUBNET_TRIES = 32


class NetnsUnavailable(Exception):
    """Namespaces cannot be built here (not root, no ``ip``, or the kernel refused)."""


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False
    )
    if check and proc.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they probably can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need the 'ip' command (iproute2)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the calling test, or fail it when the CI environment variable is set."""
    if os.environ.get("CI"):
        raise AssertionError(f"CI is set, so this must not be skipped: {reason}")
    raise unittest.SkipTest(reason)


def _subnet_in_use(octet: int) -> bool:
    prefix = f"198.18.{octet}."
    for args in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        if prefix in _run(args, check=False).stdout:
            return True
    return False


@dataclass
class RoutedNamespace:
    name: str
    veth_root: str
    veth_ns: str
    octet: int
    #: undo steps run by destroy(), most recent first
    _undo: list[list[str]] = field(default_factory=list)

    @property
    def root_ip(self) -> str:
        return f"198.18.{self.octet}.1"

    @property
    def ns_ip(self) -> str:
        return f"198.18.{self.octet}.2"

    @property
    def blackhole_net(self) -> str:
        return f"198.18.{self.octet}.16/28"

    @property
    def blackhole_ip(self) -> str:
        """SYNs to this address are dropped without an answer."""
        return f"198.18.{self.octet}.17"

    @property
    def unreachable_net(self) -> str:
        return f"198.18.{self.octet}.32/28"

    @property
    def unreachable_ip(self) -> str:
        """SYNs to this address are answered with ICMP host unreachable."""
        return f"198.18.{self.octet}.33"

    @classmethod
    def create(cls) -> RoutedNamespace:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        token = secrets.token_hex(4)
        rng = random.Random()
        for _ in range(_MAX_SUBNET_TRIES):
            octet = rng.randrange(0, 256)
            if not _subnet_in_use(octet):
                break
        else:
            raise NetnsUnavailable("no free 198.18.x.0/24 subnet found")
        # interface names are limited to 15 characters: "npt" + 8 + 1 = 12
        ns = cls(name=f"npt-{token}", veth_root=f"npt{token}r", veth_ns=f"npt{token}n", octet=octet)
        try:
            ns._build()
        except BaseException:
            ns.destroy()
            raise
        return ns

    def _step(self, do: list[str], undo: list[str] | None = None) -> None:
        _run(do)
        if undo is not None:
            self._undo.insert(0, undo)

    def _build(self) -> None:
        n, vr, vn = self.name, self.veth_root, self.veth_ns
        self._step(["ip", "netns", "add", n], ["ip", "netns", "delete", n])
        self._step(
            ["ip", "link", "add", vr, "type", "veth", "peer", "name", vn, "netns", n],
            ["ip", "link", "delete", vr],
        )
        self._step(["ip", "addr", "add", f"{self.root_ip}/30", "dev", vr])
        self._step(["ip", "link", "set", vr, "up"])
        self._step(["ip", "-n", n, "link", "set", "lo", "up"])
        self._step(["ip", "-n", n, "addr", "add", f"{self.ns_ip}/30", "dev", vn])
        self._step(["ip", "-n", n, "link", "set", vn, "up"])
        # Forwarding on, so that the unreachable route answers with ICMP (with forwarding off the
        # kernel drops unroutable packets silently); the blackhole route drops in every case.
        # Written through /proc rather than sysctl(8): procps may be missing on a fresh machine.
        self._step(
            [
                "ip", "netns", "exec", n,
                "/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ]
        )  # fmt: skip
        self._step(["ip", "-n", n, "route", "add", "blackhole", self.blackhole_net])
        self._step(["ip", "-n", n, "route", "add", "unreachable", self.unreachable_net])
        for net in (self.blackhole_net, self.unreachable_net):
            self._step(
                ["ip", "route", "add", net, "via", self.ns_ip, "dev", vr],
                ["ip", "route", "delete", net, "via", self.ns_ip, "dev", vr],
            )

    def destroy(self) -> None:
        """Undo everything create() did; errors are ignored (the part may already be gone)."""
        undo, self._undo = self._undo, []
        for args in undo:
            _run(args, check=False)
        # belt and braces: whatever a half-finished build left behind
        _run(["ip", "link", "delete", self.veth_root], check=False)
        _run(["ip", "netns", "delete", self.name], check=False)

    def exists(self) -> bool:
        """Whether any part (namespace or root-side veth) is still present."""
        names = _run(["ip", "netns", "list"], check=False).stdout.split()
        link = _run(["ip", "link", "show", self.veth_root], check=False)
        return self.name in names or link.returncode == 0


def routed_namespace_or_skip() -> RoutedNamespace:
    """Build a RoutedNamespace; skip the test when that is impossible (fail when CI is set)."""
    try:
        return RoutedNamespace.create()
    except NetnsUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail always raises
