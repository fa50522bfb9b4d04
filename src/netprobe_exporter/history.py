"""The last ``/probe`` requests with their debug logs: the status page's list and ``/logs``.

As blackbox_exporter keeps them: the newest ``limit`` results, and, so that a failure stays
readable after a burst of successes, up to ``limit`` more failures that aged out of those. On
top of blackbox's count bound the text is bounded in bytes (``max_bytes``): each entry's log is
already bounded (``MAX_LOG_BYTES``), but twice limit of them could still be hundreds of MiB, so
past the byte bound the oldest successes go first, then the oldest failures. A record keeps
the probe's result and renders its debug page only when ``/logs`` asks for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from netprobe_exporter.addresses import redact_url

DEFAULT_LIMIT = 100
#: the text of every kept entry together, at most (one entry is kept whatever its size)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: what a kept probe costs besides its log's text: the result, its metrics, the page's head
RECORD_OVERHEAD = 4096
#: what one log entry costs besides its text (a tuple, a dict, a float)
ENTRY_OVERHEAD = 320


def kept_size(log_entries: int, log_text_bytes: int) -> int:
    """What a kept /probe result is counted for against ``max_bytes``."""
    return RECORD_OVERHEAD + ENTRY_OVERHEAD * log_entries + log_text_bytes


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
    #: makes blackbox's debug page of the probe (its log, the metrics, the module) when asked:
    #: rendering it costs more than the probe itself, and few are ever read
    render: Callable[[], str]
    #: what the record is counted for against ``max_bytes``
    size: int

    @property
    def text(self) -> str:
        return self.render()

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
        text: str | Callable[[], str],
        size: int | None = None,
    ) -> ProbeRecord:
        """Record a finished request; ages out the oldest beyond the bounds.

        ``text`` is the log, or what makes it (then ``size`` says what it will hold)."""
        if isinstance(text, str):
            size = len(text) if size is None else size
            render: Callable[[], str] = text.__str__
        else:
            render = text
        record = ProbeRecord(self._next_id, ts, module, target, success, result, duration,
                             detail, render, size or 0)  # fmt: skip
        self._next_id += 1
        if not self.enabled:
            return record
        self._recent.append(record)
        self.bytes += record.size
        if len(self._recent) > self.limit:
            old = self._recent.popleft()
            if old.success:
                self.bytes -= old.size
            else:
                self._failures.append(old)
                if len(self._failures) > self.limit:
                    self.bytes -= self._failures.popleft().size
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
            self.bytes -= victim.size

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
