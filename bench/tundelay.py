"""A TCP path with a known, per-destination delay, for measuring probers' connect-latency error.

``tc netem`` is not compiled into this kernel, so the delay is made by a process of our own that
plays every remote host: it reads IP packets from a TUN device and answers each TCP SYN with a
SYN-ACK written back exactly D ms after it read the SYN.

Design (all of it inside one network namespace that the rig creates and deletes)::

    network namespace npd-<hex>             (created by DelayRig, deleted on exit)
      lo                 up (so a prober's /metrics listener can use 127.0.0.1 in there)
      npd<hex>t  (TUN)   198.18.5.1/24, route 198.18.6.0/24 dev npd<hex>t
        ^ |
        | v  raw IPv4 packets (IFF_TUN | IFF_NO_PI)
      responder process  (separate process, own GIL; SCHED_FIFO when allowed, timer slack 1 ns;
                          a heap of due replies + select() with a timeout, no busy-waiting)
        SYN to 198.18.6.X:any port  -> SYN-ACK (random ISN, MSS 1460) at read time + D(X)
        FIN or data                  -> RST (seq = the client's ACK) at read time + D(X)
        pure ACK, RST                -> nothing

No veth pair and no route in the root namespace: the prober under test runs *inside* the
namespace (``ip netns exec npd-<hex> CMD``, or in this process with ``rig.entered()``, which moves
the calling thread into the namespace; sockets keep the namespace they were created in). So the
host's routing, firewall and addresses are never touched, parallel rigs cannot collide, and
198.18.6.0/24 exists only in there. The TUN device is not persistent: it disappears with the
responder, and the namespace (with everything in it) is deleted on exit, Ctrl-C, SIGTERM or
SIGHUP, or an exception. Only SIGKILL can leave a namespace behind; ``--cleanup-stale`` deletes
those whose owner process is gone.

The delay is measured where it is made: for every reply the responder records
``write start - (SYN read + D)``, its own scheduling error. A sleeping process here is woken
~100-150 µs after its timer (a VM: the idle vCPU halts and the host resumes it), so by default
the responder aims each sleep that much early (the running median of its observed lateness) and
its error is centred on zero; ``--no-compensate`` turns that off (replies then run late by the
wake-up latency). What a client sees is D plus the kernel path (SYN into the TUN queue and the
responder's wake-up on it, SYN-ACK injection, the client's own wake-up); ``--selftest`` measures
it with plain blocking sockets, with the kernel's own handshake RTT (``tcpi_rtt``, which excludes
the client's wake-up) beside it, and a D = 0 row that shows the rig's floor.

    python bench/tundelay.py --delays 198.18.6.10=5,198.18.6.20=20 --seconds 30
    python bench/tundelay.py --selftest                       # 200 connects per address
    python bench/tundelay.py --seconds 60 -- netprobe-exporter --target=198.18.6.20:80
    python bench/tundelay.py --cleanup-stale

Delay specs: ``IP=MS`` (answer after MS ms), ``IP=refuse:MS`` (RST after MS ms: connection
refused), ``IP=drop`` (never answer: connect times out). Addresses of 198.18.6.0/24 that are not
listed are dropped too. Needs root, iproute2 and /dev/net/tun. Python 3.11 stdlib only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import heapq
import ipaddress
import json
import os
import re
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

CLIENT_IP = "198.18.5.1"
CLIENT_PREFIX = 24
PATH_NET = ipaddress.IPv4Network("198.18.6.0/24")
DEFAULT_DELAYS = "198.18.6.1=0,198.18.6.10=5,198.18.6.20=20"
MSS = 1460
OWNER_DIR = Path("/run/npd-bench")

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_PR_SET_TIMERSLACK = 29
_CLONE_NEWNET = 0x40000000
_CMD_TIMEOUT = 10.0
_READY_TIMEOUT = 10.0
_CONTROL_TIMEOUT = 5.0
_MAX_SAMPLES = 1_000_000  # per destination; further replies are counted but not kept
_READ_BATCH = 256  # packets read per wake-up at most, so due replies are never starved

# TCP flags
_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class RigError(Exception):
    """The rig could not be built or its responder failed."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Action:
    """What the far end does with a SYN: ``accept`` or ``refuse`` after ``delay_ms``, or drop."""

    kind: str  # "accept" | "refuse" | "drop"
    delay_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "delay_ms": self.delay_ms}


