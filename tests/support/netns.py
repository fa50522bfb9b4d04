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
import sys
import unittest
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

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


def _free_octet(rng: random.Random) -> int:
    """A third octet whose 198.18.x.0/24 no address or route of this machine uses."""
    for _ in range(_MAX_SUBNET_TRIES):
        octet = rng.randrange(0, 256)
        if not _subnet_in_use(octet):
            return octet
    raise NetnsUnavailable("no free 198.18.x.0/24 subnet found")


@dataclass
class _VethNamespace:
    """A namespace joined to the root one by a veth pair, 198.18.<o>.1/30 <=> .2/30, built
    step by step with each step's undo kept, so that ``destroy`` takes down what was made."""

    name: str
    veth_root: str
    veth_ns: str
    octet: int
    #: undo steps run by destroy(), most recent first
    _undo: list[list[str]] = field(default_factory=list, kw_only=True)

    @property
    def root_ip(self) -> str:
        return f"198.18.{self.octet}.1"

    @property
    def ns_ip(self) -> str:
        return f"198.18.{self.octet}.2"

    def _step(self, do: list[str], undo: list[str] | None = None) -> None:
        _run(do)
        if undo is not None:
            self._undo.insert(0, undo)

    def _join(self) -> None:
        """The namespace, the veth pair and its IPv4 addresses, the root side and lo up."""
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


@dataclass
class RoutedNamespace(_VethNamespace):
    """A namespace the root one routes a blackhole and an unreachable subnet through."""

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
        octet = _free_octet(random.Random())
        # interface names are limited to 15 characters: "npt" + 8 + 1 = 12
        ns = cls(name=f"npt-{token}", veth_root=f"npt{token}r", veth_ns=f"npt{token}n", octet=octet)
        try:
            ns._build()
        except BaseException:
            ns.destroy()
            raise
        return ns

    def _build(self) -> None:
        n, vr, vn = self.name, self.veth_root, self.veth_ns
        self._join()
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


def routed_namespace_or_skip() -> RoutedNamespace:
    """Build a RoutedNamespace; skip the test when that is impossible (fail when CI is set)."""
    try:
        return RoutedNamespace.create()
    except NetnsUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail always raises


#: a TCP listener for ``ip netns exec``: on ``[::]:PORT`` (IPv4 too), accepts and closes,
#: prints "ready" once listening, exits after SECONDS or when stdin closes
TCP_LISTENER = """
import os, selectors, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
s.listen(4096)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ, "accept")
sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
print("ready", flush=True)
end = time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    for key, _ in sel.select(min(left, 1.0)):
        if key.data == "stdin":
            if not os.read(sys.stdin.fileno(), 4096):
                sys.exit(0)
            continue
        conn, _ = s.accept()
        conn.close()
"""


