"""Metric state for continuous mode: plain objects updated per probe, rendered by ``exposition``.

Stock prometheus_client metrics cost ~3 µs per labelled observation, ~5 KiB per target and over a
second to render 10,000 targets; these plain slots cost a fraction of that and let the renderer
stream. Nothing here knows of sockets: it consumes ``ProbeResult`` values.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from math import frexp, inf

import twisted

from netprobe_exporter import __version__, python_version
from netprobe_exporter.model import RESULTS, ProbeResult, SeriesSink, Target, family_counts
from netprobe_exporter.nhist import DEFAULT_NATIVE, NativeBuckets, NativeSpec
from netprobe_exporter.probes import Family
from netprobe_exporter.probes.all import PROBERS

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...], tuple[float, ...], float, int, float]
#: probes per target remembered for the status page
HISTORY = 30
_INF = inf
RESULT_CODE = {name: i for i, name in enumerate(RESULTS)}
_ERROR = RESULT_CODE["error"]

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


def _zeros(n: int) -> array[int]:
    """``n`` zero counts, allocated to size (``array("I", bytes(…))`` over-allocates)."""
    return array("I", [0]) * n


def _wider(counts: array[int], i: int) -> array[int]:
    """``counts`` in 64-bit words, with one more in ``i``: its 32-bit word was full."""
    wide = array("Q", counts)
    wide[i] += 1
    return wide


class Histogram:
    """A cumulative-on-render histogram: ``counts[i]`` holds observations in bucket i only;
    ``native`` the same observations in native buckets (only the protobuf format shows them).

    The counts are an array of 32-bit words (64-bit past 2^32 - 1 in a bucket): a list would
    hold an int object of 28 bytes per bucket once counts pass 256, some 1.3 KB per TCP target.
    """

    __slots__ = ("bounds", "count", "counts", "native", "sum")

    def __init__(self, bounds: tuple[float, ...], native: NativeSpec = DEFAULT_NATIVE) -> None:
        self.bounds = bounds
        self.counts = _zeros(len(bounds) + 1)
        self.native = NativeBuckets(native)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)
        try:
            self.counts[i] += 1
        except OverflowError:
            self.counts = _wider(self.counts, i)
        self.sum += value
        self.count += 1
        # NativeBuckets.observe's commonest case inlined (a positive duration into a bucket
        # that already has a count): this runs for every histogram of every probe
        nb = self.native
        bounds = nb.bounds
        if value > nb.zero_threshold and value < _INF and bounds is not None:
            frac, exp = frexp(value)
            pos = nb.positive
            j = bisect_left(bounds, frac) + (exp - 1) * len(bounds) - pos.start
            c = pos.counts
            if 0 <= j < len(c) and c[j]:
                c[j] += 1
                return
        nb.observe(value)


def prober_families() -> dict[str, Family]:
    """Every family the registered probers declare, by name (shared ones once)."""
    return {f.name: f for spec in PROBERS.values() for f in spec.families}


_specs: dict[NativeSpec, NativeSpec] = {}


def _native_spec(target: Target) -> NativeSpec:
    """The target's native settings, one object for every target that has the same ones."""
    spec = target.native
    return _specs.setdefault(spec, spec)


#: label values of the labelled histogram families (``phase``), by family name
_LABEL_VALUES = {name: f.label_values for name, f in prober_families().items()}


def _check_label(family: str, label: int) -> None:
    """A label index must be one the family declared (index 0 only, with none): bounded."""
    declared = _LABEL_VALUES.get(family)
    if declared is None:  # a prober registered after this module was imported
        declared = _LABEL_VALUES[family] = prober_families()[family].label_values
    if not 0 <= label < max(len(declared), 1):
        raise IndexError(f"{family}: label index {label} is not declared")


