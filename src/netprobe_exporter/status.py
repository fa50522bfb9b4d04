"""The status page's data: every continuous target's state, history and latency, paged.

For a person at a browser, not for Prometheus. ``/`` and ``/target`` are small HTML shells
(``status_assets``) whose script asks ``/status.json`` and ``/target.json`` for data and redraws
them every few seconds. The list is filtered, sorted and paged here, on the server, so a
10,000-target exporter builds only the visible page's rows: one pass over the targets (in
steps of ``CHUNK``, one per reactor turn) for the counts and the filter, then rows for at most
``MAX_PER_PAGE`` targets.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from netprobe_exporter import __version__
from netprobe_exporter.history import ProbeHistory
from netprobe_exporter.metrics import HISTORY, RESULT_CODE, MetricsStore, SeriesKey, TargetSeries
from netprobe_exporter.model import RESULTS

T = TypeVar("T")
STATES = ("all", "down", "flapping", "pending", "up")
#: success/failure changes among the kept results that make a target flapping
FLAP_CHANGES = 4
PER_PAGE = 100
#: targets looked at per step: one step is one reactor turn of ~1-2 ms at most
CHUNK = 500
#: rows built (and encoded) per step: each costs ~0.1 ms
ROW_CHUNK = 50
MAX_PER_PAGE = 500
#: recent /probe requests listed on the page (``/logs?id=`` reaches every kept one)
PROBES_SHOWN = 50
#: the TLS expiry gauge the tcp, http and dns probers feed
TLS_EXPIRY = "netprobe_tls_cert_expiry_timestamp_seconds"
#: sort rank: steadily down first, then flapping, not yet probed, up
_RANK = {"down": 0, "flapping": 1, "pending": 2, "up": 3}
#: history byte -> 0 for success, 1 for any failure (for counting changes at C speed)
_FAILED = bytes(0 if i == RESULT_CODE["success"] else 1 for i in range(256))


@dataclass(frozen=True, slots=True)
class Query:
    """What the page asks for: filters (all optional) and which page."""

    q: str = ""
    module: str = ""
    label: str = ""
    state: str = "all"
    page: int = 1
    per_page: int = PER_PAGE


def parse_query(args: Mapping[bytes, Sequence[bytes]]) -> Query:
    """The query from request arguments; ValueError names the bad parameter."""

    def arg(name: str) -> str:
        values = args.get(name.encode(), [])
        return values[0].decode("utf-8", "replace").strip() if values else ""

    state = arg("state") or "all"
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    numbers: dict[str, int] = {}
    for name, default, top in (("page", 1, 1 << 30), ("per_page", PER_PAGE, MAX_PER_PAGE)):
        text = arg(name)
        try:
            numbers[name] = int(text) if text else default
        except ValueError:
            raise ValueError(f"{name} must be a whole number, not {text[:40]!r}") from None
        if not 1 <= numbers[name] <= top:
            raise ValueError(f"{name} must be between 1 and {top}")
    return Query(arg("q"), arg("module"), arg("label"), state, numbers["page"], numbers["per_page"])


def changes(s: TargetSeries) -> int:
    """How often the kept results switch between success and failure."""
    n = min(s.observed, HISTORY)
    if n < 2:
        return 0
    slot = s.observed % HISTORY
    ring = bytes(s.history)
    ordered = ring[slot:] + ring[:slot] if s.observed >= HISTORY else ring[:n]
    flags = ordered.translate(_FAILED)
    # a two-byte pattern cannot overlap itself, so count() sees every change
    return flags.count(b"\x00\x01") + flags.count(b"\x01\x00")


def state_of(s: TargetSeries) -> str:
    """down, up, pending, or flapping: FLAP_CHANGES or more changes among the kept results."""
    up = s.up
    if up is None:
        return "pending"
    if s.last_failure is not None and changes(s) >= FLAP_CHANGES:
        return "flapping"
    return "up" if up else "down"


def series_id(key: SeriesKey) -> str:
    """A short stable name of a target for URLs (its address may hold a password)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


def _labels(s: TargetSeries) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.target.labels)


def _matches(query: Query, entry: _Entry, q: str, label: str) -> bool:
    """``q`` and ``label`` lowercased: the address and any one label must contain them."""
    if query.module and entry[1] != query.module:
        return False
    if q and q not in entry[5]:
        return False
    return not label or any(label in pair for pair in entry[6].split("\0"))


