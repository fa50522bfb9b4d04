"""Rendering the store in the Prometheus text format (0.0.4) and OpenMetrics 1.0.

The renderer is a generator of string chunks, each covering a bounded number of targets, so the
web layer can interleave rendering with probe I/O on the reactor thread instead of stalling it
for a whole 10,000-target scrape (see ``web.MetricsResource``). Families are grouped as both
formats require; each target's histogram is rendered in one piece, so it is self-consistent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from netprobe_exporter.metrics import (
    Histogram,
    MetricsStore,
    TargetSeries,
    label_string,
    prober_families,
)
from netprobe_exporter.probes import Family
from netprobe_exporter.probes.all import PROBERS

CHUNK_TARGETS = 200


@dataclass(frozen=True, slots=True)
class Format:
    openmetrics: bool
    content_type: str
    #: delimited io.prometheus.client.MetricFamily messages (``protobuf_exposition``)
    protobuf: bool = False


TEXT = Format(False, text_exposition.CONTENT_TYPE_PLAIN_0_0_4)
OPENMETRICS = Format(True, om_exposition.CONTENT_TYPE_LATEST)
PROTOBUF_MIME = "application/vnd.google.protobuf"
PROTOBUF_PROTO = "io.prometheus.client.MetricFamily"
PROTOBUF = Format(
    False, f"{PROTOBUF_MIME}; proto={PROTOBUF_PROTO}; encoding=delimited", protobuf=True
)


def _media(part: str) -> tuple[str, float, dict[str, str]]:
    """A media range's type, q-value and other parameters (lower-cased names)."""
    fields = [f.strip() for f in part.split(";")]
    q = 1.0
    params: dict[str, str] = {}
    for f in fields[1:]:
        name, _, value = f.partition("=")
        name = name.strip().lower()
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
            if not 0.0 <= q <= 1.0 or math.isnan(q):
                q = 0.0
        else:
            params[name] = value.strip().strip('"')
    return fields[0].lower(), q, params


def _params(part: str) -> tuple[str, float]:
    mime, q, _ = _media(part)
    return mime, q


def _format_of(mime: str, params: dict[str, str]) -> Format | None:
    if mime == PROTOBUF_MIME:
        delimited = params.get("encoding") == "delimited"
        return PROTOBUF if delimited and params.get("proto") == PROTOBUF_PROTO else None
    return {"application/openmetrics-text": OPENMETRICS, "text/plain": TEXT}.get(mime)


def negotiate(accept: str | None) -> Format:
    """Pick the format by the Accept header's q-values (prometheus_client ignores them); the
    protobuf one only for delimited MetricFamily messages, the one form Prometheus reads."""
    best, best_q = TEXT, 0.0
    for part in (accept or "").split(","):
        mime, q, params = _media(part)
        fmt = _format_of(mime, params)
        if fmt is not None and q > best_q:
            best, best_q = fmt, q
    return best


def wants_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        coding, q = _params(part)
        if coding == "gzip" and q > 0:
            return True
    return False


def _num(value: float) -> str:
    if value == math.inf or value == -math.inf or value != value:
        return str(floatToGoString(value))
    return repr(value)


def _header(name: str, kind: str, help_text: str, om: bool) -> str:
    family = name[: -len("_total")] if om and kind == "counter" else name
    return f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n"


def _histogram_lines(name: str, labels: str, h: Histogram, les: list[str]) -> str:
    out = []
    cum = 0
    sep = "," if labels else ""
    for le, c in zip(les, h.counts, strict=True):
        cum += c
        out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cum}\n')
    lb = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_sum{lb} {_num(h.sum)}\n{name}_count{lb} {h.count}\n")
    return "".join(out)


_le_cache: dict[tuple[float, ...], list[str]] = {}


def _les(bounds: tuple[float, ...]) -> list[str]:
    les = _le_cache.get(bounds)
    if les is None:
        les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        _le_cache[bounds] = les
    return les


Row = Callable[[TargetSeries], str]


def _gauge_row(name: str, attr: str) -> Row:
    def row(s: TargetSeries) -> str:
        value: float | None = getattr(s, attr)
        return "" if value is None else f"{name}{{{s.labels}}} {_num(value)}\n"

    return row


def _results_row(s: TargetSeries) -> str:
    lbl = s.labels
    return "".join(
        f'netprobe_probes_total{{{lbl},result="{r}"}} {n}\n' for r, n in s.results.items()
    )


