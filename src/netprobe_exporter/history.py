"""The last ``/probe`` requests with their debug logs: the status page's list and ``/logs``.

As blackbox_exporter keeps them: the newest ``limit`` results, and, so that a failure stays
readable after a burst of successes, up to ``limit`` more failures that aged out of those. On
top of blackbox's count bound the text is bounded in bytes (``max_bytes``): each entry's log is
already bounded (``MAX_LOG_BYTES``), but twice limit of them could still be hundreds of MiB, so
past the byte bound the oldest successes go first, then the oldest failures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from netprobe_exporter.addresses import redact_url

DEFAULT_LIMIT = 100
#: the text of every kept entry together, at most (one entry is kept whatever its size)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One ``/probe`` request, complete."""

    id: int
    #: wall-clock time the probe started
    ts: float
    module: str
    #: as requested (matched by ``/logs?target=``); shown only through ``shown``
    target: str
    success: bool
    #: a ``model.RESULTS`` name
    result: str
    duration: float
    detail: str
    #: blackbox's debug page of the probe: its log, the metrics and the module
    text: str

    @property
    def shown(self) -> str:
        """The target with any URL password masked, for pages and logs."""
        return redact_url(self.target)


class ProbeHistory:
    """Bounded in entries (``limit`` recent plus ``limit`` aged-out failures) and in bytes."""

    def __init__(self, limit: int = DEFAULT_LIMIT, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._next_id = 0
        self._recent: deque[ProbeRecord] = deque()
        self._failures: deque[ProbeRecord] = deque()
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        """``--history.limit=0`` keeps nothing (as blackbox), so no log need be collected."""
        return self.limit > 0

    def add(
        self,
        ts: float,
        module: str,
        target: str,
        success: bool,
        result: str,
        duration: float,
        detail: str,
        text: str,
    ) -> ProbeRecord:
        """Record a finished request; ages out the oldest beyond the bounds."""
        record = ProbeRecord(
            self._next_id, ts, module, target, success, result, duration, detail, text
        )
        self._next_id += 1
        if not self.enabled:
            return record
        self._recent.append(record)
        self.bytes += len(text)
        if len(self._recent) > self.limit:
            old = self._recent.popleft()
            if old.success:
                self.bytes -= len(old.text)
            else:
                self._failures.append(old)
                if len(self._failures) > self.limit:
                    self.bytes -= len(self._failures.popleft().text)
        self._trim_bytes()
        return record

    def _trim_bytes(self) -> None:
        """Past ``max_bytes``: drop the oldest success, else the oldest failure; never the
        newest entry (so one larger than the bound alone is still kept)."""
        newest = self._recent[-1]
        for _ in range(len(self._recent) + len(self._failures)):
            if self.bytes <= self.max_bytes or len(self._recent) + len(self._failures) <= 1:
                return
            victim = next((r for r in self._recent if r.success and r is not newest), None)
            if victim is not None:
                self._recent.remove(victim)
            elif self._failures:
                victim = self._failures.popleft()
            else:
                victim = self._recent.popleft()
            self.bytes -= len(victim.text)

    def __len__(self) -> int:
        return len(self._recent) + len(self._failures)

    def newest_first(self) -> Iterator[ProbeRecord]:
        """Every kept record, newest first (aged-out failures after the recent ones)."""
        yield from reversed(self._recent)
        yield from reversed(self._failures)

    def by_id(self, record_id: int) -> ProbeRecord | None:
        return next((r for r in self.newest_first() if r.id == record_id), None)

    def by_target(self, target: str, module: str = "") -> ProbeRecord | None:
        """The newest kept record of ``target`` (and ``module``, if given)."""
        return next(
            (
                r
                for r in self.newest_first()
                if (r.target == target or r.shown == target) and (not module or r.module == module)
            ),
            None,
        )
