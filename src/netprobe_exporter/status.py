"""The status page at ``/``: every continuous target, its state, last latency and recent history.

For a person at a browser, not for Prometheus: down targets come first, each row shows the last
result and why, the last probe and connect times, and the last ``metrics.HISTORY`` results as
coloured cells (hover for result and duration). Like ``/metrics`` it is a generator of chunks, so
the web layer streams a 10,000-target page without holding the reactor.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from urllib.parse import urlencode

from netprobe_exporter import __version__
from netprobe_exporter.metrics import MetricsStore, TargetSeries

CHUNK_ROWS = 200
STATES = ("all", "down", "up", "pending")

_STYLE = """
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:90%}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.up{color:#17622c}.down{color:#a11}.pending{color:#777}.h{letter-spacing:-1px;white-space:nowrap}
.s{color:#3a3}.f{color:#c33}.n{font-family:monospace}
nav a{margin-right:1em}
"""


def _state(s: TargetSeries) -> str:
    return "pending" if s.up is None else ("up" if s.up else "down")


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.2f} ms"


def _ago(ts: float | None, now: float) -> str:
    return "never" if ts is None else f"{max(now - ts, 0.0):.1f} s ago"


def _history(recent: list[tuple[str, float]]) -> str:
    """Runs of successes and failures as coloured blocks; the cell's title has the latencies."""
    if not recent:
        return "<td></td>"
    runs: list[str] = []
    run_ok, run_len = recent[0][0] == "success", 0
    for result, _ in recent:
        ok = result == "success"
        if ok != run_ok:
            runs.append(f'<span class="{"s" if run_ok else "f"}">{"▮" * run_len}</span>')
            run_ok, run_len = ok, 0
        run_len += 1
    runs.append(f'<span class="{"s" if run_ok else "f"}">{"▮" * run_len}</span>')
    ms = [seconds * 1000 for _, seconds in recent]
    title = f"probe time min {min(ms):.2f} / avg {sum(ms) / len(ms):.2f} / max {max(ms):.2f} ms"
    return f'<td class="h" title="{title}">{"".join(runs)}</td>'


def _row(s: TargetSeries, now: float) -> str:
    t = s.target
    state = _state(s)
    recent = s.recent()
    ok = sum(1 for result, _ in recent if result == "success")
    ratio = f"{100 * ok / len(recent):.0f}%" if recent else ""
    last, last_seconds = recent[-1] if recent else ("", None)
    why = f"<br><small>{html.escape(s.detail)}</small>" if s.detail and last != "success" else ""
    labels = ", ".join(f"{k}={v}" for k, v in t.labels)
    return (
        f'<tr><td class="n">{html.escape(t.display_address)}</td><td>{html.escape(t.module)}</td>'
        f'<td>{html.escape(labels)}</td><td class="{state}">{state}</td>'
        f"<td>{html.escape(last)}{why}</td><td>{_ms(last_seconds)}</td>"
        f"<td>{_ms(s.last_connect)}</td><td>{_ago(s.last_probe_ts, now)}</td>"
        f"<td>{ratio}</td>{_history(recent)}</tr>\n"
    )


def _probe_link(series: list[TargetSeries]) -> str:
    """A /probe of the first target with its own module: one click to its blackbox view."""
    # a target with a password in its URL is left out: the link would show the password
    t = next((s.target for s in series if s.target.display_address == s.target.address), None)
    if t is None:
        return ""
    query = urlencode({"target": t.address, "module": t.module})
    return f'<a href="probe?{html.escape(query)}&amp;debug=true">probe (debug)</a>'


def render(store: MetricsStore, config_source: str, state: str = "all",
           now: float | None = None) -> Iterator[str]:  # fmt: skip
    """Yield the page in chunks of at most CHUNK_ROWS rows; ``state`` filters the rows."""
    now = time.time() if now is None else now
    series = list(store.series.values())
    counts = {name: 0 for name in STATES[1:]}
    for s in series:
        counts[_state(s)] += 1
    order = {"down": 0, "pending": 1, "up": 2}
    series.sort(key=lambda s: (order[_state(s)], s.target.display_address, s.target.module))
    if state != "all":
        series = [s for s in series if _state(s) == state]
    nav = " ".join(f'<a href="?state={name}">{name}</a>' for name in STATES)
    yield (
        '<!doctype html><html><head><meta charset="utf-8"><title>netprobe-exporter</title>'
        f"<style>{_STYLE}</style></head><body><h1>netprobe-exporter</h1>"
        '<nav><a href="metrics">metrics</a><a href="config">config</a>'
        f"{_probe_link(series)}"
        '<a href="-/healthy">health</a><a href="-/ready">readiness</a></nav>'
        f"<p>version {html.escape(__version__)} · config {html.escape(config_source)} · "
        f"{len(store.series)} {'target' if len(store.series) == 1 else 'targets'}: "
        f"{counts['up']} up, {counts['down']} down, "
        f"{counts['pending']} pending</p><p>show: {nav}</p>"
        "<table><tr><th>target</th><th>module</th><th>labels</th><th>state</th>"
        "<th>last result</th><th>last probe</th><th>last connect</th><th>when</th>"
        "<th>recent success</th><th>recent probes (oldest first)</th></tr>\n"
    )
    for i in range(0, len(series), CHUNK_ROWS):
        yield "".join(_row(s, now) for s in series[i : i + CHUNK_ROWS])
    yield "</table></body></html>\n"