def _hist_row(name: str, attr: str) -> Row:
    def row(s: TargetSeries) -> str:
        h: Histogram = getattr(s, attr)
        return _histogram_lines(name, s.labels, h, _les(h.bounds))

    return row


def _info_row(s: TargetSeries) -> str:
    if s.ip is None:
        return ""
    return f'netprobe_target_info{{{s.labels},ip="{s.ip}"}} 1\n'


def _family_histogram_row(f: Family) -> Row:
    name = f.name

    def row(s: TargetSeries) -> str:
        hists = s.histograms
        found = None if hists is None else hists.get(name)
        if found is None:
            return ""
        h = found[0]
        return _histogram_lines(name, s.labels, h, _les(h.bounds))

    return row


def _family_labelled_histogram_row(f: Family) -> Row:
    name = f.name
    suffixes = [f',{f.label}="{value}"' for value in f.label_values]

    def row(s: TargetSeries) -> str:
        hists = s.histograms
        found = None if hists is None else hists.get(name)
        if found is None:
            return ""
        return "".join(
            _histogram_lines(name, s.labels + suffix, h, _les(h.bounds))
            for suffix, h in zip(suffixes, found, strict=True)
        )

    return row


def _family_gauge_row(f: Family) -> Row:
    name = f.name

    def row(s: TargetSeries) -> str:
        gauges = s.gauges
        value = None if gauges is None else gauges.get(name)
        return "" if value is None else f"{name}{{{s.labels}}} {_num(value)}\n"

    return row


def _family_info_row(f: Family) -> Row:
    name, label = f.name, f.label

    def row(s: TargetSeries) -> str:
        infos = s.infos
        value = None if infos is None else infos.get(name)
        return "" if value is None else f'{name}{{{s.labels},{label}="{value}"}} 1\n'

    return row


def family_row(f: Family) -> Row:
    """How a prober's declared family is written for one target."""
    if f.kind == "histogram":
        return _family_labelled_histogram_row(f) if f.label_values else _family_histogram_row(f)
    if f.kind == "info":
        return _family_info_row(f)
    return _family_gauge_row(f)


#: every target has these, whatever its prober (config.target_series counts them)
CORE_FAMILIES: list[tuple[int, str, str, str, Row]] = [
    (10, "netprobe_up", "gauge", "1 if the last probe of the target succeeded, else 0.",
     _gauge_row("netprobe_up", "up")),
    (20, "netprobe_probes_total", "counter", "Probes run, by result.", _results_row),
    (30, "netprobe_connect_duration_seconds", "histogram",
     "Time to establish the TCP connection, successful connects only.",
     _hist_row("netprobe_connect_duration_seconds", "connect")),
    (50, "netprobe_probe_duration_seconds", "histogram",
     "Duration of the whole probe, every result.",
     _hist_row("netprobe_probe_duration_seconds", "probe")),
    (60, "netprobe_last_connect_duration_seconds", "gauge", "The last successful connect time.",
     _gauge_row("netprobe_last_connect_duration_seconds", "last_connect")),
    (70, "netprobe_last_probe_timestamp_seconds", "gauge", "Unix time the last probe finished.",
     _gauge_row("netprobe_last_probe_timestamp_seconds", "last_probe_ts")),
    (80, "netprobe_last_success_timestamp_seconds", "gauge",
     "Unix time of the last successful probe.",
     _gauge_row("netprobe_last_success_timestamp_seconds", "last_success_ts")),
    (90, "netprobe_target_info", "gauge", "The address the target's last probe went to.",
     _info_row),
]  # fmt: skip


def target_families() -> list[tuple[str, str, str, Row]]:
    """The core families and every registered prober's, in exposition order."""
    rows = list(CORE_FAMILIES)
    for f in prober_families().values():
        kind = "gauge" if f.kind == "info" else f.kind
        rows.append((f.order, f.name, kind, f.help, family_row(f)))
    rows.sort(key=lambda r: r[0])
    return [(name, kind, help_text, row) for _, name, kind, help_text, row in rows]


TARGET_FAMILIES = target_families()
_families_for: tuple[str, ...] = tuple(PROBERS)


