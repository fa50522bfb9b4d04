"""Several packets per probe (``packets``, ``packet_interval``): loss and jitter, smokeping-style.

The icmp and tcp probers send ``packets`` echoes / connects, one every ``packet_interval``, all
within the probe's timeout: each packet waits for its answer until the probe's deadline, and
the probe ends when every packet sent has its answer or the deadline passes. A packet not sent
by the deadline is not counted. The probe succeeds when at least one packet was answered (tcp:
one connection was established). ``packets: 1``, the default, is the single-packet probe of
before, with the same output.

What a burst showed is a ``Packets``: packets sent and the RTT of each one answered, from which
``/probe`` writes the loss ratio and RTT min / max / mean / standard deviation, and continuous
mode counts packets sent and lost (``rate()`` of the two gives packet loss, as the
traceroute prober's per-hop counters do) and puts every RTT in the prober's RTT histogram.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from netprobe_exporter.durations import format_duration
from netprobe_exporter.model import Sample, SeriesSink
from netprobe_exporter.probes import BlackboxFamily, Family, ProbeReactor
from netprobe_exporter.schema import Duration, Int, Opt

#: most packets one probe sends (a probe holds each packet's RTT until it ends)
MAX_PACKETS = 100
DEFAULT_PACKET_INTERVAL = 0.2
#: the shortest packet_interval
MIN_PACKET_INTERVAL = 0.001

#: the keys icmp and tcp share
PACKET_OPTIONS = (
    Opt("packets", Int(1, MAX_PACKETS)),
    Opt("packet_interval", Duration(MIN_PACKET_INTERVAL)),
)

SENT = Family(
    "netprobe_packets_sent_total", "counter",
    "icmp and tcp modules with packets > 1: echo requests sent / connects started.", order=160,
)  # fmt: skip
LOST = Family(
    "netprobe_packets_lost_total", "counter",
    "icmp and tcp modules with packets > 1: packets not answered in time (tcp: connects not "
    "established, or only after the SYN was retransmitted); rate(lost) / rate(sent) is the "
    "packet loss.",
    order=161,
)  # fmt: skip
FAMILIES = (SENT, LOST)

BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_packets_sent", "Packets sent by the probe"),
    BlackboxFamily("probe_packets_received", "Packets the probe got an answer to in time"),
    BlackboxFamily("probe_packet_loss_ratio", "Share of the packets sent that got no answer"),
    BlackboxFamily("probe_packet_rtt_min_seconds", "Shortest round trip of the packets answered"),
    BlackboxFamily("probe_packet_rtt_max_seconds", "Longest round trip of the packets answered"),
    BlackboxFamily("probe_packet_rtt_mean_seconds", "Mean round trip of the packets answered"),
    BlackboxFamily(
        "probe_packet_rtt_stddev_seconds",
        "Population standard deviation of the round trips of the packets answered (jitter)",
    ),
)


#: where the timeout ``fit_error`` compares with comes from (``{}`` standing for it)
MODULE_TIMEOUT = "the module's timeout of {}"
PROBE_TIMEOUT = (
    "this probe's time budget of {} (the module's or scrape timeout, or what a late start left)"
)


def fit_error(
    packets: int, interval: float, timeout: float, whose: str = MODULE_TIMEOUT
) -> str | None:
    """Why ``packets`` at ``interval`` do not fit in ``timeout``, or None when they do;
    ``whose`` says where the timeout comes from, for the message.

    The last packet leaves after ``(packets - 1) * interval`` and gets at least one more
    interval to be answered, so the burst needs ``packets * interval`` of the timeout.
    """
    if packets <= 1 or packets * interval <= timeout + 1e-9:
        return None
    need = format_duration(packets * interval)
    return (
        f"{packets} packets at packet_interval {format_duration(interval)} need {need}, more "
        f"than {whose.format(format_duration(timeout))}: lower packets or packet_interval"
    )


def rtt_stats(rtts: list[float]) -> tuple[float, float, float, float] | None:
    """(min, max, mean, population standard deviation) of ``rtts``; None when empty.

    The population deviation, as ping's ``mdev``: the spread of the packets seen, not an
    estimate for a larger sample.
    """
    n = len(rtts)
    if not n:
        return None
    mean = math.fsum(rtts) / n
    var = math.fsum((x - mean) ** 2 for x in rtts) / n
    return min(rtts), max(rtts), mean, math.sqrt(var)


@dataclass(slots=True)
class Packets:
    """What a burst of packets showed: how many left, and the RTT of each one answered."""

    #: packets the probe meant to send
    wanted: int = 0
    sent: int = 0
    #: seconds, one per packet answered, in the order the answers came
    rtts: list[float] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.rtts)

    @property
    def loss(self) -> float | None:
        """Share of the packets sent that got no answer; None when none was sent."""
        return None if not self.sent else (self.sent - len(self.rtts)) / self.sent

    def observe(self, out: SeriesSink, rtt_family: str) -> None:
        """Continuous mode: every RTT into ``rtt_family``, the counts into the counters."""
        for rtt in self.rtts:
            out.histogram(rtt_family, rtt)
        out.counter(SENT.name, self.sent)
        out.counter(LOST.name, self.sent - len(self.rtts))

    def blackbox(self, out: dict[str, list[Sample]]) -> None:
        """The ``/probe`` families: counts always, loss once a packet left, RTTs once one
        was answered."""
        out["probe_packets_sent"] = [({}, float(self.sent))]
        out["probe_packets_received"] = [({}, float(len(self.rtts)))]
        loss = self.loss
        if loss is not None:
            out["probe_packet_loss_ratio"] = [({}, loss)]
        stats = rtt_stats(self.rtts)
        if stats is None:
            return
        for name, value in zip(("min", "max", "mean", "stddev"), stats, strict=True):
            out[f"probe_packet_rtt_{name}_seconds"] = [({}, round(value, 9))]


#: sends packet ``i``: a Deferred that fires with its RTT in seconds, or None when it was
#: lost (cancelling it gives up on the packet); raises OSError when it could not be sent
Send = Callable[[int], "Deferred[float | None]"]


class Burst:
    """Send ``count`` packets, one every ``interval``, and wait for their answers until
    ``deadline`` seconds from now; ``done`` fires with the ``Packets`` (never errbacks).

    One timer for the next send and one for the deadline: the only per-packet objects are
    the packet's own Deferred and its RTT in the list. ``drain`` reads answers already waiting
    on the socket: the deadline calls it first, so an answer that came in time is not called
    lost because a busy reactor ran the timer before the read.
    """

    def __init__(
        self,
        reactor: ProbeReactor,
        count: int,
        interval: float,
        deadline: float,
        send: Send,
        on_error: Callable[[int, OSError], None] | None = None,
        drain: Callable[[], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._count = count
        self._interval = interval
        self._send = send
        self._on_error = on_error
        self._drain = drain
        self.packets = Packets(wanted=count)
        self._outstanding: dict[int, Deferred[float | None]] = {}
        self._next = 0
        self._finished = False
        self.done: Deferred[Packets] = Deferred(lambda _: self._stop())
        self._deadline: Any = reactor.callLater(max(deadline, 0.0), self._expire)
        self._send_timer: Any = None
        self._start = reactor.seconds()
        self._send_one()

    def _send_one(self) -> None:
        self._send_timer = None
        i = self._next
        self._next += 1
        try:
            d = self._send(i)
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(i, exc)
        else:
            self.packets.sent += 1
            self._outstanding[i] = d
            d.addCallbacks(self._answered, self._gone, callbackArgs=(i,), errbackArgs=(i,))
        if self._finished:
            return
        if self._next < self._count:
            # due at start + i * interval: a late reactor turn does not push later packets back
            delay = self._start + self._next * self._interval - self._reactor.seconds()
            self._send_timer = self._reactor.callLater(max(delay, 0.0), self._send_one)
        else:
            self._maybe_done()

    def _answered(self, rtt: float | None, i: int) -> None:
        if self._outstanding.pop(i, None) is None:
            return
        if rtt is not None:
            self.packets.rtts.append(rtt)
        self._maybe_done()

    def _gone(self, reason: Failure, i: int) -> None:
        """Given up (cancelled at the deadline) or failed: the packet is lost."""
        self._outstanding.pop(i, None)
        if not reason.check(CancelledError) and self._on_error is not None:
            exc = reason.value
            self._on_error(i, exc if isinstance(exc, OSError) else OSError(str(exc)))
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self._finished and self._next >= self._count and not self._outstanding:
            self._finish()

    def _expire(self) -> None:
        self._deadline = None
        if self._drain is not None and self._outstanding:
            self._drain()
        self._stop()
        self._finish()

    def _stop(self) -> None:
        """No more sends; give up on every packet still waiting."""
        self._finished = True
        if self._send_timer is not None and self._send_timer.active():
            self._send_timer.cancel()
        self._send_timer = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        waiting, self._outstanding = self._outstanding, {}
        for d in waiting.values():
            d.cancel()

    def _finish(self) -> None:
        self._stop()
        if not self.done.called:
            self.done.callback(self.packets)
