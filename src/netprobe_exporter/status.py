"""The status page's data: every continuous target's state, history and latency, paged.

For a person at a browser, not for Prometheus. ``/`` and ``/target`` are small HTML shells
(``status_assets``) whose script asks ``/status.json`` and ``/target.json`` for data and redraws
them every few seconds. The list is filtered, sorted and paged here, on the server, so a
10,000-target exporter builds only the visible page's rows: one pass over the targets for the
counts, the filter and the sort key, then rows for at most ``MAX_PER_PAGE`` targets.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from netprobe_exporter import __version__
from netprobe_exporter.history import ProbeHistory
from netprobe_exporter.metrics import HISTORY, RESULT_CODE, MetricsStore, SeriesKey, TargetSeries
from netprobe_exporter.model import RESULTS

STATES = ("all", "down", "flapping", "pending", "up")
#: success/failure changes among the kept results that make a target flapping
FLAP_CHANGES = 4
PER_PAGE = 100
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


def base_state(s: TargetSeries) -> str:
    return "pending" if s.up is None else ("up" if s.up else "down")


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
    state = base_state(s)
    if state != "pending" and s.last_failure is not None and changes(s) >= FLAP_CHANGES:
        return "flapping"
    return state


def series_id(key: SeriesKey) -> str:
    """A short stable name of a target for URLs (its address may hold a password)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


def _labels(s: TargetSeries) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.target.labels)


def _matches(s: TargetSeries, query: Query, q: str, label: str) -> bool:
    t = s.target
    if query.module and t.module != query.module:
        return False
    if q and q not in t.display_address.lower():
        return False
    if label:
        pairs = [f"{k}={v}".lower() for k, v in t.labels]
        if not any(label in pair for pair in pairs):
            return False
    return True


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


class StatusView:
    """Builds the page's JSON from the store; remembers each target's id until a reload."""

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
        self._ids: dict[SeriesKey, str] = {}
        self._by_id: dict[str, SeriesKey] = {}

    def _id_maps(self) -> dict[SeriesKey, str]:
        series = self.store.series
        if self._for is not series:  # a reload swapped the dict: name the new set
            self._ids = {key: self._ids.get(key) or series_id(key) for key in series}
            self._by_id = {sid: key for key, sid in self._ids.items()}
            self._for = series
        return self._ids

    def find(self, sid: str) -> TargetSeries | None:
        self._id_maps()
        key = self._by_id.get(sid)
        return None if key is None else self.store.series.get(key)

    def page(self, query: Query) -> dict[str, Any]:
        """The summary, banners, health, the requested page of rows and recent /probes."""
        ids = self._id_maps()
        counts = dict.fromkeys(STATES[1:], 0)
        q, label = query.q.lower(), query.label.lower()
        picked: list[tuple[int, str, str, SeriesKey, str]] = []
        for key, s in self.store.series.items():
            state = state_of(s)
            counts[state] += 1
            if query.state != "all" and state != query.state:
                continue
            if (q or label or query.module) and not _matches(s, query, q, label):
                continue
            picked.append((_RANK[state], s.target.display_address, s.target.module, key, state))
        picked.sort(key=lambda p: p[:3])
        total = len(picked)
        pages = max((total + query.per_page - 1) // query.per_page, 1)
        number = min(query.page, pages)
        start = (number - 1) * query.per_page
        series = self.store.series
        rows = [
            row(series[key], ids[key], state)
            for _, _, _, key, state in picked[start : start + query.per_page]
        ]
        return {
            "now": self.wall(),
            "summary": {"targets": len(series), **counts},
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

    def target(self, sid: str) -> dict[str, Any] | None:
        """One target's page: its row plus TLS expiry, totals, IP and the /probe debug link."""
        s = self.find(sid)
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
        )
        return data

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