@dataclass
class HostsNamespace(_VethNamespace):
    """A namespace of "hosts": several IPv4 and IPv6 addresses behind one veth, routed to::

        root ns  veth 198.18.<o>.1/30    <==>  veth 198.18.<o>.2/30    hosts ns
                      <ula>:0::1/64                 <ula>:0::2/64
                 route 198.18.<o>.64/27 via .2      198.18.<o>.65, .66, ...   (/32 each)
                 route <ula>:1::/64 via <ula>:0::2  <ula>:1::1, ::2, ...      (/128 each)

    ``<ula>`` is ``fd00:XXXX:XXXX``, random, as the third octet is; addresses are added without
    duplicate address detection, so they are usable at once. ``destroy()`` deletes the
    namespace (the veth pair and the root's routes through it go with it), tolerating parts
    never made. Needs root and iproute2 (and iptables for ``drop_tcp``).
    """

    ula: str
    ip4_count: int
    ip6_count: int

    @property
    def root_ip6(self) -> str:
        return f"{self.ula}:0::1"

    @property
    def ns_ip6(self) -> str:
        return f"{self.ula}:0::2"

    @property
    def hosts_net(self) -> str:
        return f"198.18.{self.octet}.64/27"

    @property
    def hosts_net6(self) -> str:
        return f"{self.ula}:1::/64"

    @property
    def ip4(self) -> list[str]:
        """The IPv4 host addresses, in order."""
        return [f"198.18.{self.octet}.{65 + i}" for i in range(self.ip4_count)]

    @property
    def ip6(self) -> list[str]:
        """The IPv6 host addresses, in order (as ``ipaddress`` writes them)."""
        return [f"{self.ula}:1::{i + 1:x}" for i in range(self.ip6_count)]

    @classmethod
    def create(cls, ip4_count: int = 5, ip6_count: int = 2) -> HostsNamespace:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        if not 0 < ip4_count <= 30 or not 0 <= ip6_count <= 0xFFFF:
            raise ValueError(f"{ip4_count} IPv4 and {ip6_count} IPv6 hosts do not fit")
        rng = random.Random()
        octet = _free_octet(rng)
        token = secrets.token_hex(4)
        ula = f"fd00:{rng.randrange(1, 0x10000):x}:{rng.randrange(1, 0x10000):x}"
        hosts = cls(name=f"nph-{token}", veth_root=f"nph{token}r", veth_ns=f"nph{token}n",
                    octet=octet, ula=ula, ip4_count=ip4_count, ip6_count=ip6_count)  # fmt: skip
        try:
            hosts._build()
        except BaseException:
            hosts.destroy()
            raise
        return hosts

    def command(self, *args: str) -> list[str]:
        """``args`` as a command run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(self.command(*args), check=check)

    def listener_command(self, port: int, seconds: float = 120.0) -> list[str]:
        """A TCP listener on every address of the namespace (``TCP_LISTENER``) as a command."""
        return self.command(sys.executable, "-c", TCP_LISTENER, str(port), str(seconds))

    def _build(self) -> None:
        n, vr, vn = self.name, self.veth_root, self.veth_ns
        self._join()
        self._step(["ip", "-6", "addr", "add", f"{self.root_ip6}/64", "dev", vr, "nodad"])
        self._step(["ip", "-n", n, "-6", "addr", "add", f"{self.ns_ip6}/64", "dev", vn, "nodad"])
        for ip in self.ip4:
            self._step(["ip", "-n", n, "addr", "add", f"{ip}/32", "dev", vn])
        for ip in self.ip6:
            self._step(["ip", "-n", n, "-6", "addr", "add", f"{ip}/128", "dev", vn, "nodad"])
        self._step(["ip", "-n", n, "link", "set", vn, "up"])
        for family, net, via in (("-4", self.hosts_net, self.ns_ip),
                                 ("-6", self.hosts_net6, self.ns_ip6)):  # fmt: skip
            self._step(
                ["ip", family, "route", "add", net, "via", via, "dev", vr],
                ["ip", family, "route", "delete", net, "via", via, "dev", vr],
            )

    def drop_tcp(self, ip: str) -> None:
        """Silently drop every TCP segment sent to ``ip`` (a connect to it times out)."""
        tool = "ip6tables" if ":" in ip else "iptables"
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"dropping TCP to {ip} needs {tool}")
        self.exec(tool, "-w", "5", "-A", "INPUT", "-d", ip, "-p", "tcp", "-j", "DROP")

    def dropped_packets(self, ip: str) -> int:
        """Packets the DROP rule for ``ip`` has dropped so far (0 without such a rule)."""
        tool = "ip6tables" if ":" in ip else "iptables"
        out = self.exec(tool, "-w", "5", "-n", "-v", "-x", "-L", "INPUT").stdout
        total = 0
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "DROP" and ip in fields:
                total += int(fields[0])
        return total


def hosts_namespace_or_skip(ip4_count: int = 5, ip6_count: int = 2) -> HostsNamespace:
    """Build a HostsNamespace; skip the test when that is impossible (fail when CI is set)."""
    try:
        return HostsNamespace.create(ip4_count, ip6_count)
    except NetnsUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail always raises


#: a fetch run inside a namespace: prints the status line, then the body
_FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
sys.stdout.write(f"{status}\\n"); sys.stdout.flush(); sys.stdout.buffer.write(body)
"""