def history_of(s: TargetSeries) -> dict[str, list[Any]]:
    """The kept results, oldest first: end times (Unix s), result names, latencies (ms)."""
    first = max(s.observed - HISTORY, 0)
    slots = [i % HISTORY for i in range(first, s.observed)]
    return {
        "ts": [s.history_ts[i] for i in slots],
        "result": [RESULTS[s.history[i]] for i in slots],
        "ms": [round(s.history_seconds[i] * 1000, 3) for i in slots],
    }


def row(s: TargetSeries, sid: str, state: str) -> dict[str, Any]:
    """One target for the list (and the head of its own page)."""
    t = s.target
    hist = history_of(s)
    ok = hist["result"].count("success")
    failure = s.last_failure
    return {
        "id": sid,
        "target": t.display_address,
        "module": t.module,
        "labels": _labels(s),
        "state": state,
        "up": s.up,
        "since": s.changed_ts,
        "last_probe_ts": s.last_probe_ts,
        "last_result": hist["result"][-1] if hist["result"] else None,
        "last_ms": hist["ms"][-1] if hist["ms"] else None,
        "detail": s.detail,
        "last_failure": None
        if failure is None
        else {"result": failure[0], "detail": failure[1], "ts": s.last_failure_ts},
        "ratio": round(ok / len(hist["result"]), 4) if hist["result"] else None,
        "interval": t.interval,
        "history": hist,
    }


def _address_row(ip: str, s: TargetSeries) -> dict[str, Any]:
    """One address of an every_address target, for its page."""
    hist = history_of(s)
    return {
        "ip": ip,
        "state": state_of(s),
        "last_result": hist["result"][-1] if hist["result"] else None,
        "last_ms": hist["ms"][-1] if hist["ms"] else None,
        "detail": s.detail,
    }


#: one entry of the list's order: shown address, module, key, series, id, and for the filters
#: the lowercased address and the lowercased labels ("k=v" joined by NUL)
_Entry = tuple[str, str, SeriesKey, TargetSeries, str, str, str]
Steps = Generator[None, None, T]


def run(steps: Steps[T]) -> T:
    """Drive a view's steps to the end at once (tests, benchmarks); the web layer spreads
    them over reactor turns instead."""
    for _ in range(1 << 24):  # a bound far above any run: 10,000 targets take ~25 steps
        try:
            next(steps)
        except StopIteration as done:
            value: T = done.value
            return value
    raise RuntimeError("status view did not finish")