def _check_ip(text: str) -> str:
    ip = ipaddress.IPv4Address(text.strip())
    if ip not in PATH_NET or ip in (PATH_NET.network_address, PATH_NET.broadcast_address):
        raise ValueError(f"{ip}: must be a host address in {PATH_NET}")
    return str(ip)


def parse_delays(spec: str) -> dict[str, Action]:
    """``198.18.6.10=5,198.18.6.20=refuse:20,198.18.6.30=drop`` -> {ip: Action}."""
    out: dict[str, Action] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        ip_text, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: expected IP=MS, IP=refuse:MS or IP=drop")
        ip = _check_ip(ip_text)
        value = value.strip().lower()
        if value == "drop":
            action = Action("drop")
        else:
            kind = "accept"
            if value.startswith("refuse:"):
                kind, value = "refuse", value.removeprefix("refuse:")
            delay = float(value)
            if not 0.0 <= delay <= 60_000.0:
                raise ValueError(f"{item!r}: delay must be within 0..60000 ms")
            action = Action(kind, delay)
        if ip in out:
            raise ValueError(f"{ip}: listed twice")
        out[ip] = action
    if not out:
        raise ValueError("no destinations given")
    return out


# --------------------------------------------------------------------------------------------
# Packets


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes = b"",
    ip_id: int = 0,
) -> bytes:
    """An IPv4 + TCP segment without payload, both checksums filled in."""
    doff = (20 + len(options)) // 4
    window = 0 if flags & _RST else 65535
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0)
    tcp += options
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    total = 20 + len(tcp)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, ip_id, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


@dataclass(frozen=True)
class Segment:
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload_len: int