@dataclass
class RouterChain:
    """A routed path of namespaces, each link a veth pair, for tests that need real hops::

        client --1-- r1 --2-- r2 --3-- r3 --4-- target
                      \\--5-- r2b --6--/

    Link N is 10.201.N.0/24 and fd00:201:N::/64, the side nearer the client ``.1`` / ``::1``.
    Forwarding is on in the routers and their ICMP rate limits are off (a burst of probes is
    answered in full). ``r2`` drops the time-exceeded messages it would send (a silent hop);
    ``switch()`` makes ``r1`` send towards the target through ``r2b`` instead of ``r2``.
    Everything lives in namespaces the chain creates (addresses never reach the root one);
    ``destroy()`` deletes them, which deletes their links too. Needs root and iproute2.
    """

    token: str
    _made: list[str] = field(default_factory=list)

    ROLES: ClassVar[tuple[str, ...]] = ("client", "r1", "r2", "r3", "target", "r2b")
    #: link number: (namespace nearer the client, the other)
    LINKS: ClassVar[dict[int, tuple[str, str]]] = {
        1: ("client", "r1"), 2: ("r1", "r2"), 3: ("r2", "r3"), 4: ("r3", "target"),
        5: ("r1", "r2b"), 6: ("r2b", "r3"),
    }  # fmt: skip

    def ns(self, role: str) -> str:
        return f"npc-{self.token}-{role}"

    @staticmethod
    def ip(link: int, side: int, v6: bool = False) -> str:
        """The address on ``link`` of its side 1 (nearer the client) or 2."""
        return f"fd00:201:{link}::{side}" if v6 else f"10.201.{link}.{side}"

    @property
    def target_ip(self) -> str:
        return self.ip(4, 2)

    @property
    def target_ip6(self) -> str:
        return self.ip(4, 2, v6=True)

    def hops(self, v6: bool = False, switched: bool = False) -> list[str | None]:
        """What each hop should answer from (None: silent), the target last."""
        second = self.ip(5, 2, v6) if switched else None  # r2 drops its time-exceeded
        # r3 answers over IPv4 from the link its way back leaves by (link 3, through r2, either
        # way), over IPv6 from the link the packet came in by
        third = self.ip(6 if v6 and switched else 3, 2, v6)
        return [self.ip(1, 2, v6), second, third, self.ip(4, 2, v6)]

    @classmethod
    def create(cls) -> RouterChain:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                raise NetnsUnavailable(f"the router chain needs {tool}")
        chain = cls(secrets.token_hex(3))
        try:
            chain._build()
        except BaseException:
            chain.destroy()
            raise
        return chain

    def exec(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.ns(role), *args], check=check)

    def _sysctl(self, role: str, path: str, value: str) -> None:
        # through /proc rather than sysctl(8): procps may be missing on a fresh machine
        self.exec(role, "/bin/sh", "-c", f"echo '{value}' > /proc/sys/{path}")

    def _build(self) -> None:
        for role in self.ROLES:
            _run(["ip", "netns", "add", self.ns(role)])
            self._made.append(self.ns(role))
            _run(["ip", "-n", self.ns(role), "link", "set", "lo", "up"])
            self._sysctl(role, "net/ipv6/conf/all/accept_dad", "0")
            self._sysctl(role, "net/ipv6/conf/default/accept_dad", "0")
            self._sysctl(role, "net/ipv4/icmp_ratelimit", "0")
            self._sysctl(role, "net/ipv6/icmp/ratelimit", "0")
        for role in ("r1", "r2", "r3", "r2b"):
            self._sysctl(role, "net/ipv4/ip_forward", "1")
            self._sysctl(role, "net/ipv6/conf/all/forwarding", "1")
        for link, (near, far) in self.LINKS.items():
            a, b = f"l{link}a", f"l{link}b"
            _run(["ip", "-n", self.ns(near), "link", "add", a, "type", "veth",
                  "peer", "name", b, "netns", self.ns(far)])  # fmt: skip
            for role, dev, side in ((near, a, 1), (far, b, 2)):
                n = self.ns(role)
                _run(["ip", "-n", n, "addr", "add", f"{self.ip(link, side)}/24", "dev", dev])
                _run(["ip", "-n", n, "-6", "addr", "add", f"{self.ip(link, side, True)}/64",
                      "dev", dev, "nodad"])  # fmt: skip
                _run(["ip", "-n", n, "link", "set", dev, "up"])
        # towards the target: the default routes; back to the client: its link's prefix
        self._default("client", 1, 2)
        self._default("r1", 2, 2)
        self._default("r2", 3, 2)
        self._default("r2b", 6, 2)
        self._default("r3", 3, 1)  # r3's default points back, through r2
        self._default("target", 4, 1)
        for role, link, side in (("r2", 2, 1), ("r2b", 5, 1)):
            self._prefix(role, 1, link, side)
        self.exec("r2", "iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
                  "time-exceeded", "-j", "DROP")  # fmt: skip
        self.exec("r2", "ip6tables", "-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type",
                  "time-exceeded", "-j", "DROP")  # fmt: skip

    def _default(self, role: str, link: int, side: int) -> None:
        for v6 in (False, True):
            _run(["ip", "-6" if v6 else "-4", "-n", self.ns(role), "route", "replace",
                  "default", "via", self.ip(link, side, v6)])  # fmt: skip

    def _prefix(self, role: str, prefix_link: int, link: int, side: int) -> None:
        for v6 in (False, True):
            prefix = f"fd00:201:{prefix_link}::/64" if v6 else f"10.201.{prefix_link}.0/24"
            _run(["ip", "-6" if v6 else "-4", "-n", self.ns(role), "route", "replace",
                  prefix, "via", self.ip(link, side, v6)])  # fmt: skip

    def switch(self, through_r2b: bool = True) -> None:
        """Send r1's traffic towards the target through r2b (or back through r2)."""
        self._default("r1", 5 if through_r2b else 2, 2)

    def fetch(self, url: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``url`` from inside the client namespace: (status, body)."""
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, "-c", _FETCH, url,
             str(timeout)],
            capture_output=True, text=True, timeout=timeout + _CMD_TIMEOUT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"fetch {url} in {self.ns('client')}: {proc.stderr.strip()}")
        status, _, body = proc.stdout.partition("\n")
        return int(status), body

    def destroy(self) -> None:
        """Delete every namespace made (their links go with them); errors are ignored."""
        made, self._made = self._made, []
        for name in made:
            _run(["ip", "netns", "delete", name], check=False)

    def exists(self) -> bool:
        names = _run(["ip", "netns", "list"], check=False).stdout.split()
        return any(self.ns(role) in names for role in self.ROLES)


def router_chain_or_skip() -> RouterChain:
    """Build a RouterChain; skip the test when that is impossible (fail when CI is set)."""
    try:
        return RouterChain.create()
    except NetnsUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail always raises