class StatusView:
    """Builds the page's JSON from the store, in steps of at most ``CHUNK`` targets.

    The order by address (and each target's id) is worked out once per set of targets, i.e.
    once per reload; each request then walks it once, counting states and keeping the
    matching targets in one list per state, so no request sorts 10,000 entries.
    """

    def __init__(
        self,
        store: MetricsStore,
        history: ProbeHistory | None = None,
        config_source: Callable[[], str] = lambda: "not loaded yet",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.history = history
        self.config_source = config_source
        self.wall = wall
        self.started = wall()
        self._for: dict[SeriesKey, TargetSeries] | None = None
        self._order: list[_Entry] = []
        self._by_id: dict[str, TargetSeries] = {}

    def ordered(self) -> Steps[list[_Entry]]:
        """Every target sorted by shown address and module, with its id (cached per set)."""
        series = self.store.series
        if self._for is series:
            return self._order
        items = list(series.items())
        entries: list[_Entry] = []
        for start in range(0, len(items), CHUNK):
            if start:
                yield
            for key, s in items[start : start + CHUNK]:
                t = s.target
                shown = t.display_address
                labels = "\0".join(f"{k}={v}" for k, v in t.labels).lower()
                entries.append((shown, t.module, key, s, series_id(key), shown.lower(), labels))
        yield
        entries.sort(key=lambda e: (e[0], e[1], e[4]))
        self._order, self._for = entries, series
        self._by_id = {e[4]: e[3] for e in entries}
        return entries

    def page_steps(self, query: Query) -> Steps[dict[str, Any]]:
        """The summary, banners, health, the requested page of rows and recent /probes."""
        order = yield from self.ordered()
        counts = dict.fromkeys(STATES[1:], 0)
        q, label = query.q.lower(), query.label.lower()
        filtered = bool(q or label or query.module)
        by_state: dict[str, list[_Entry]] = {name: [] for name in _RANK}
        for start in range(0, len(order), CHUNK):
            if start:
                yield
            for entry in order[start : start + CHUNK]:
                s = entry[3]
                state = state_of(s)
                counts[state] += 1
                if query.state != "all" and state != query.state:
                    continue
                if filtered and not _matches(query, entry, q, label):
                    continue
                by_state[state].append(entry)
        picked = [e for name in _RANK for e in by_state[name]]
        total = len(picked)
        pages = max((total + query.per_page - 1) // query.per_page, 1)
        number = min(query.page, pages)
        first = (number - 1) * query.per_page
        shown = picked[first : first + query.per_page]
        rows: list[dict[str, Any]] = []
        for start in range(0, len(shown), ROW_CHUNK):
            yield
            rows.extend(row(e[3], e[4], state_of(e[3])) for e in shown[start : start + ROW_CHUNK])
        return {
            "now": self.wall(),
            "summary": {"targets": len(order), **counts},
            "health": self.health(),
            "banners": self.banners(),
            "modules": sorted(self.store.modules),
            "query": {
                "q": query.q,
                "module": query.module,
                "label": query.label,
                "state": query.state,
            },
            "page": number,
            "pages": pages,
            "per_page": query.per_page,
            "total": total,
            "rows": rows,
            "probes": self.probes(),
        }

    def page(self, query: Query) -> dict[str, Any]:
        return run(self.page_steps(query))

    def target_steps(self, sid: str) -> Steps[dict[str, Any] | None]:
        """One target's page: its row plus TLS expiry, totals, IP and the /probe debug link."""
        yield from self.ordered()
        s = self._by_id.get(sid)
        if s is None:
            return None
        t = s.target
        data = row(s, sid, state_of(s))
        gauges = s.gauges or {}
        data.update(
            now=self.wall(),
            ip=s.ip,
            tls_expiry=gauges.get(TLS_EXPIRY),
            last_connect_ms=None if s.last_connect is None else s.last_connect * 1000,
            totals={name: n for name, n in s.results.items() if n},
            probe_link=probe_link(t.address, t.display_address, t.module),
            logs_link="logs?" + urlencode({"target": t.display_address, "module": t.module}),
            health=self.health(),
            banners=self.banners(),
            addresses=[_address_row(ip, child) for ip, child in (s.children or {}).items()],
        )
        return data

    def target(self, sid: str) -> dict[str, Any] | None:
        return run(self.target_steps(sid))

    def health(self) -> dict[str, Any]:
        """The exporter's own figures, as on /metrics."""
        stats = self.store.stats
        lag = stats.lag
        return {
            "version": __version__,
            "config": self.config_source(),
            "started": self.started,
            "reload_successful": stats.reload_successful == 1.0,
            "reload_success_ts": stats.reload_success_ts or None,
            "target_files_ok": stats.target_files_ok == 1.0,
            "web_reload_successful": stats.web_reload_successful == 1.0,
            "skipped_probes": stats.skipped,
            "probe_requests": stats.probe_requests,
            "probes_in_flight": stats.inflight_source(),
            "lag_mean_ms": round(lag.sum / lag.count * 1000, 3) if lag.count else None,
        }

    def banners(self) -> list[dict[str, Any]]:
        """What an operator must see first: a rejected reload, refused target files."""
        stats = self.store.stats
        out: list[dict[str, Any]] = []
        if stats.reload_successful != 1.0 and stats.reload_success_ts:
            out.append({
                "kind": "reload",
                "title": "The last config reload was rejected; the previous config is running.",
                "errors": list(stats.reload_errors),
            })  # fmt: skip
        if stats.target_files_ok != 1.0:
            out.append({
                "kind": "target_files",
                "title": "A target file was refused; its previous targets are kept.",
                "errors": list(stats.target_file_problems),
            })  # fmt: skip
        if stats.web_reload_successful != 1.0:
            out.append({
                "kind": "web_config",
                "title": "The last web config reload was rejected; the previous one is in use.",
                "errors": [],
            })  # fmt: skip
        return out

    def probes(self) -> list[dict[str, Any]]:
        """The newest /probe requests, for the list's "recent /probe" table."""
        if self.history is None:
            return []
        out: list[dict[str, Any]] = []
        for r in self.history.newest_first():
            if len(out) >= PROBES_SHOWN:
                break
            out.append({
                "id": r.id, "ts": r.ts, "module": r.module, "target": r.shown,
                "success": r.success, "result": r.result,
                "ms": round(r.duration * 1000, 3), "detail": r.detail,
            })  # fmt: skip
        return out


def probe_link(address: str, shown: str, module: str) -> str | None:
    """``/probe`` of the target with debug on; None when the link would show a password."""
    if address != shown:
        return None
    return "probe?" + urlencode({"target": address, "module": module, "debug": "true"})