def current_families() -> list[tuple[str, str, str, Row]]:
    """TARGET_FAMILIES, made again if a prober registered since (one tuple per render)."""
    global TARGET_FAMILIES, _families_for
    if tuple(PROBERS) != _families_for:
        TARGET_FAMILIES, _families_for = target_families(), tuple(PROBERS)
    return TARGET_FAMILIES


#: one exporter family: name, type, help, and its samples (label pairs, value)
Pairs = tuple[tuple[str, str], ...]
ExporterSample = tuple[Pairs, int | float | Histogram]
ExporterFamily = tuple[str, str, str, list[ExporterSample]]


def exporter_values(store: MetricsStore) -> list[ExporterFamily]:
    """The exporter's own families, for every format."""
    st = store.stats
    return [
        ("netprobe_build_info", "gauge", "Version of the exporter and its runtime.",
         [(st.build_pairs, 1)]),
        ("netprobe_targets", "gauge", "Continuous-mode targets, by module.",
         [((("module", m),), n) for m, n in sorted(store.modules.items())]),
        ("netprobe_inflight_probes", "gauge", "Probes running now.",
         [((), st.inflight_source())]),
        ("netprobe_scheduler_lag_seconds", "histogram",
         "How late continuous probes started after their scheduled time.", [((), st.lag)]),
        ("netprobe_scheduler_skipped_probes_total", "counter",
         "Scheduled probes not started because the previous one had not finished.",
         [((), st.skipped)]),
        ("netprobe_module_unknown_total", "counter",
         "/probe requests that named a module the config does not have.",
         [((), st.module_unknown)]),
        ("netprobe_probe_requests_total", "counter", "/probe requests answered.",
         [((), st.probe_requests)]),
        ("netprobe_config_last_reload_successful", "gauge",
         "1 if the last config load succeeded, else 0.", [((), st.reload_successful)]),
        ("netprobe_config_last_reload_success_timestamp_seconds", "gauge",
         "Unix time of the last successful config load.", [((), st.reload_success_ts)]),
        ("netprobe_web_config_last_reload_successful", "gauge",
         "1 if the last web config (TLS, basic auth) load succeeded, else 0.",
         [((), st.web_reload_successful)]),
        ("netprobe_web_config_last_reload_success_timestamp_seconds", "gauge",
         "Unix time of the last successful web config load (0: none since start).",
         [((), st.web_reload_success_ts)]),
        ("netprobe_target_files_last_read_successful", "gauge",
         "1 if every target file read well at the last look, else 0.",
         [((), st.target_files_ok)]),
        ("netprobe_target_file_read_errors_total", "counter",
         "Target file reads that failed (the file's previous targets were kept).",
         [((), st.target_file_errors)]),
        ("netprobe_worker_restarts_total", "counter",
         "Probe worker processes started again after one exited or stopped answering.",
         [((), st.worker_restarts)]),
    ]  # fmt: skip


def _exporter_sample(
    name: str, pairs: tuple[tuple[str, str], ...], value: float | Histogram
) -> str:
    labels = label_string(pairs)
    if isinstance(value, Histogram):
        return _histogram_lines(name, labels, value, _les(value.bounds))
    lb = f"{{{labels}}}" if labels else ""
    shown = str(value) if isinstance(value, int) else _num(value)
    return f"{name}{lb} {shown}\n"


def _exporter_families(store: MetricsStore, om: bool) -> str:
    parts = []
    for name, kind, help_text, values in exporter_values(store):
        parts.append(_header(name, kind, help_text, om))
        parts.extend(_exporter_sample(name, pairs, value) for pairs, value in values)
    return "".join(parts)


def render(store: MetricsStore, fmt: Format, registry: CollectorRegistry | None) -> Iterator[str]:
    """Yield the exposition in chunks of at most CHUNK_TARGETS targets' lines."""
    om = fmt.openmetrics
    for name, kind, help_text, row in current_families():
        series = list(store.series.values())
        header = _header(name, kind, help_text, om)  # only for families with samples
        for i in range(0, len(series), CHUNK_TARGETS):
            chunk = "".join([row(s) for s in series[i : i + CHUNK_TARGETS]])
            if chunk:
                yield header + chunk
                header = ""
    yield _exporter_families(store, om)
    if registry is not None:
        if om:
            extra = om_exposition.generate_latest(registry).decode()
            yield extra.removesuffix("# EOF\n")
        else:
            yield text_exposition.generate_latest(registry).decode()
    if om:
        yield "# EOF\n"
