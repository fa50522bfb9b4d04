"""The continuous-mode scheduler: each target on its own fixed cadence.

- Phases: targets sharing an interval are ordered by a stable hash of their identity and spread
  evenly over it (target k of n starts k/n of an interval after it is added), so neither start-up
  nor a reload fires everything at once. A target kept by a reload keeps its cadence.
- Cadence: the next run is due one interval after the previous *due* time, not after the probe
  ends, so probe duration and reactor delays do not make the schedule drift.
- Deadline: a probe gets the time left until ``deadline_margin()`` before its next due time
  (``run(target, budget)``), not a whole interval from when it actually started. A probe that
  started late, or waited in the queue, therefore still ends and is recorded before its next
  slot comes, and a target that never answers gets exactly one probe per interval.
- Overlap: a target whose previous probe is still running (or still queued) skips that slot;
  skips are counted, never stacked. A queued probe whose next slot comes stands for that slot.
- Concurrency: at most ``max_inflight`` probes run at once; due probes beyond that wait in a FIFO
  queue and their lag (start time - due time) shows the wait. One that could start only within
  the margin before its next slot skips instead.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from netprobe_exporter.model import Target
from netprobe_exporter.model import stable_hash as stable_hash  # where it used to live
from netprobe_exporter.probes import ProbeResult

log = Logger()

TargetKey = tuple[str, str]
#: timers armed or probes cancelled per reactor turn while a commit is carried out
SLICE = 2000

#: how long before its next due time a probe must have ended, at most. Room for the timer
#: rounding (a slot may fire 0.5 ms early) and for a prober's own timer armed a little after
#: the budget was computed; both timers then fire in time order even on a late reactor.
DEADLINE_MARGIN = 0.01


def deadline_margin(interval: float) -> float:
    """The margin for ``interval``: 10 ms, or a tenth of shorter intervals."""
    return min(DEADLINE_MARGIN, interval / 10)


class _Entry:
    __slots__ = ("due", "queued", "queued_due", "removed", "running", "slot", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.due = 0.0
        #: the timer slot this entry waits in; None when it waits in none
        self.slot: int | None = None
        self.running: Deferred[ProbeResult] | None = None
        self.queued = False
        self.queued_due = 0.0
        self.removed = False


class _Timers:
    """Due times in 1 ms slots under one reactor timer.

    A DelayedCall per target costs a Python-level heap of thousands of entries (each comparison
    a Python call); here the heap holds plain slot numbers (compared in C) and one DelayedCall
    waits for the earliest slot. Entries leave lazily: a removed entry is skipped when its slot
    comes. Rounding to the nearest millisecond starts a probe at most 0.5 ms early.
    """

    RESOLUTION = 0.001

    def __init__(self, reactor: IReactorTime, fire: Callable[[_Entry], None]) -> None:
        self._reactor = reactor
        self._fire = fire
        self._slots: dict[int, list[_Entry]] = {}
        self._heap: list[int] = []
        self._call: IDelayedCall | None = None
        self._call_slot: int | None = None

    def add(self, entry: _Entry, due: float) -> None:
        slot = round(due / self.RESOLUTION)
        entry.slot = slot
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.append(entry)
            return
        self._slots[slot] = [entry]
        heapq.heappush(self._heap, slot)
        if self._call_slot is None or slot < self._call_slot:
            self._arm()

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._call_slot = None
        if self._heap:
            slot = self._heap[0]
            delay = max(slot * self.RESOLUTION - self._reactor.seconds(), 0.0)
            self._call = self._reactor.callLater(delay, self._tick)
            self._call_slot = slot

    def _tick(self) -> None:
        self._call = self._call_slot = None
        limit = round(self._reactor.seconds() / self.RESOLUTION)
        due: list[tuple[int, list[_Entry]]] = []
        while self._heap and self._heap[0] <= limit:
            slot = heapq.heappop(self._heap)
            due.append((slot, self._slots.pop(slot)))
        for slot, bucket in due:  # entries re-added while firing wait for a later tick
            for entry in bucket:
                if entry.slot == slot and not entry.removed:
                    entry.slot = None
                    self._fire(entry)
        if self._call is None:
            self._arm()

    def clear(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._call_slot = None
        self._slots.clear()
        self._heap.clear()


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """A target set's schedule, computed before anything is swapped (see ``Scheduler.plan``)."""

    entries: dict[TargetKey, _Entry]
    #: kept entries whose target changed but not its interval: (entry, new target)
    retarget: list[tuple[_Entry, Target]]
    #: entries to (re)arm, soonest first: (phase offset from the swap, entry, target)
    arm: list[tuple[float, _Entry, Target]]
    #: entries that leave: their probes are cancelled
    removed: list[_Entry]