class TargetSeries(SeriesSink):
    """Every continuous-mode series of one target: the core ones, and those its prober's
    results feed (by family name, made by the first result that has them)."""

    __slots__ = (
        "address_changes",
        "buckets",
        "changed_ts",
        "children",
        "connect",
        "counters",
        "detail",
        "gauges",
        "histograms",
        "history",
        "history_seconds",
        "history_ts",
        "infos",
        "ip",
        "is_address",
        "labels",
        "last_connect",
        "last_failure",
        "last_failure_ts",
        "last_probe_ts",
        "last_success_ts",
        "native",
        "observed",
        "pb_labels",
        "probe",
        "result_counts",
        "target",
        "up",
    )

    def __init__(self, target: Target, is_address: bool = False) -> None:
        pairs = [("target", target.display_address), ("module", target.module), *target.labels]
        self.target = target
        self.labels = label_string(pairs)
        #: ``pairs`` encoded for the protobuf format, made by its first render
        self.pb_labels: bytes | None = None
        # the status page's recent history, a ring allocated whole so that memory stays flat:
        # result codes (RESULTS index) and probe durations; ``observed`` counts every probe
        self.history = bytearray(HISTORY)
        self.history_seconds = array("f", [0.0]) * HISTORY
        #: when each of those probes ended, in whole Unix seconds (for the page's tooltips)
        self.history_ts = array("I", [0]) * HISTORY
        self.observed = 0
        self.detail = ""
        #: when ``up`` last changed (first probe included): the page's "down/up since"
        self.changed_ts: float | None = None
        #: the last failure's (result, detail) and time, kept while the target is up again
        self.last_failure: tuple[str, str] | None = None
        self.last_failure_ts: float | None = None
        self.up: float | None = None
        #: probes by result, in RESULTS order
        self.result_counts = _zeros(len(RESULTS))
        self.native = _native_spec(target)
        self.connect = Histogram(target.buckets, target.native)
        self.probe = Histogram(target.buckets, target.native)
        self.last_connect: float | None = None
        self.last_probe_ts: float | None = None
        self.last_success_ts: float | None = None
        self.ip: str | None = None
        #: times the probed address (or, with every_address, the set of them) changed
        self.address_changes = 0
        #: with every_address: each address's own series, by address (None: one address)
        self.children: dict[str, TargetSeries] | None = None
        #: this is one address's series of an every_address target (its ip is a label)
        self.is_address = is_address
        self.buckets = target.buckets
        # the prober's families: histograms and counters (one per label value, up to the
        # highest observed), gauges, info label values
        self.histograms: dict[str, list[Histogram]] | None = None
        self.counters: dict[str, list[float]] | None = None
        self.gauges: dict[str, float] | None = None
        self.infos: dict[str, str] | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The target's labels unescaped (for the protobuf format)."""
        t = self.target
        return (("target", t.display_address), ("module", t.module), *t.labels)

    @property
    def results(self) -> dict[str, int]:
        """Probes by result name."""
        return dict(zip(RESULTS, self.result_counts, strict=True))

    def recent(self) -> list[tuple[str, float]]:
        """The last (up to) ``HISTORY`` probes, oldest first: (result, seconds)."""
        first = max(self.observed - HISTORY, 0)
        return [
            (RESULTS[self.history[i % HISTORY]], self.history_seconds[i % HISTORY])
            for i in range(first, self.observed)
        ]

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        hists = self.histograms
        if hists is not None and (found := hists.get(family)) is not None and label < len(found):
            found[label].observe(value)
            return
        if hists is None:
            hists = self.histograms = {}
        found = hists.get(family)
        if found is None:
            found = hists[family] = []
        if label >= len(found):
            _check_label(family, label)
            found.extend(
                Histogram(self.buckets, self.native) for _ in range(label + 1 - len(found))
            )
        found[label].observe(value)

    def counter(self, family: str, value: float, label: int = 0) -> None:
        counters = self.counters
        if counters is None:
            counters = self.counters = {}
        found = counters.get(family)
        if found is None:
            found = counters[family] = []
        if label >= len(found):
            _check_label(family, label)
            found.extend([0.0] * (label + 1 - len(found)))
        found[label] += value

    def gauge(self, family: str, value: float) -> None:
        if self.gauges is None:
            self.gauges = {}
        self.gauges[family] = value

    def info(self, family: str, label_value: str) -> str | None:
        if self.infos is None:
            self.infos = {}
        before = self.infos.get(family)
        self.infos[family] = label_value
        return before

    def observe(self, result: ProbeResult, now: float) -> None:
        code = RESULT_CODE.get(result.result, _ERROR)
        try:
            self.result_counts[code] += 1
        except OverflowError:
            self.result_counts = _wider(self.result_counts, code)
        slot = self.observed % HISTORY
        self.history[slot] = code
        self.history_seconds[slot] = result.duration
        # whole seconds in 32 bits; a clock that is not a finite time of day reads as 0
        self.history_ts[slot] = int(now) if 0.0 <= now < 4294967296.0 else 0
        self.observed += 1
        self.detail = result.detail
        self.probe.observe(result.duration)
        self.last_probe_ts = now
        ip = result.ip
        if ip is not None and not self.is_address:
            if self.ip is not None and ip != self.ip:
                self.address_changes += 1
            self.ip = ip
            self.children = None  # a reload turned every_address off: its addresses go
        up = 1.0 if result.success else 0.0
        if up != self.up:
            self.changed_ts = now
        self.up = up
        if result.success:
            self.last_success_ts = now
        else:
            self.last_failure = (RESULTS[code], result.detail)
            self.last_failure_ts = now
        if result.connect_duration is not None:
            self.connect.observe(result.connect_duration)
            self.last_connect = result.connect_duration
        if result.details is not None:
            result.details.observe(self, result)
        if result.addresses is not None:
            self._observe_addresses(result.addresses, now)

    def _observe_addresses(self, addresses: list[tuple[str, ProbeResult]], now: float) -> None:
        """Each address's result into its own series; an address no longer probed loses its
        series (the name stopped resolving to it), so series stay bounded by the module's
        ``max_addresses``."""
        before = self.children
        self.ip = None  # the addresses are in the children's labels, not in target_info
        children: dict[str, TargetSeries] = {}
        for ip, result in addresses:
            child = None if before is None else before.get(ip)
            if child is None:
                child = TargetSeries(_address_target(self.target, ip), is_address=True)
            child.observe(result, now)
            children[ip] = child
        if before is not None and before.keys() != children.keys():
            self.address_changes += 1
        self.children = children

    def address_counts(self) -> list[tuple[str, int, int]]:
        """With every_address: per family (``ip4``, ``ip6``), addresses probed and up."""
        return family_counts((ip, c.up == 1.0) for ip, c in (self.children or {}).items())

    @property
    def shows_address_changes(self) -> bool:
        """Its ``netprobe_target_address_changes_total`` is shown: an address was probed (an
        address's own series has its address as a label, and no such counter)."""
        return self.ip is not None or self.children is not None


