"""Scheduler behaviour, driven by a deterministic Clock."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netprobe_exporter.config import Target
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.scheduler import Scheduler


def ok() -> ProbeResult:
    return ProbeResult(success=True, result="success", duration=0.001)


class Harness:
    """Records starts, results, lags and skips; probes finish only when told to."""

    def __init__(self, max_inflight: int = 100, instant: bool = True) -> None:
        self.clock = Clock()
        self.instant = instant
        self.starts: list[tuple[float, str]] = []
        self.pending: list[tuple[Target, Deferred[ProbeResult]]] = []
        self.results: list[tuple[str, ProbeResult]] = []
        self.lags: list[float] = []
        self.skips: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self.sched = Scheduler(
            self.clock,
            self.run,
            lambda t, r: self.results.append((t.address, r)),
            on_lag=self.lags.append,
            on_skip=lambda t, n: self.skips.append((t.address, n)),
            max_inflight=max_inflight,
        )

    def run(self, target: Target, budget: float) -> Deferred[ProbeResult]:
        self.starts.append((self.clock.seconds(), target.address))
        if self.instant:
            d: Deferred[ProbeResult] = Deferred()
            d.callback(ok())
            return d
        d = Deferred(lambda _: self.cancelled.append(target.address))
        self.pending.append((target, d))
        return d

    def finish_all(self) -> None:
        pending, self.pending = self.pending, []
        for _, d in pending:
            if not d.called:
                d.callback(ok())

    def starts_of(self, address: str) -> list[float]:
        return [t for t, a in self.starts if a == address]


def targets(n: int, interval: float, prefix: str = "10.0.0.") -> list[Target]:
    return [Target(f"{prefix}{i}:80", "tcp_connect", interval) for i in range(n)]


class SchedulerTests(SynchronousTestCase):
    def test_first_runs_spread_evenly_over_the_interval(self) -> None:
        h = Harness()
        h.sched.update(targets(10, 10.0))
        h.clock.advance(0)
        for _ in range(10):
            h.clock.advance(1.0)
        first = sorted(t for t, _ in h.starts[:10])
        self.assertEqual(first, [float(i) for i in range(10)])
        # every target ran exactly once in its first interval: no thundering herd
        self.assertEqual(len({a for t, a in h.starts if t < 10}), 10)

    def test_each_target_runs_at_its_own_interval(self) -> None:
        h = Harness()
        fast = Target("10.0.0.1:80", "tcp_connect", 1.0)
        slow = Target("10.0.0.2:80", "tcp_connect", 3.0)
        h.sched.update([fast, slow])
        h.clock.advance(0)
        h.clock.pump([0.25] * 36)  # 9 s, in steps exact in binary floating point
        self.assertEqual(len(h.starts_of(fast.address)), 10)  # 0, 1, ..., 9
        self.assertEqual(len(h.starts_of(slow.address)), 4)  # 0, 3, 6, 9
        gaps = {
            round(b - a, 6)
            for a, b in zip(h.starts_of(fast.address), h.starts_of(fast.address)[1:], strict=False)
        }
        self.assertEqual(gaps, {1.0})

    def test_cadence_does_not_drift_with_probe_duration(self) -> None:
        h = Harness(instant=False)
        t = Target("10.0.0.1:80", "tcp_connect", 1.0)
        h.sched.update([t])
        h.clock.advance(0)
        for _ in range(5):
            h.clock.advance(0.7)  # the probe takes 0.7 s
            h.finish_all()
            h.clock.advance(0.3)
        self.assertEqual(h.starts_of(t.address), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        self.assertEqual(h.skips, [])

    def test_a_probe_that_outlives_its_interval_is_not_started_twice(self) -> None:
        h = Harness(instant=False)
        t = Target("10.0.0.1:80", "tcp_connect", 1.0)
        h.sched.update([t])
        h.clock.advance(0)
        h.clock.advance(1.0)
        h.clock.advance(1.0)
        self.assertEqual(h.starts_of(t.address), [0.0])
        self.assertEqual(h.skips, [(t.address, 1), (t.address, 1)])
        self.assertEqual(h.sched.inflight, 1)
        h.finish_all()
        h.clock.advance(1.0)
        self.assertEqual(h.starts_of(t.address), [0.0, 3.0])
        self.assertEqual(len(h.results), 1)

    def test_concurrency_is_bounded_and_waiting_shows_as_lag(self) -> None:
        h = Harness(max_inflight=2, instant=False)
        h.sched.update(targets(4, 100.0))  # phases 0, 25, 50, 75
        h.clock.advance(0)
        h.clock.advance(25)
        h.clock.advance(25)  # third is due but two are in flight: it waits
        self.assertEqual(len(h.starts), 2)
        self.assertEqual(h.sched.inflight, 2)
        h.clock.advance(5)
        _first_target, first = h.pending.pop(0)
        first.callback(ok())  # frees a slot at t=55: the queued probe starts, 5 s late
        self.assertEqual(len(h.starts), 3)
        self.assertEqual(h.starts[-1][0], 55.0)
        self.assertEqual(h.lags, [0.0, 0.0, 5.0])
        self.assertEqual(h.sched.inflight, 2)

    def test_late_timer_records_lag_and_counts_missed_slots(self) -> None:
        h = Harness()
        t = Target("10.0.0.1:80", "tcp_connect", 1.0)
        h.sched.update([t])
        h.clock.advance(0)
        h.clock.advance(3.5)  # the reactor was stalled for 3.5 s
        self.assertEqual(h.lags, [0.0, 2.5])
        self.assertEqual(h.skips, [(t.address, 2)])
        h.clock.advance(0.5)  # back on the original cadence: due at 4.0
        self.assertEqual(h.starts_of(t.address), [0.0, 3.5, 4.0])

    def test_reload_keeps_cadence_of_kept_targets_and_spreads_new_ones(self) -> None:
        h = Harness()
        kept = Target("10.0.0.1:80", "tcp_connect", 10.0)
        gone = Target("10.0.0.2:80", "tcp_connect", 10.0)
        h.sched.update([kept, gone])
        h.clock.advance(0)
        kept_start = h.starts_of(kept.address)[0]
        h.clock.advance(3.0)
        new = targets(4, 10.0, prefix="10.0.1.")
        relabelled = Target(kept.address, kept.module, 10.0, (("team", "a"),))
        h.sched.update([relabelled, *new])
        h.starts.clear()
        h.clock.pump([0.125] * 80)
        self.assertEqual(h.starts_of(gone.address), [])
        self.assertEqual(
            [round(x, 6) for x in h.starts_of(kept.address)], [round(kept_start + 10.0, 6)]
        )
        new_starts = sorted(
            round(t, 6) for t, a in h.starts if a.startswith("10.0.1.") and t < 13.0
        )
        self.assertEqual(len(new_starts), 4)
        # new targets go out spread over the interval, not all at the reload instant
        self.assertEqual(len(set(new_starts)), 4)
        self.assertTrue(all(3.0 <= x < 13.0 for x in new_starts))
        self.assertEqual(h.sched.targets[0].labels, (("team", "a"),))

    def test_removing_a_target_cancels_its_probe_and_timer(self) -> None:
        h = Harness(instant=False)
        h.sched.update(targets(2, 2.0))
        h.clock.advance(0)
        self.assertEqual(h.sched.inflight, 1)
        a = h.pending[0][0]
        b = next(t for t in targets(2, 2.0) if t != a)
        h.sched.update([b])
        self.assertEqual(h.cancelled, [a.address])
        self.assertEqual(h.sched.inflight, 0)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        for _ in range(5):
            h.clock.advance(1.0)
            h.finish_all()
        self.assertNotIn(a.address, [x for _, x in h.starts[1:]])
        # b keeps its cadence (phase 1 s of 2 s): it ran at 1, 3 and 5
        self.assertEqual([x for x, _ in h.results], [b.address] * 3)

    def test_stop_cancels_everything(self) -> None:
        h = Harness(instant=False)
        h.sched.update(targets(3, 1.0))
        h.clock.advance(0.5)
        self.assertEqual(h.sched.inflight, 2)
        h.sched.stop()
        self.assertEqual(sorted(h.cancelled), sorted(t.address for t, _ in h.pending))
        self.assertEqual(len(set(h.cancelled)), 2)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.sched.inflight, 0)
        self.assertFalse(h.sched.running)

    def test_a_prober_bug_becomes_an_error_result(self) -> None:
        clock = Clock()
        results: list[ProbeResult] = []

        def broken(target: Target, budget: float) -> Deferred[ProbeResult]:
            raise RuntimeError("boom")

        sched = Scheduler(clock, broken, lambda t, r: results.append(r))
        sched.update(targets(1, 1.0))
        clock.advance(0)
        self.assertEqual([r.result for r in results], ["error"])
        self.assertIn("boom", results[0].detail)
        self.assertEqual(sched.inflight, 0)
        self.flushLoggedErrors(RuntimeError)

    def test_unexpected_cancellation_is_counted_not_lost(self) -> None:
        """Only the scheduler's own cancellations (removal, stop) go unreported."""
        h = Harness(instant=False)
        h.sched.update(targets(1, 1.0))
        h.clock.advance(0)
        _, d = h.pending[0]
        d.errback(CancelledError())
        self.assertEqual([r.result for _, r in h.results], ["error"])
        self.assertEqual(h.sched.inflight, 0)
        self.flushLoggedErrors(CancelledError)

    def test_synchronous_results_drain_a_long_queue_without_recursion(self) -> None:
        """Probes that finish at once (hosts-file names, instant errors) must not recurse."""
        clock = Clock()
        results: list[str] = []
        blocker: Deferred[ProbeResult] = Deferred()

        def run(target: Target, budget: float) -> Deferred[ProbeResult]:
            if target.address == "10.0.0.0:80":
                return blocker
            d: Deferred[ProbeResult] = Deferred()
            d.callback(ok())
            return d

        sched = Scheduler(clock, run, lambda t, r: results.append(t.address), max_inflight=1)
        many = [Target(f"10.0.{i // 250}.{i % 250}:80", "tcp_connect", 100.0) for i in range(3000)]
        sched.update(many)
        clock.pump([1.0] * 101)  # every first run is due; all but the blocker's wait in line
        first = clock.seconds()
        self.assertEqual(sched.inflight, 1)
        blocker.callback(ok())  # frees the slot: the whole queue runs, synchronously
        self.assertEqual(len(set(results)), 3000)  # every target reported, none lost
        self.assertEqual(sched.inflight, 0)
        self.assertEqual(clock.seconds(), first)