def parse_tcp(packet: bytes) -> Segment | None:
    """The TCP segment in an IPv4 packet, or None for anything else (or a fragment)."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF or total > len(packet):
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", packet, ihl)
    payload_len = total - ihl - (off >> 4) * 4
    if payload_len < 0:
        return None
    return Segment(packet[12:16], packet[16:20], sport, dport, seq, ack, flags, payload_len)


# --------------------------------------------------------------------------------------------
# The responder (runs in its own process, inside the namespace)


def _quantiles_us(values_ns: Sequence[int]) -> dict[str, float | int | None]:
    """n, min, p1, p50, p99, max in µs (nearest rank)."""
    if not values_ns:
        return {"n": 0, "min": None, "p1": None, "p50": None, "p99": None, "max": None}
    ordered = sorted(values_ns)
    n = len(ordered)

    def pick(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1000.0, 1)

    return {
        "n": n,
        "min": round(ordered[0] / 1000.0, 1),
        "p1": pick(0.01),
        "p50": pick(0.50),
        "p99": pick(0.99),
        "max": round(ordered[-1] / 1000.0, 1),
    }


@dataclass
class _DestStats:
    counts: dict[str, int] = field(default_factory=dict)
    #: per reply kind: write start - (SYN read time + D), i.e. the responder's own error
    err_ns: dict[str, list[int]] = field(default_factory=dict)
    write_ns: list[int] = field(default_factory=list)  # duration of the write() itself

    def bump(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


class _WakeLead:
    """How early to aim a timed wake-up so that, on average, it lands on the due time.

    A sleeping process is woken late by a roughly constant latency (here, in a Firecracker VM,
    about 140 µs: the idle vCPU halts and the host must resume it). The responder aims each
    sleep ``lead`` ns before the due time and sends when that aim has passed; ``lead`` is the
    median of the last ``window`` observed lateness values (clipped to ``cap_ns``), so the
    responder's error is centred on zero instead of biased late. No busy-waiting.
    """

    def __init__(self, initial_ns: int, window: int = 101, cap_ns: int = 1_000_000) -> None:
        self.cap_ns = cap_ns
        self.samples: list[int] = [initial_ns]
        self.window = window
        self.lead_ns = min(max(initial_ns, 0), cap_ns)
        self._since = 0
        self.late_ns: list[int] = []  # every observed lateness since the last reset

    def observe(self, late_ns: int) -> None:
        self.samples.append(late_ns)
        if len(self.late_ns) < _MAX_SAMPLES:
            self.late_ns.append(late_ns)
        if len(self.samples) > self.window:
            del self.samples[0]
        self._since += 1
        if self._since >= 8:
            self._since = 0
            ordered = sorted(self.samples)
            self.lead_ns = min(max(ordered[len(ordered) // 2], 0), self.cap_ns)


def _calibrate_wake(rounds: int = 40, sleep_ns: int = 1_000_000) -> int:
    """Median lateness of ``rounds`` timed select() sleeps of ``sleep_ns``."""
    late: list[int] = []
    for _ in range(rounds):
        due = time.monotonic_ns() + sleep_ns
        select.select([], [], [], sleep_ns / 1e9)
        late.append(time.monotonic_ns() - due)
    late.sort()
    return late[len(late) // 2]


class Responder:
    """The far end of every delayed path. One instance per responder process."""

    def __init__(
        self,
        ifname: str,
        actions: Mapping[str, Action],
        deadline_ns: int,
        compensate: bool = True,
    ) -> None:
        self.ifname = ifname
        self.actions = {socket.inet_aton(ip): a for ip, a in actions.items()}
        self.delay_ns = {ip: int(a.delay_ms * 1_000_000) for ip, a in self.actions.items()}
        self.deadline_ns = deadline_ns
        self.compensate = compensate
        self.key = secrets.token_bytes(16)
        self.heap: list[tuple[int, int, bytes, bytes, str]] = []
        self.seq = 0
        self.ip_id = 0
        self.stats = {ip: _DestStats() for ip in self.actions}
        self.other: dict[str, int] = {}
        self.tun = -1
        self.setup: dict[str, Any] = {}
        self.wake = _WakeLead(0)

    # setup ---------------------------------------------------------------------------------
    def open(self, realtime: bool) -> None:
        with contextlib.suppress(OSError):  # fewer stray packets: no IPv6 in the namespace
            for conf in ("all", "default"):
                Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1\n")
        libc = ctypes.CDLL(None, use_errno=True)
        slack_ok = libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0) == 0
        self.setup["timerslack_ns"] = 1 if slack_ok else None
        self.setup["sched"] = "SCHED_OTHER"
        if realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
                self.setup["sched"] = "SCHED_FIFO/50"
            except OSError as exc:
                self.setup["sched_error"] = str(exc)
        calibrated = _calibrate_wake()
        self.setup["wake_latency_us_calibrated"] = round(calibrated / 1000.0, 1)
        self.setup["compensate"] = self.compensate
        if self.compensate:
            self.wake = _WakeLead(calibrated)
        self.tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        ifr = struct.pack("16sH22x", self.ifname.encode(), _IFF_TUN | _IFF_NO_PI)
        fcntl.ioctl(self.tun, _TUNSETIFF, ifr)

    # packets -------------------------------------------------------------------------------
    def _isn(self, seg: Segment) -> int:
        material = seg.src + seg.dst + struct.pack("!HHI", seg.sport, seg.dport, seg.seq)
        return int.from_bytes(hashlib.blake2b(material, key=self.key, digest_size=4).digest())

    def _schedule(self, due: int, dst: bytes, packet: bytes, kind: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, dst, packet, kind))

    def _reply(self, seg: Segment, seq: int, ack: int, flags: int, options: bytes = b"") -> bytes:
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        return build_tcp(
            seg.dst, seg.src, seg.dport, seg.sport, seq, ack, flags, options, self.ip_id
        )

    def handle(self, packet: bytes, t_read: int) -> None:
        seg = parse_tcp(packet)
        if seg is None:
            key = "non_ipv4_tcp"
            self.other[key] = self.other.get(key, 0) + 1
            return
        action = self.actions.get(seg.dst)
        if action is None:
            self.other["unknown_destination"] = self.other.get("unknown_destination", 0) + 1
            return
        st = self.stats[seg.dst]
        due = t_read + self.delay_ns[seg.dst]
        flags = seg.flags
        if flags & _RST:
            st.bump("rst_received")
        elif flags & _SYN and not flags & _ACK:
            st.bump("syn")
            if action.kind == "accept":
                mss = struct.pack("!BBH", 2, 4, MSS)
                pkt = self._reply(seg, self._isn(seg), seg.seq + 1 & 0xFFFFFFFF, _SYN | _ACK, mss)
                self._schedule(due, seg.dst, pkt, "synack")
            elif action.kind == "refuse":
                pkt = self._reply(seg, 0, seg.seq + 1 & 0xFFFFFFFF, _RST | _ACK)
                self._schedule(due, seg.dst, pkt, "refused")
        elif flags & _FIN or seg.payload_len:
            # The client closes (or sends data): reset, so that its socket closes at once and
            # nothing is retransmitted. With ACK set, RST's seq is the client's ACK (RFC 9293),
            # which is exactly its rcv_nxt, so the kernel accepts it without a challenge ACK.
            st.bump("fin_or_data")
            if flags & _ACK and action.kind == "accept":
                self._schedule(due, seg.dst, self._reply(seg, seg.ack, 0, _RST), "rst")
        elif flags & _ACK:
            st.bump("ack")
        else:
            st.bump("other")

    def flush_due(self) -> None:
        """Send every reply whose (lead-adjusted) time has come."""
        heap = self.heap
        while heap and heap[0][0] - self.wake.lead_ns <= time.monotonic_ns():
            due, _, dst, packet, kind = heapq.heappop(heap)
            t_write = time.monotonic_ns()
            try:
                os.write(self.tun, packet)
            except OSError as exc:  # e.g. the device is going down: count, do not die
                key = f"write_error_{exc.errno}"
                self.other[key] = self.other.get(key, 0) + 1
                continue
            t_done = time.monotonic_ns()
            st = self.stats[dst]
            st.bump(kind)
            errs = st.err_ns.setdefault(kind, [])
            if len(errs) < _MAX_SAMPLES:
                errs.append(t_write - due)
                st.write_ns.append(t_done - t_write)

    def read_packets(self) -> None:
        for _ in range(_READ_BATCH):
            try:
                packet = os.read(self.tun, 4096)
            except BlockingIOError:
                return
            self.handle(packet, time.monotonic_ns())

    # control -------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        dests: dict[str, Any] = {}
        for ip, st in self.stats.items():
            a = self.actions[ip]
            connect_kind = "refused" if a.kind == "refuse" else "synack"
            dests[socket.inet_ntoa(ip)] = {
                **a.to_json(),
                "counts": dict(st.counts),
                "error_us": _quantiles_us(st.err_ns.get(connect_kind, [])),
                "close_rst_error_us": _quantiles_us(st.err_ns.get("rst", [])),
                "write_us": _quantiles_us(st.write_ns),
            }
        return {
            "setup": self.setup,
            "wake_lead_us": round(self.wake.lead_ns / 1000.0, 1),
            "timer_late_us": _quantiles_us(self.wake.late_ns),
            "destinations": dests,
            "other": dict(self.other),
        }

    def reset(self) -> None:
        for ip in self.stats:
            self.stats[ip] = _DestStats()
        self.other.clear()
        self.wake.late_ns = []

    def _control(self, line: bytes) -> dict[str, Any] | None:
        cmd = line.decode(errors="replace").strip()
        if cmd == "quit":
            return None
        if cmd == "reset":
            self.reset()
            return {"ok": True}
        if cmd == "stats":
            return self.report()
        return {"error": f"unknown command {cmd!r}"}

    def run(self, ctl_in: int, ctl_out: int) -> None:
        buf = b""
        ready = {"ready": True, "ifname": self.ifname, "pid": os.getpid(), **self.setup}
        os.write(ctl_out, json.dumps(ready).encode() + b"\n")
        while True:
            now = time.monotonic_ns()
            if now >= self.deadline_ns:
                return
            wait_ns = min(self.deadline_ns - now, 500_000_000)
            aim = None
            if self.heap:
                aim = self.heap[0][0] - self.wake.lead_ns
                wait_ns = max(0, min(wait_ns, aim - now))
            # select() takes microseconds: round up, so we do not wake before the aim
            readable, _, _ = select.select([self.tun, ctl_in], [], [], -(-wait_ns // 1000) / 1e6)
            if not readable and aim is not None and wait_ns > 0:
                late = time.monotonic_ns() - aim
                if self.compensate:
                    self.wake.observe(late)
                elif len(self.wake.late_ns) < _MAX_SAMPLES:
                    self.wake.late_ns.append(late)
            self.flush_due()
            if self.tun in readable:
                self.read_packets()
                self.flush_due()  # D = 0 replies go out at once
            if ctl_in in readable:
                chunk = os.read(ctl_in, 4096)
                if not chunk:
                    return  # the owner is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer = self._control(line)
                    if answer is None:
                        return
                    os.write(ctl_out, json.dumps(answer).encode() + b"\n")


def responder_main(config_json: str) -> int:
    """Entry point of the responder process (``--responder JSON``), already in the namespace."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cfg = json.loads(config_json)
    actions = {ip: Action(a["kind"], float(a["delay_ms"])) for ip, a in cfg["actions"].items()}
    deadline = time.monotonic_ns() + int(float(cfg["max_seconds"]) * 1e9)
    responder = Responder(cfg["ifname"], actions, deadline, compensate=bool(cfg["compensate"]))
    responder.open(bool(cfg["realtime"]))
    responder.run(sys.stdin.fileno(), sys.stdout.fileno())
    return 0


