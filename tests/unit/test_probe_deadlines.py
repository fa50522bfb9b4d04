"""A probe ends before its next slot: one probe per interval, even for targets that never answer.

Driven by a deterministic clock. The fake prober below answers only when its timeout runs out,
as every real prober does for a black-holed target; the clock is advanced in steps that are not
aligned to the slots, so timers fire a little late, as on a real reactor.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from netprobe_exporter.app import App
from netprobe_exporter.config import Target
from netprobe_exporter.modules import Module
from netprobe_exporter.probes import ProbeContext, ProbeResult
from netprobe_exporter.scheduler import Scheduler

#: reactor wake-ups every 3 ms: a timer fires up to 3 ms after its time
STEP = 0.003
#: a target probing until the test lets it end, and one queued behind it (max_inflight 1)
BLOCKER = Target("192.0.2.1:80", "tcp_connect", 10.0)
WAITING = Target("192.0.2.2:80", "tcp_connect", 1.0)


def timeout_result(timeout: float) -> ProbeResult:
    return ProbeResult(success=False, result="timeout", duration=timeout, detail="timed out")


def never_answers(clock: Clock, timeouts: list[float]) -> Deferred[ProbeResult]:
    """A probe of a black hole: it ends only when its timeout runs out."""
    timeout = timeouts[-1]
    d: Deferred[ProbeResult] = Deferred()
    call = clock.callLater(timeout, d.callback, timeout_result(timeout))
    d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
    return d


def advance(clock: Clock, seconds: float) -> None:
    for _ in range(round(seconds / STEP)):
        clock.advance(STEP)


class AppDeadlineTests(SynchronousTestCase):
    def test_a_target_that_never_answers_gets_one_probe_per_interval(self) -> None:
        """interval 1 s, default timeout (5 s): after N intervals, N timeouts and no skip."""
        clock = MemoryReactorClock()
        config = Path(self.mktemp())
        config.write_text("targets:\n  - address: 192.0.2.1:80\n    interval: 1s\n")
        app = App(clock, config_file=str(config), process_metrics=False)
        timeouts: list[float] = []

        def prober(
            ctx: ProbeContext, address: str, module: Module, timeout: float
        ) -> Deferred[ProbeResult]:
            timeouts.append(timeout)
            return never_answers(clock, timeouts)

        app.probers["tcp"] = prober
        app.apply(app.read_config())
        clock.advance(0)
        intervals = 10
        advance(clock, intervals - STEP / 2)  # up to just before slot N (it starts probe N+1)
        (series,) = app.store.series.values()
        self.assertEqual(app.store.stats.skipped, 0)
        self.assertEqual(len(timeouts), intervals)
        self.assertEqual(series.results["timeout"], intervals)
        self.assertEqual(sum(series.results.values()), intervals)
        app.stop()


class SchedulerDeadlineTests(SynchronousTestCase):
    def harness(
        self, targets: list[Target], max_inflight: int
    ) -> tuple[Clock, list[tuple[str, float]], list[int], list[str]]:
        clock = Clock()
        timeouts: list[float] = []
        starts: list[tuple[str, float]] = []
        skips: list[int] = []
        results: list[str] = []

        def run(target: Target, budget: float) -> Deferred[ProbeResult]:
            starts.append((target.address, budget))
            timeouts.append(min(5.0, budget))  # as the app does: module timeout, capped
            return never_answers(clock, timeouts)

        sched = Scheduler(
            clock,
            run,
            lambda t, r: results.append(t.address),
            on_skip=lambda t, n: skips.append(n),
            max_inflight=max_inflight,
        )
        sched.update(targets)
        self.addCleanup(sched.stop)
        clock.advance(0)
        return clock, starts, skips, results

    def test_the_budget_ends_before_the_next_due_time_of_the_slot(self) -> None:
        t = Target("192.0.2.1:80", "tcp_connect", 1.0)
        clock, starts, skips, results = self.harness([t], max_inflight=10)
        advance(clock, 5 - STEP / 2)
        self.assertEqual(len(starts), 5)
        self.assertEqual(len(results), 5)
        self.assertEqual(skips, [])
        # started up to one step late, the probe still has less than the interval left
        self.assertTrue(all(budget < 1.0 for _, budget in starts), starts)

    def test_a_probe_that_waited_in_the_queue_still_ends_before_its_next_slot(self) -> None:
        """One probe at a time for two black-holed targets: each waits for the other's timeout,
        then has only what is left of its interval, so neither ever skips a slot."""
        pair = [Target(f"192.0.2.{i}:80", "tcp_connect", 1.0) for i in (1, 2)]
        clock, starts, skips, results = self.harness(pair, max_inflight=1)
        advance(clock, 10 - STEP / 2)
        self.assertEqual(skips, [])
        for t in pair:
            self.assertEqual(results.count(t.address), 10 if t.address == starts[0][0] else 9)
        # the queued ones started late and got what was left before their next slot
        self.assertTrue(all(budget <= 0.6 for _, budget in starts[1:]), starts)

    def blocked(self) -> tuple[Clock, Deferred[ProbeResult], list[tuple[str, float, float]],
                               list[int]]:  # fmt: skip
        """One probe at a time: BLOCKER runs until ``held`` fires, WAITING is due at 0 and waits
        behind it. Returns the clock, ``held``, the starts (address, time, budget), the skips."""
        clock = Clock()
        held: Deferred[ProbeResult] = Deferred()
        starts: list[tuple[str, float, float]] = []
        skips: list[int] = []

        def run(target: Target, budget: float) -> Deferred[ProbeResult]:
            starts.append((target.address, clock.seconds(), budget))
            if target is BLOCKER:
                return held
            d: Deferred[ProbeResult] = Deferred()
            d.callback(timeout_result(0.0))
            return d

        sched = Scheduler(
            clock, run, lambda t, r: None, on_skip=lambda t, n: skips.append(n), max_inflight=1
        )
        self.addCleanup(sched.stop)
        sched.update([BLOCKER])
        clock.advance(0)
        sched.update([BLOCKER, WAITING])  # due at 0; waits behind the blocker
        return clock, held, starts, skips

    def test_a_queued_probe_is_for_its_latest_slot_and_skips_count_once(self) -> None:
        """A probe that waits past its next slot runs for that slot (one skip), not both."""
        clock, held, starts, skips = self.blocked()
        clock.advance(0)
        advance(clock, 1.5)  # its next slot (1.0) comes while it waits: one skip
        self.assertEqual(skips, [1])
        self.assertEqual([b for a, _, b in starts if a == WAITING.address], [])
        held.callback(timeout_result(10.0))  # at 1.5: it runs for the slot of 1.0
        (budget,) = [b for a, _, b in starts if a == WAITING.address]
        self.assertAlmostEqual(budget, 0.5 - 0.01, delta=STEP)

    def test_a_probe_that_could_start_only_at_the_edge_of_its_next_slot_skips(self) -> None:
        clock, held, starts, skips = self.blocked()
        clock.advance(0.995)
        held.callback(timeout_result(0.995))  # 5 ms before its next slot: no time for a probe
        self.assertEqual(skips, [1])
        self.assertEqual([a for a, _, _ in starts], [BLOCKER.address])
        clock.advance(0.005)  # its next slot: it runs then, on time
        self.assertEqual([(a, t) for a, t, _ in starts[1:]], [(WAITING.address, 1.0)])
        self.assertEqual(skips, [1])
