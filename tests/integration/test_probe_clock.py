"""A probe reads its time only from the clock in its context, on a real loopback connect."""

from __future__ import annotations

from netprobe_exporter.model import Module
from netprobe_exporter.probes import Clock, ProbeContext, ProbeResult, tcp
from netprobe_exporter.resolver import Resolver
from tests.support.reactor import reactor


def _context(clock: Clock, debug: bool = False) -> ProbeContext:
    resolver = Resolver(reactor, servers=[], hosts_path="/dev/null")
    return ProbeContext(reactor, resolver, debug=debug, clock=clock)


def test_a_probe_reads_time_from_the_clock_it_is_handed() -> None:
    ticks = iter(range(1000))
    step = 2.0**-10  # exact in binary: any duration from this clock is a whole number of steps
    clock = Clock(monotonic=lambda: next(ticks) * step, wall=lambda: 1234.5)
    ctx = _context(clock, debug=True)
    module = Module("t", "tcp", options=tcp.TCPProbe(preferred_ip_protocol="ip4"))
    done: list[ProbeResult] = []
    d = tcp.probe(ctx, "127.0.0.1:1", module, 5.0)  # port 1: refused at once on loopback
    d.addCallback(done.append)
    for _ in range(200):  # bounded: a refused loopback connect takes a few reactor turns
        if done:
            break
        reactor.iterate(0.01)
    assert done, "the probe did not finish"
    r = done[0]
    assert r.result == "refused"
    assert r.duration > 0 and (r.duration / step).is_integer()  # the fake clock's ticks only
    assert r.log and {entry[0] for entry in r.log} == {1234.5}