# --------------------------------------------------------------------------------------------
# The rig (owner side)


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False
    )
    if check and proc.returncode != 0:
        raise RigError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, _CLONE_NEWNET)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while cleaning up, so a second Ctrl-C cannot cut it short."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class DelayRig:
    """A namespace with a TUN device whose far end answers SYNs after a known delay.

    ``delays`` maps 198.18.6.X to milliseconds (or to an ``Action``), or is a spec string
    (see ``parse_delays``). Use as a context manager; everything is removed on exit. While the
    rig is up, run the prober inside ``rig.netns`` (``rig.exec_prefix()``), or create its sockets
    within ``with rig.entered():``. ``max_seconds`` bounds the responder's life.

    The rig turns SIGTERM and SIGHUP into SystemExit while it is up (when they still have
    their default action and it is built from the main thread), so ``__exit__`` runs for them
    as it does for Ctrl-C.
    """

    def __init__(
        self,
        delays: Mapping[str, float | Action] | str,
        *,
        realtime: bool = True,
        compensate: bool = True,
        max_seconds: float = 3600.0,
    ) -> None:
        if isinstance(delays, str):
            self.actions = parse_delays(delays)
        else:
            self.actions = {}
            for ip, a in delays.items():
                action = a if isinstance(a, Action) else Action("accept", float(a))
                self.actions[_check_ip(ip)] = action
        self.realtime = realtime
        self.compensate = compensate
        self.max_seconds = max_seconds
        token = secrets.token_hex(4)
        self.netns = f"npd-{token}"
        self.ifname = f"npd{token}t"  # 12 characters; interface names are limited to 15
        self.client_ip = CLIENT_IP
        self.responder_setup: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._rbuf = b""
        self._ns_created = False
        self._owner_file = OWNER_DIR / self.netns
        self._old_handlers: dict[int, Any] = {}
        self._closed = False

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> DelayRig:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        problem = unavailable_reason()
        if problem:
            raise RigError(problem)
        self._install_signal_handlers()
        atexit.register(self.close)  # a rig used without `with` and never closed
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        # Owner file and flag first: an interruption at any point leaves nothing behind
        # (deleting a namespace that was never made is a harmless failure).
        OWNER_DIR.mkdir(mode=0o700, exist_ok=True)
        self._owner_file.write_text(json.dumps({"pid": os.getpid(), "created": time.time()}))
        self._ns_created = True
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        cfg = {
            "ifname": self.ifname,
            "actions": {ip: a.to_json() for ip, a in self.actions.items()},
            "realtime": self.realtime,
            "compensate": self.compensate,
            "max_seconds": self.max_seconds,
        }
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        script = str(Path(__file__).resolve())
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-I", script,
             "--responder", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            bufsize=0, start_new_session=True,
        )  # fmt: skip
        ready = self._read_line(_READY_TIMEOUT)
        if not ready.get("ready"):
            raise RigError(f"responder not ready: {ready}")
        self.responder_setup = ready
        ns = ["ip", "-n", self.netns]
        _run([*ns, "addr", "add", f"{CLIENT_IP}/{CLIENT_PREFIX}", "dev", self.ifname])
        _run([*ns, "link", "set", self.ifname, "up"])
        _run([*ns, "route", "add", str(PATH_NET), "dev", self.ifname])

    def close(self) -> None:
        """Stop the responder and delete the namespace. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        with _signals_blocked():
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.write(b"quit\n")
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(2.0)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(2.0)
            if proc is not None:
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            if self._stderr is not None:
                self._stderr.close()
            if self._ns_created:
                with contextlib.suppress(RigError, OSError, subprocess.SubprocessError):
                    _run(["ip", "netns", "delete", self.netns])
            with contextlib.suppress(OSError):
                self._owner_file.unlink()
            self._restore_signal_handlers()
            atexit.unregister(self.close)

    def _install_signal_handlers(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    self._old_handlers[sig] = signal.signal(sig, _raise_exit)

    def _restore_signal_handlers(self) -> None:
        with contextlib.suppress(ValueError):
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
        self._old_handlers.clear()

    # responder control ---------------------------------------------------------------------
    def _responder_stderr(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read().decode(errors="replace")).strip()[-2000:]

    def _read_line(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise RigError("responder not started")
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._rbuf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RigError(f"responder did not answer in {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = proc.poll()
                    raise RigError(f"responder exited ({code}): {self._responder_stderr()}")
                self._rbuf += chunk
        line, self._rbuf = self._rbuf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _command(self, cmd: str) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise RigError(f"responder is not running: {self._responder_stderr()}")
        proc.stdin.write(cmd.encode() + b"\n")
        return self._read_line(_CONTROL_TIMEOUT)

    def responder_stats(self) -> dict[str, Any]:
        """Per destination: counts, and the responder's own error vs D (µs: n/min/p50/p99/max)."""
        return self._command("stats")

    def reset_stats(self) -> None:
        self._command("reset")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # using the rig -------------------------------------------------------------------------
    def truth(self, ip: str) -> float:
        """The configured one-way-and-back delay D of ``ip``, in seconds (the true connect RTT
        minus the kernel's overhead, which ``--selftest`` measures)."""
        return self.actions[str(ipaddress.IPv4Address(ip))].delay_ms / 1000.0

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.netns]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into the namespace for the block (sockets created in it stay
        in the namespace afterwards)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def tcp_counters(self) -> dict[str, int]:
        """The namespace's Tcp: line of /proc/net/snmp (RetransSegs, OutRsts, ...)."""
        text = _run([*self.exec_prefix(), "cat", "/proc/net/snmp"]).stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}

    def socket_states(self) -> dict[str, int]:
        """Count of TCP sockets in the namespace by state (``ss -tan``)."""
        text = _run([*self.exec_prefix(), "ss", "-tanH"], check=False).stdout
        out: dict[str, int] = {}
        for line in text.splitlines():
            if line.strip():
                state = line.split()[0]
                out[state] = out.get(state, 0) + 1
        return out

    def address_table(self) -> str:
        rows = [("address", "does", "D ms")]
        for ip, a in sorted(self.actions.items(), key=lambda kv: ipaddress.IPv4Address(kv[0])):
            d = "-" if a.kind == "drop" else _ms(a.delay_ms)
            rows.append((ip, a.kind, d))
        rows.append((f"other {PATH_NET}", "drop", "-"))
        return _table(rows)