def _first(item: tuple[float, _Entry, Target]) -> float:
    return item[0]


def _ignore(*_: object) -> None:
    """The default for a hook nobody listens to."""


class Scheduler:
    def __init__(
        self,
        reactor: IReactorTime,
        run: Callable[[Target, float], Deferred[ProbeResult]],
        on_result: Callable[[Target, ProbeResult], None],
        on_lag: Callable[[float], None] = _ignore,
        on_skip: Callable[[Target, int], None] = _ignore,
        max_inflight: int = 1024,
    ) -> None:
        self._reactor = reactor
        self._run = run
        self._on_result = on_result
        self._on_lag = on_lag
        self._on_skip = on_skip
        self.max_inflight = max_inflight
        self._entries: dict[TargetKey, _Entry] = {}
        self._timers = _Timers(reactor, self._fire)
        self._queue: deque[_Entry] = deque()
        self.inflight = 0
        self.running = False
        self._draining = False
        #: the commit whose slices are still to run: (generation, base time, arm, removed)
        self._pending: (
            tuple[int, float, list[tuple[float, _Entry, Target]], list[_Entry]] | None
        ) = None
        self._generation = 0

    @property
    def targets(self) -> list[Target]:
        return [e.target for e in self._entries.values()]

    def update(self, targets: Iterable[Target]) -> None:
        """Start, keep or stop targets so that exactly ``targets`` are scheduled."""
        self.commit(self.plan(targets))

    def plan(self, targets: Iterable[Target]) -> SchedulePlan:
        """What ``commit`` must do to schedule exactly ``targets``; changes nothing.

        Only reads the current entries (never mutated in place by the reactor: ``commit``
        and ``stop`` replace the dict), so a reload computes this off the reactor thread.
        """
        old = self._entries
        entries: dict[TargetKey, _Entry] = {}
        retarget: list[tuple[_Entry, Target]] = []
        arm: list[tuple[float, _Entry, Target]] = []
        wanted = {t.key: t for t in targets}
        groups: dict[float, list[Target]] = {}
        for t in wanted.values():
            groups.setdefault(t.interval, []).append(t)
        for interval, group in groups.items():
            group.sort(key=stable_hash)
            n = len(group)
            for rank, t in enumerate(group):
                entry = old.get(t.key)
                if entry is not None and entry.target.interval == interval:
                    if entry.target is not t:
                        retarget.append((entry, t))  # labels or buckets changed; cadence stays
                    entries[t.key] = entry
                    continue
                if entry is None:
                    entry = _Entry(t)
                entries[t.key] = entry
                arm.append((interval * rank / n, entry, t))
        arm.sort(key=_first)
        entries = {key: entries[key] for key in wanted}  # in the order targets came
        removed = [e for k, e in old.items() if entries.get(k) is not e]
        return SchedulePlan(entries, retarget, arm, removed)

    def commit(self, plan: SchedulePlan) -> None:
        """Swap in a plan: the target set changes at once; timers follow in bounded slices.

        New (or re-timed) targets are armed and gone ones cancelled ``SLICE`` at a time per
        reactor turn, soonest due first, so even 100,000 of them never hold the reactor for
        long. Until its slice comes, a gone target's timer fires into nothing (``_fire`` only
        runs current entries), and a new one is not yet due: phases start at the swap.
        """
        self.running = True
        self._entries = plan.entries
        for entry, t in plan.retarget:
            entry.target = t
        self._generation += 1
        self._pending = (self._generation, self._reactor.seconds(), plan.arm, plan.removed)
        self._work(self._generation, 0, 0)

    def _work(self, generation: int, armed: int, removed: int) -> None:
        """Do one slice of the pending commit, then yield the reactor until the next one."""
        if self._pending is None or self._pending[0] != generation or not self.running:
            return  # a later commit or a stop superseded it
        _, base, arm, gone = self._pending
        budget = SLICE
        while armed < len(arm) and budget:
            offset, entry, t = arm[armed]
            armed += 1
            budget -= 1
            if self._entries.get(t.key) is not entry:
                continue
            entry.target = t
            entry.due = base + offset
            self._timers.add(entry, entry.due)
        while removed < len(gone) and budget:
            self._remove(gone[removed])
            removed += 1
            budget -= 1
        if armed < len(arm) or removed < len(gone):
            self._reactor.callLater(0, self._work, generation, armed, removed)
        else:
            self._pending = None

    def stop(self) -> None:
        """Cancel every timer and every probe in flight."""
        self.running = False
        entries, self._entries = self._entries, {}
        for entry in entries.values():
            self._remove(entry)
        if self._pending is not None:
            for entry in self._pending[3]:
                self._remove(entry)
        self._pending = None
        self._queue.clear()
        self._timers.clear()

    def _remove(self, entry: _Entry) -> None:
        entry.removed = True  # its timer slot skips it (entries leave _Timers lazily)
        if entry.running is not None:
            entry.running.cancel()

    def _fire(self, entry: _Entry) -> None:
        if self._entries.get(entry.target.key) is not entry:
            return  # left the config; its removal slice has not come yet
        now = self._reactor.seconds()
        due = entry.due
        interval = entry.target.interval
        missed = max(0, math.floor((now - due) / interval))
        entry.due = due + (missed + 1) * interval
        self._timers.add(entry, entry.due)
        if missed:
            self._on_skip(entry.target, missed)
        if entry.running is not None or entry.queued:
            self._on_skip(entry.target, 1)
            if entry.queued:  # it runs for this slot now, with this slot's deadline
                entry.queued_due = due
            log.debug(
                "previous probe still running or waiting: slot skipped",
                target=entry.target.display_address,
                module=entry.target.module,
            )
            return
        if self.inflight >= self.max_inflight:
            entry.queued = True
            entry.queued_due = due
            self._queue.append(entry)
            return
        self._start(entry, due, now)

    def _start(self, entry: _Entry, due: float, now: float) -> None:
        target = entry.target
        margin = deadline_margin(target.interval)
        budget = entry.due - margin - now  # entry.due is already the next slot's
        if budget <= margin:
            self._on_skip(target, 1)  # too late to probe before the next slot: that one will
            log.debug("probe could not start before its next slot: slot skipped",
                      target=target.display_address, module=target.module)  # fmt: skip
            return
        self._on_lag(max(0.0, now - due))
        self.inflight += 1
        try:
            d = self._run(target, budget)
        except Exception:
            d = defer.fail()
        entry.running = d
        d.addCallbacks(self._done, self._failed, callbackArgs=(entry, target),
                       errbackArgs=(entry, target, now))  # fmt: skip

    def _done(self, result: ProbeResult, entry: _Entry, target: Target) -> None:
        self.inflight -= 1
        entry.running = None
        if not entry.removed:
            self._on_result(target, result)
        self._drain()

    def _failed(self, reason: Failure, entry: _Entry, target: Target, started: float) -> None:
        if reason.check(defer.CancelledError) and (entry.removed or not self.running):
            self.inflight -= 1
            entry.running = None
            self._drain()
            return
        log.failure(
            "prober failed unexpectedly",
            reason,
            target=target.display_address,
            module=target.module,
        )
        result = ProbeResult(
            success=False,
            result="error",
            duration=self._reactor.seconds() - started,
            detail=f"internal error: {reason.getErrorMessage()}",
        )
        self._done(result, entry, target)

    def drain(self) -> None:
        """Start queued probes while there is room (after ``max_inflight`` was raised)."""
        self._drain()

    def _drain(self) -> None:
        # Probes that finish synchronously call back into _drain from _start; only the
        # outermost call loops, so a long queue cannot recurse the stack away.
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue and self.inflight < self.max_inflight and self.running:
                entry = self._queue.popleft()
                entry.queued = False
                if entry.removed or self._entries.get(entry.target.key) is not entry:
                    continue
                self._start(entry, entry.queued_due, self._reactor.seconds())
        finally:
            self._draining = False
