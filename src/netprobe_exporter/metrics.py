"""Metric state for continuous mode: plain objects updated per probe, rendered by ``exposition``.

Stock prometheus_client metrics cost ~3 µs per labelled observation, ~5 KiB per target and over a
second to render 10,000 targets; these plain slots cost a fraction of that and let the renderer
stream. Nothing here knows of sockets: it consumes ``ProbeResult`` values.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import twisted

from netprobe_exporter import __version__, python_version
from netprobe_exporter.model import RESULTS, ProbeResult, SeriesSink, Target
from netprobe_exporter.nhist import DEFAULT_NATIVE, NativeBuckets, NativeSpec
from netprobe_exporter.probes import Family
from netprobe_exporter.probes.all import PROBERS

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...], tuple[float, ...], float, int, float]
#: probes per target remembered for the status page
HISTORY = 30
RESULT_CODE = {name: i for i, name in enumerate(RESULTS)}

LAG_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_string(pairs: Iterable[tuple[str, str]]) -> str:
    """``name="value",…`` with values escaped, as the text formats want them."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)


def series_key(target: Target) -> SeriesKey:
    """Series survive a reload while address, module, labels and buckets (classic and native)
    are unchanged."""
    return (
        target.address,
        target.module,
        target.labels,
        target.buckets,
        target.native_histogram_bucket_factor,
        target.native_histogram_max_buckets,
        target.native_histogram_zero_threshold,
    )


class Histogram:
    """A cumulative-on-render histogram: ``counts[i]`` holds observations in bucket i only;
    ``native`` the same observations in native buckets (only the protobuf format shows them)."""

    __slots__ = ("bounds", "count", "counts", "native", "sum")

    def __init__(self, bounds: tuple[float, ...], native: NativeSpec = DEFAULT_NATIVE) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.native = NativeBuckets(native)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.native.observe(value)
        self.sum += value
        self.count += 1


def prober_families() -> dict[str, Family]:
    """Every family the registered probers declare, by name (shared ones once)."""
    return {f.name: f for spec in PROBERS.values() for f in spec.families}


#: label values of the labelled histogram families (``phase``), by family name
_LABEL_VALUES = {name: f.label_values for name, f in prober_families().items()}


class TargetSeries(SeriesSink):
    """Every continuous-mode series of one target: the core ones, and those its prober's
    results feed (by family name, made by the first result that has them)."""

    __slots__ = (
        "buckets",
        "connect",
        "detail",
        "gauges",
        "histograms",
        "history",
        "history_seconds",
        "infos",
        "ip",
        "labels",
        "last_connect",
        "last_probe_ts",
        "last_success_ts",
        "native",
        "observed",
        "pairs",
        "pb_labels",
        "probe",
        "results",
        "target",
        "up",
    )

    def __init__(self, target: Target) -> None:
        pairs = [("target", target.display_address), ("module", target.module), *target.labels]
        self.target = target
        self.labels = label_string(pairs)
        #: the same labels unescaped, for the protobuf format
        self.pairs = tuple(pairs)
        #: ``pairs`` encoded for the protobuf format, made by its first render
        self.pb_labels: bytes | None = None
        # the status page's recent history, a ring allocated whole so that memory stays flat:
        # result codes (RESULTS index) and probe durations; ``observed`` counts every probe
        self.history = bytearray(HISTORY)
        self.history_seconds = array("f", bytes(4 * HISTORY))
        self.observed = 0
        self.detail = ""
        self.up: float | None = None
        self.results = dict.fromkeys(RESULTS, 0)
        self.native = target.native
        self.connect = Histogram(target.buckets, target.native)
        self.probe = Histogram(target.buckets, target.native)
        self.last_connect: float | None = None
        self.last_probe_ts: float | None = None
        self.last_success_ts: float | None = None
        self.ip: str | None = None
        self.buckets = target.buckets
        # the prober's families: histograms (one per label value), gauges, info label values
        self.histograms: dict[str, list[Histogram]] | None = None
        self.gauges: dict[str, float] | None = None
        self.infos: dict[str, str] | None = None

    def recent(self) -> list[tuple[str, float]]:
        """The last (up to) ``HISTORY`` probes, oldest first: (result, seconds)."""
        first = max(self.observed - HISTORY, 0)
        return [
            (RESULTS[self.history[i % HISTORY]], self.history_seconds[i % HISTORY])
            for i in range(first, self.observed)
        ]

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        hists = self.histograms
        if hists is None:
            hists = self.histograms = {}
        found = hists.get(family)
        if found is None:
            declared = _LABEL_VALUES.get(family)
            if declared is None:  # a prober registered after this module was imported
                declared = _LABEL_VALUES[family] = prober_families()[family].label_values
            count = len(declared) or 1
            found = hists[family] = [Histogram(self.buckets, self.native) for _ in range(count)]
        found[label].observe(value)

    def gauge(self, family: str, value: float) -> None:
        if self.gauges is None:
            self.gauges = {}
        self.gauges[family] = value

    def info(self, family: str, label_value: str) -> None:
        if self.infos is None:
            self.infos = {}
        self.infos[family] = label_value

    def observe(self, result: ProbeResult, now: float) -> None:
        name = result.result if result.result in self.results else "error"
        self.results[name] += 1
        slot = self.observed % HISTORY
        self.history[slot] = RESULT_CODE[name]
        self.history_seconds[slot] = result.duration
        self.observed += 1
        self.detail = result.detail
        self.probe.observe(result.duration)
        self.last_probe_ts = now
        if result.ip is not None:
            self.ip = result.ip
        if result.success:
            self.up = 1.0
            self.last_success_ts = now
        else:
            self.up = 0.0
        if result.connect_duration is not None:
            self.connect.observe(result.connect_duration)
            self.last_connect = result.connect_duration
        if result.details is not None:
            result.details.observe(self, result)