def _ms(value: float | Action) -> str:
    v = value.delay_ms if isinstance(value, Action) else float(value)
    return f"{v:g}"


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun does not exist"
    if subprocess.run(["which", "ip"], capture_output=True, check=False).returncode:
        return "needs the ip command (iproute2)"
    return None


def cleanup_stale() -> list[str]:
    """Delete namespaces left by rigs whose owner process died without cleaning up (SIGKILL)."""
    removed: list[str] = []
    if not OWNER_DIR.is_dir():
        return removed
    for path in sorted(OWNER_DIR.glob("npd-*")):
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        try:
            os.kill(pid, 0)
            continue  # owner still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _run(["ip", "netns", "delete", path.name], check=False)
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


# --------------------------------------------------------------------------------------------
# Self-test: plain blocking sockets in this process


_TCP_INFO_LEN = 104


def _tcp_info(sock: socket.socket) -> tuple[int, int]:
    """(tcpi_rtt µs, tcpi_total_retrans) of a connected socket."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    fields = struct.unpack_from("8B24I", raw)
    return fields[8 + 15], fields[8 + 23]


def selftest(
    rig: DelayRig,
    count: int = 200,
    port: int = 80,
    warmup: int = 5,
    budget_s: float = 45.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``count`` sequential connects to every accepting address, round-robin; returns a report.

    Per address: connect wall time - D (µs), the kernel's own RTT (tcpi_rtt) - D, SYN
    retransmissions, and the responder's own error vs D over the same connects.
    """
    targets = sorted(
        (ip for ip, a in rig.actions.items() if a.kind == "accept"),
        key=lambda ip: rig.actions[ip].delay_ms,
    )
    if not targets:
        raise RigError("no accepting destination to test")
    deadline = time.monotonic() + budget_s
    wall: dict[str, list[int]] = {ip: [] for ip in targets}
    kern: dict[str, list[int]] = {ip: [] for ip in targets}
    failures: dict[str, list[str]] = {ip: [] for ip in targets}
    retrans = dict.fromkeys(targets, 0)
    tcp0 = rig.tcp_counters()
    truncated = False

    def connect_once(ip: str, record: bool) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)  # a lost SYN: 3 s, not 2 min
            d_ns = int(rig.actions[ip].delay_ms * 1_000_000)
            t0 = time.perf_counter_ns()
            try:
                s.connect((ip, port))
            except OSError as exc:
                if record:
                    failures[ip].append(f"{type(exc).__name__}: {exc}")
                return
            t1 = time.perf_counter_ns()
            rtt_us, total_retrans = _tcp_info(s)
            if record:
                wall[ip].append(t1 - t0 - d_ns)
                kern[ip].append(rtt_us * 1000 - d_ns)
                retrans[ip] += total_retrans

    with rig.entered():
        for _ in range(warmup):
            for ip in targets:
                connect_once(ip, record=False)
        time.sleep(max(rig.actions[ip].delay_ms for ip in targets) / 1000.0 + 0.05)
        rig.reset_stats()
        for i in range(count):
            if time.monotonic() > deadline:
                truncated = True
                break
            rot = i % len(targets)  # rotate the order, so no address always goes first
            for ip in targets[rot:] + targets[:rot]:
                connect_once(ip, record=True)
            if progress and (i + 1) % 50 == 0:
                progress(f"  {i + 1}/{count} rounds")
    # let the delayed RSTs for the clients' FINs arrive before counting sockets
    time.sleep(max(rig.actions[ip].delay_ms for ip in targets) / 1000.0 + 0.2)
    stats = rig.responder_stats()
    tcp1 = rig.tcp_counters()
    results: dict[str, Any] = {}
    for ip in targets:
        rs = stats["destinations"][ip]
        results[ip] = {
            "delay_ms": rig.actions[ip].delay_ms,
            "connects": len(wall[ip]),
            "failures": len(failures[ip]),
            "failure_examples": failures[ip][:3],
            "connect_minus_d_us": _quantiles_us(wall[ip]),
            "tcpi_rtt_minus_d_us": _quantiles_us(kern[ip]),
            "syn_retransmits": retrans[ip],
            "responder_error_us": rs["error_us"],
            "responder_close_rst_error_us": rs["close_rst_error_us"],
            "responder_write_us": rs["write_us"],
            "responder_counts": rs["counts"],
        }
    return {
        "kernel": " ".join(os.uname()),
        "python": sys.version.split()[0],
        "responder": {
            **stats["setup"],
            "wake_lead_us": stats["wake_lead_us"],
            "timer_late_us": stats["timer_late_us"],
        },
        "netns": rig.netns,
        "count_per_address": count,
        "truncated_by_budget": truncated,
        "port": port,
        "client": "blocking socket.connect(), perf_counter_ns around connect()",
        "results": results,
        "responder_other_packets": stats["other"],
        "namespace_tcp_delta": {
            k: tcp1[k] - tcp0[k]
            for k in ("ActiveOpens", "AttemptFails", "EstabResets", "RetransSegs", "OutRsts")
        },
        "namespace_sockets_after": rig.socket_states(),
    }


