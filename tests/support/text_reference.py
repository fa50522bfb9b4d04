"""The text exposition written a line at a time, as the exporter wrote it before its renderer
was made fast: the reference its output must equal byte for byte (tests/unit/test_exposition.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from netprobe_exporter.exposition import CHUNK_TARGETS, Format, exporter_values
from netprobe_exporter.metrics import (
    Histogram,
    MetricsStore,
    TargetSeries,
    label_string,
    prober_families,
)
from netprobe_exporter.probes import Family


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


def _changes_row(s: TargetSeries) -> str:
    if not s.shows_address_changes:
        return ""
    return f"netprobe_target_address_changes_total{{{s.labels}}} {s.address_changes}\n"


def _addresses_row(name: str, index: int) -> Row:
    def row(s: TargetSeries) -> str:
        return "".join(
            f'{name}{{{s.labels},family="{c[0]}"}} {c[index]}\n' for c in s.address_counts()
        )

    return row


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
    (91, "netprobe_target_address_changes_total", "counter",
     "Times the address probed changed (with every_address: the set of addresses).",
     _changes_row),
    (92, "netprobe_target_addresses", "gauge",
     "With every_address: addresses of the name probed, by family.",
     _addresses_row("netprobe_target_addresses", 1)),
    (93, "netprobe_target_addresses_up", "gauge",
     "With every_address: addresses whose last probe succeeded, by family.",
     _addresses_row("netprobe_target_addresses_up", 2)),
]  # fmt: skip


def target_families() -> list[tuple[str, str, str, Row]]:
    """The core families and every registered prober's, in exposition order."""
    rows = list(CORE_FAMILIES)
    for f in prober_families().values():
        kind = "gauge" if f.kind == "info" else f.kind
        rows.append((f.order, f.name, kind, f.help, family_row(f)))
    rows.sort(key=lambda r: r[0])
    return [(name, kind, help_text, row) for _, name, kind, help_text, row in rows]


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
    for name, kind, help_text, row in target_families():
        series = store.all_series()
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