def _address_target(target: Target, ip: str) -> Target:
    """The target of one of its addresses' series: its labels and ``ip`` (which wins)."""
    labels = (*(p for p in target.labels if p[0] != "ip"), ("ip", ip))
    return replace(target, labels=labels)


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
    #: why the last reload was rejected (empty once one succeeds), for the status page
    reload_errors: list[str] = field(default_factory=list)
    #: why target files were last refused (empty while they are healthy), for the status page
    target_file_problems: list[str] = field(default_factory=list)
    #: probe workers started again after one exited or hung
    worker_restarts: int = 0

    def dns(self) -> tuple[int, int, int]:
        """The DNS cache's hits, misses and queries sent, this process's and the workers'."""
        own = self.dns_source()
        return (own[0] + self.dns_counts[0], own[1] + self.dns_counts[1],
                own[2] + self.dns_counts[2])  # fmt: skip

    def __post_init__(self) -> None:
        self.inflight_source: Callable[[], int] = lambda: 0
        #: continuous mode's DNS cache in this process: (hits, misses, queries sent)
        self.dns_source: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        #: the same, added up from the probe workers' heartbeats
        self.dns_counts = [0, 0, 0]
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

    def all_series(self) -> list[TargetSeries]:
        """Every series to render: each target's, each followed by its addresses' own.

        Found from the series themselves: the worker pool replays results into them without
        passing here, so a flag set by ``observe`` would miss its targets' addresses."""
        out: list[TargetSeries] = []
        for s in self.series.values():
            out.append(s)
            if s.children:
                out.extend(s.children.values())
        return out