def _compact_json(data: object) -> str:
    """Indented JSON whose innermost objects and lists (quantiles, counts) stay on one line."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return re.sub(r"[\[{][^\[\]{}]*[\]}]", lambda m: " ".join(m.group(0).split()), text)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(cells)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _qs(q: Mapping[str, Any], keys: Sequence[str] = ("p50", "p99", "max")) -> str:
    if not q.get("n"):
        return "-"
    return " / ".join(f"{q[k]:g}" for k in keys)


def selftest_table(report: Mapping[str, Any]) -> str:
    rows = [
        (
            "address",
            "D ms",
            "ok/fail",
            "connect-D µs p50/p99/max",
            "tcpi_rtt-D µs p50/p99/max",
            "responder err µs min/p50/p99/max",
            "SYN rexmit",
        )
    ]
    for ip, r in report["results"].items():
        rows.append(
            (
                ip,
                _ms(r["delay_ms"]),
                f"{r['connects']}/{r['failures']}",
                _qs(r["connect_minus_d_us"]),
                _qs(r["tcpi_rtt_minus_d_us"]),
                _qs(r["responder_error_us"], ("min", "p50", "p99", "max")),
                str(r["syn_retransmits"]),
            )
        )
    return _table(rows)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--responder"] and len(args_in) == 2:
        return responder_main(args_in[1])
    command: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, command = args_in[:cut], args_in[cut + 1 :]
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="After --, a command to run inside the namespace for at most --seconds.",
    )
    ap.add_argument("--delays", default=DEFAULT_DELAYS, help=f"default: {DEFAULT_DELAYS}")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the rig stays up")
    ap.add_argument("--selftest", action="store_true", help="measure the rig with plain sockets")
    ap.add_argument("--count", type=int, default=200, help="selftest connects per address")
    ap.add_argument("--port", type=int, default=80, help="selftest destination port")
    ap.add_argument("--no-rt", action="store_true", help="responder without SCHED_FIFO")
    ap.add_argument(
        "--no-compensate",
        action="store_true",
        help="do not aim wake-ups early by the measured wake-up latency (replies then run late)",
    )
    ap.add_argument("--json", type=Path, help="also write the selftest report here")
    ap.add_argument("--cleanup-stale", action="store_true", help="delete orphaned namespaces")
    args = ap.parse_args(args_in)
    try:
        return _cli(args, command, ap)
    except KeyboardInterrupt:
        print("interrupted; namespace removed", file=sys.stderr)
        return 130


def _cli(args: argparse.Namespace, command: list[str], ap: argparse.ArgumentParser) -> int:

    if args.cleanup_stale:
        removed = cleanup_stale()
        print("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    if not 0 < args.seconds <= 86_400:
        ap.error("--seconds must be within (0, 86400]")
    try:
        actions = parse_delays(args.delays)
    except ValueError as exc:
        ap.error(str(exc))
    margin = 60.0 if args.selftest else 30.0
    with DelayRig(
        actions,
        realtime=not args.no_rt,
        compensate=not args.no_compensate,
        max_seconds=args.seconds + margin,
    ) as rig:
        setup = {k: v for k, v in rig.responder_setup.items() if k != "ready"}
        print(f"namespace {rig.netns}, TUN {rig.ifname}, client address {rig.client_ip}")
        print(f"responder: {json.dumps(setup)}")
        print(rig.address_table())
        sys.stdout.flush()
        if args.selftest:
            report = selftest(
                rig, count=args.count, port=args.port, progress=lambda m: print(m, flush=True)
            )
            print()
            print(selftest_table(report))
            print()
            print(_compact_json(report))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
            return 0
        if command:
            print(f"running inside {rig.netns}: {' '.join(command)}", flush=True)
            try:
                code = subprocess.run(
                    [*rig.exec_prefix(), *command], timeout=args.seconds, check=False
                ).returncode
            except subprocess.TimeoutExpired:
                code = 124
                print(f"command stopped after {args.seconds:g} s")
        else:
            print(f"use: ip netns exec {rig.netns} <command>   (up for {args.seconds:g} s)")
            end = time.monotonic() + args.seconds
            while time.monotonic() < end and rig.alive():
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            code = 0 if rig.alive() else 1
        print(_compact_json(rig.responder_stats()))
        return code


if __name__ == "__main__":
    sys.exit(main())
