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
from itertools import accumulate
from operator import attrgetter
from typing import Any

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
from netprobe_exporter.model import RESULTS
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


_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _num(value: float) -> str:
    """A sample value as before: ``repr``, with Go's spelling of the infinities and NaN."""
    text = repr(value)
    return _SPECIAL.get(text, text)


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


#: a template: constant text (str) and the index of an argument (int), in output order
Template = list[str | int]


def compile_template(template: Template, nargs: int) -> Callable[..., str]:
    """A function of ``nargs`` arguments returning ``template`` filled in, made of one f-string.

    An f-string is built in one step (one allocation, then copies); ``str.format`` re-parses its
    template at every call and costs 2.5 times as much for a histogram's 19 lines. Only
    identifiers go into the generated source: the constant text is in closure variables.
    """
    consts: list[str] = []
    parts: list[str] = []
    for item in template:
        if isinstance(item, int):
            if not 0 <= item < nargs:
                raise ValueError(f"template argument {item} of {nargs}")
            parts.append(f"{{a{item}}}")
        elif item:
            parts.append(f"{{k{len(consts)}}}")
            consts.append(item)
    params = ", ".join(f"a{i}" for i in range(nargs))
    names = ", ".join(f"k{i}" for i in range(len(consts)))
    source = (
        f"def make({names}):\n"
        f"    def fill({params}):\n"
        f"        return f'{''.join(parts)}'\n"
        f"    return fill\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    fill: Callable[..., str] = namespace["make"](*consts)
    return fill


def histogram_template(name: str, suffix: str, bounds: tuple[float, ...]) -> Template:
    """Every line of one target's histogram: the target's labels are argument 0, the
    cumulative counts 1…, then the sum and the count."""
    les = _les(bounds)
    out: Template = []
    for i, le in enumerate(les, start=1):
        out += [f"{name}_bucket{{", 0, f'{suffix},le="{le}"}} ', i, "\n"]
    n = len(les)
    out += [f"{name}_sum{{", 0, f"{suffix}}} ", n + 1, "\n"]
    out += [f"{name}_count{{", 0, f"{suffix}}} ", n + 2, "\n"]
    return out


_templates: dict[tuple[str, str, tuple[float, ...]], Callable[..., str]] = {}


def _filler(name: str, suffix: str, bounds: tuple[float, ...]) -> Callable[..., str]:
    key = (name, suffix, bounds)
    found = _templates.get(key)
    if found is None:
        template = histogram_template(name, suffix, bounds)
        found = _templates[key] = compile_template(template, len(bounds) + 4)
    return found


def _histogram_text(name: str, suffix: str, labels: str, h: Histogram) -> str:
    fill = _filler(name, suffix, h.bounds)
    return fill(labels, *accumulate(h.counts), _num(h.sum), h.count)


#: one family's lines for a chunk of targets
Rows = Callable[[list[TargetSeries]], str]


def _gauge_rows(name: str, attr: str) -> Rows:
    get = attrgetter(attr)
    special = _SPECIAL.get

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            value = get(s)
            if value is not None:
                text = repr(value)
                out.append(f"{name}{{{s.labels}}} {special(text, text)}\n")
        return "".join(out)

    return rows


_fill_results = compile_template(
    [p for i, r in enumerate(RESULTS, start=1)
     for p in ("netprobe_probes_total{", 0, f',result="{r}"}} ', i, "\n")],
    len(RESULTS) + 1,
)  # fmt: skip


def _results_rows(chunk: list[TargetSeries]) -> str:
    fill = _fill_results
    return "".join([fill(s.labels, *s.result_counts) for s in chunk])


def _hist_rows(name: str, attr: str) -> Rows:
    get = attrgetter(attr)

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        bounds: tuple[float, ...] | None = None
        fill = str.format
        for s in chunk:
            h: Histogram = get(s)
            if h.bounds is not bounds:
                bounds, fill = h.bounds, _filler(name, "", h.bounds)
            out.append(fill(s.labels, *accumulate(h.counts), _num(h.sum), h.count))
        return "".join(out)

    return rows


def _info_rows(chunk: list[TargetSeries]) -> str:
    return "".join(
        [f'netprobe_target_info{{{s.labels},ip="{s.ip}"}} 1\n' for s in chunk if s.ip is not None]
    )


def _changes_rows(chunk: list[TargetSeries]) -> str:
    return "".join(
        [f"netprobe_target_address_changes_total{{{s.labels}}} {s.address_changes}\n"
         for s in chunk if s.shows_address_changes]
    )  # fmt: skip


def _addresses_rows(name: str, up: bool) -> Rows:
    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            if s.children is not None:
                for family, probed, n_up in s.address_counts():
                    out.append(f'{name}{{{s.labels},family="{family}"}} {n_up if up else probed}\n')
        return "".join(out)

    return rows


def _family_histogram_rows(f: Family) -> Rows:
    name = f.name
    suffixes = [f',{f.label}="{value}"' for value in f.label_values] or [""]

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            hists = s.histograms
            found = None if hists is None else hists.get(name)
            if found is not None:
                labels = s.labels
                for suffix, h in zip(suffixes, found, strict=False):  # made up to the highest seen
                    out.append(_histogram_text(name, suffix, labels, h))
        return "".join(out)

    return rows


def _family_gauge_rows(f: Family) -> Rows:
    name = f.name

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            gauges = s.gauges
            value = None if gauges is None else gauges.get(name)
            if value is not None:
                out.append(f"{name}{{{s.labels}}} {_num(value)}\n")
        return "".join(out)

    return rows


def _family_counter_rows(f: Family) -> Rows:
    name = f.name
    suffixes = [f',{f.label}="{value}"' for value in f.label_values] or [""]

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            counters = s.counters
            found = None if counters is None else counters.get(name)
            if found is not None:
                labels = s.labels
                for suffix, v in zip(suffixes, found, strict=False):  # made up to the highest seen
                    out.append(f"{name}{{{labels}{suffix}}} {_num(v)}\n")
        return "".join(out)

    return rows


def _family_info_rows(f: Family) -> Rows:
    name, label = f.name, f.label

    def rows(chunk: list[TargetSeries]) -> str:
        out = []
        for s in chunk:
            infos = s.infos
            value = None if infos is None else infos.get(name)
            if value is not None:
                out.append(f'{name}{{{s.labels},{label}="{value}"}} 1\n')
        return "".join(out)

    return rows


def family_rows(f: Family) -> Rows:
    """How a prober's declared family is written for a chunk of targets."""
    if f.kind == "histogram":
        return _family_histogram_rows(f)
    if f.kind == "info":
        return _family_info_rows(f)
    if f.kind == "counter":
        return _family_counter_rows(f)
    return _family_gauge_rows(f)


#: every target has these, whatever its prober (config.target_series counts them)
CORE_FAMILIES: list[tuple[int, str, str, str, Rows]] = [
    (10, "netprobe_up", "gauge", "1 if the last probe of the target succeeded, else 0.",
     _gauge_rows("netprobe_up", "up")),
    (20, "netprobe_probes_total", "counter", "Probes run, by result.", _results_rows),
    (30, "netprobe_connect_duration_seconds", "histogram",
     "Time to establish the TCP connection, successful connects only.",
     _hist_rows("netprobe_connect_duration_seconds", "connect")),
    (50, "netprobe_probe_duration_seconds", "histogram",
     "Duration of the whole probe, every result.",
     _hist_rows("netprobe_probe_duration_seconds", "probe")),
    (60, "netprobe_last_connect_duration_seconds", "gauge", "The last successful connect time.",
     _gauge_rows("netprobe_last_connect_duration_seconds", "last_connect")),
    (70, "netprobe_last_probe_timestamp_seconds", "gauge", "Unix time the last probe finished.",
     _gauge_rows("netprobe_last_probe_timestamp_seconds", "last_probe_ts")),
    (80, "netprobe_last_success_timestamp_seconds", "gauge",
     "Unix time of the last successful probe.",
     _gauge_rows("netprobe_last_success_timestamp_seconds", "last_success_ts")),
    (90, "netprobe_target_info", "gauge", "The address the target's last probe went to.",
     _info_rows),
    (91, "netprobe_target_address_changes_total", "counter",
     "Times the address probed changed (with every_address: the set of addresses).",
     _changes_rows),
    (92, "netprobe_target_addresses", "gauge",
     "With every_address: addresses of the name probed, by family.",
     _addresses_rows("netprobe_target_addresses", up=False)),
    (93, "netprobe_target_addresses_up", "gauge",
     "With every_address: addresses whose last probe succeeded, by family.",
     _addresses_rows("netprobe_target_addresses_up", up=True)),
]  # fmt: skip


def target_families() -> list[tuple[str, str, str, Rows]]:
    """The core families and every registered prober's, in exposition order."""
    rows = list(CORE_FAMILIES)
    for f in prober_families().values():
        kind = "gauge" if f.kind == "info" else f.kind
        rows.append((f.order, f.name, kind, f.help, family_rows(f)))
    rows.sort(key=lambda r: r[0])
    return [(name, kind, help_text, row) for _, name, kind, help_text, row in rows]


TARGET_FAMILIES = target_families()
_families_for: tuple[str, ...] = tuple(PROBERS)


def current_families() -> list[tuple[str, str, str, Rows]]:
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
    hits, misses, queries = st.dns()
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
        ("netprobe_dns_cache_lookups_total", "counter",
         "Continuous-mode DNS lookups, by result: hit (answered from the cache) or miss.",
         [((("result", "hit"),), hits), ((("result", "miss"),), misses)]),
        ("netprobe_dns_queries_total", "counter",
         "DNS queries sent for continuous-mode lookups (/probe's not counted).",
         [((), queries)]),
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
    series = store.all_series()  # one set for the whole render, even across a reload
    for name, kind, help_text, row in current_families():
        header = _header(name, kind, help_text, om)  # only for families with samples
        for i in range(0, len(series), CHUNK_TARGETS):
            chunk = row(series[i : i + CHUNK_TARGETS])
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