@dataclass
class ExporterStats:
    """The exporter's own health figures."""

    skipped: int = 0
    module_unknown: int = 0
    probe_requests: int = 0
    reload_successful: float = 0.0
    reload_success_ts: float = 0.0
    #: the --web.config.file's last reload (1 with no file: there is nothing to fail)
    web_reload_successful: float = 1.0
    web_reload_success_ts: float = 0.0
    target_file_errors: int = 0
    target_files_ok: float = 1.0
    #: probe workers started again after one exited or hung
    worker_restarts: int = 0

    def __post_init__(self) -> None:
        self.inflight_source: Callable[[], int] = lambda: 0
        self.lag = Histogram(LAG_BUCKETS)
        self.build_pairs = (
            ("version", __version__),
            ("python", python_version()),
            ("twisted", twisted.__version__),
        )
        self.build_labels = label_string(self.build_pairs)


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The series of a config about to run, built before anything is swapped."""

    series: dict[SeriesKey, TargetSeries]
    modules: dict[str, int]


class MetricsStore:
    """Target series keyed by identity, plus exporter stats."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, TargetSeries] = {}
        self.modules: dict[str, int] = {}
        self.stats = ExporterStats()

    def plan(self, targets: Iterable[Target]) -> SeriesPlan:
        """The series ``targets`` need: kept ones are the same objects, new ones are made here.

        Reads ``self.series`` only, so a reload builds this off the reactor thread; ``commit``
        then swaps it in at once.
        """
        old = self.series
        new: dict[SeriesKey, TargetSeries] = {}
        modules: dict[str, int] = {}
        for t in targets:
            key = series_key(t)
            new[key] = old.get(key) or TargetSeries(t)
            modules[t.module] = modules.get(t.module, 0) + 1
        return SeriesPlan(new, modules)

    def commit(self, plan: SeriesPlan) -> None:
        """Swap in a planned set of series: kept ones keep their values, gone ones vanish."""
        self.series = plan.series
        self.modules = plan.modules

    def sync(self, targets: Iterable[Target]) -> None:
        """Make the series match ``targets`` in one step (``plan`` then ``commit``)."""
        self.commit(self.plan(targets))

    def up(self, target: Target) -> float | None:
        """The target's ``netprobe_up`` value; None before its first probe or if unknown."""
        series = self.series.get(series_key(target))
        return None if series is None else series.up

    def observe(self, target: Target, result: ProbeResult, now: float) -> None:
        series = self.series.get(series_key(target))
        if series is not None:  # None: the target left the config while its probe ran
            series.observe(result, now)
