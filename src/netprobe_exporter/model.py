"""Plain model types shared by config, probers, scheduler and metrics: no YAML, no Twisted.

Targets and limits (what the config says), modules (a prober's name and its own typed options),
probe results (a common core plus one typed details value the prober defines) and the stable
hash that places a target in a process and a schedule slot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from netprobe_exporter.addresses import redact_url
from netprobe_exporter.nhist import (
    DEFAULT_BUCKET_FACTOR,
    DEFAULT_MAX_BUCKETS,
    DEFAULT_ZERO_THRESHOLD,
    NativeSpec,
)

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
DEFAULT_TIMEOUT = 5.0
#: characters a target's address may always have, whatever label_value_length_limit says:
#: URLs of 2,000 characters and more are in real use (browsers and proxies take about that)
ADDRESS_LENGTH_LIMIT = 2048

#: every value ``ProbeResult.result`` may take, in the order metrics list them
RESULTS = (
    "success",
    "timeout",
    "refused",
    "unreachable",
    "dns_error",
    "tls_error",
    "protocol_error",
    "error",
)

#: a debug log keeps at most this many entries and about this many bytes of their text; past
#: either, entries are only counted (a flooding peer must not grow it, nor the answer, unbounded)
MAX_LOG_LINES = 2000
MAX_LOG_BYTES = 512 * 1024

#: Go's zero time as a Unix timestamp: blackbox's value for "no verified chain"
GO_ZERO_TIME = -62135596800.0


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    module: str
    interval: float
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    #: native histogram settings (the protobuf exposition shows them)
    native_histogram_bucket_factor: float = DEFAULT_BUCKET_FACTOR
    native_histogram_max_buckets: int = DEFAULT_MAX_BUCKETS
    native_histogram_zero_threshold: float = DEFAULT_ZERO_THRESHOLD

    @property
    def key(self) -> tuple[str, str]:
        """What makes a target unique: two entries with the same key are a config error.

        The address as shown, so two targets that differ only in a URL's password (which
        labels and pages show as ``xxxxx``) cannot give two series the same labels.
        """
        return (self.display_address, self.module)

    @property
    def native(self) -> NativeSpec:
        return NativeSpec(
            self.native_histogram_bucket_factor,
            self.native_histogram_max_buckets,
            self.native_histogram_zero_threshold,
        )

    @property
    def display_address(self) -> str:
        """The address wherever it is shown (``target`` label, pages, logs): no password."""
        return redact_url(self.address)


def stable_hash(target: Target) -> int:
    """A hash of the target's identity that is the same in every process and run."""
    digest = hashlib.blake2b(f"{target.address}\0{target.module}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


@dataclass(frozen=True, slots=True)
class DNSCacheSettings:
    """Continuous mode's resolver cache (the ``dns_cache:`` section); seconds as floats.

    10,000 targets of one name then send one query per family per TTL, not one per probe.
    """

    #: every answer is kept at least this long (a TTL of 0 included)
    min_ttl: float = 1.0
    #: and at most this long, whatever its TTL; 0: no cache
    max_ttl: float = 300.0
    #: NXDOMAIN / no address of a family: kept for the SOA's negative TTL, at most this
    negative_ttl: float = 30.0
    #: (name, family, nameservers) entries kept at most
    max_entries: int = 65536


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds (the ``limits:`` section): what one process will take on at most."""

    #: continuous targets (config plus ``--target``); more is a config error, not a slow death
    max_targets: int = 100_000
    #: continuous probes running at once; due probes beyond it wait, then skip their slot
    max_concurrent_probes: int = 1024
    #: bytes of an HTTP body kept for the body regular expressions (more fails the probe)
    max_body_bytes: int = 16 * 1024 * 1024
    #: a web connection that sends nothing for this long is closed
    web_idle_timeout: float = 60.0
    #: a request's head and body must arrive within this long of its first byte (slowloris)
    web_request_timeout: float = 10.0
    #: open web connections; more are closed as they arrive, so slow clients cannot take every fd
    max_web_connections: int = 512
    # Labels: a target's label string is kept once and repeated on each of its series lines.
    # At these defaults it is at most 30 * (64 + 256 + 4) ≈ 9.7 KB, so even max_targets of
    # them hold under 1 GB; real fleets use a handful of short labels (a DNS name fits 256).
    #: labels per target from ``labels:`` (defaults, entry and file_sd group merged)
    label_limit: int = 30
    #: characters in a label name
    label_name_length_limit: int = 64
    #: characters in a label value, a module's name included (an address may take
    #: ADDRESS_LENGTH_LIMIT, long URLs being real)
    label_value_length_limit: int = 256
    #: continuous series in all, estimated from each target's prober and buckets: 100 per
    #: target at max_targets (a tcp target with the default buckets has 67, an http one 160)
    sample_limit: int = 10_000_000

    def too_many_targets(self, count: int) -> str | None:
        """Why ``count`` continuous targets are refused, or None when they are not."""
        if count > self.max_targets:
            return f"{count} targets exceed limits.max_targets ({self.max_targets})"
        return None

    def too_many_series(self, count: int) -> str | None:
        """Why targets with ``count`` series in all are refused, or None when they are not."""
        if count > self.sample_limit:
            return (
                f"{count} series (estimated from each target's prober and buckets), more than "
                f"limits.sample_limit ({self.sample_limit})"
            )
        return None

    def too_long(self, value: str, what: str = "value") -> str | None:
        """Why ``value``, which becomes a label value, is refused, or None when it is not."""
        if len(value) > self.label_value_length_limit:
            return (
                f"{what} has {len(value)} characters, more than limits.label_value_length_limit "
                f"({self.label_value_length_limit})"
            )
        return None

    @property
    def address_length_limit(self) -> int:
        """Characters in a target's address: a URL may be longer than a label value should
        be (a long query string), so addresses get at least ``ADDRESS_LENGTH_LIMIT``."""
        return max(self.label_value_length_limit, ADDRESS_LENGTH_LIMIT)

    def too_long_address(self, address: str) -> str | None:
        """Why ``address`` (the ``target`` label of its series) is refused, or None."""
        if len(address) > self.address_length_limit:
            return (
                f"the address (the target label) has {len(address)} characters, more than "
                f"{self.address_length_limit} (the larger of {ADDRESS_LENGTH_LIMIT} and "
                "limits.label_value_length_limit)"
            )
        return None

    def too_many_labels(self, count: int) -> str | None:
        if count > self.label_limit:
            return f"{count} labels, more than limits.label_limit ({self.label_limit})"
        return None


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential: its repr and str never show the value (logs, /config, debug output)."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "<secret>"

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Options:
    """Base of a prober's own typed module options (``modules.NAME.<prober>``)."""

    #: False for a prober that is recognised but not run yet
    runnable: ClassVar[bool] = True


#: addresses of one name probed at most, by default and at most (``every_address``)
DEFAULT_MAX_ADDRESSES = 8
MAX_ADDRESSES = 64


@dataclass(frozen=True, slots=True)
class EveryAddress:
    """A module's ``every_address``: probe each address its target's name resolves to.

    Each address gets its own series (an ``ip`` label), so this multiplies a target's series
    by up to ``max_addresses``: a cardinality trade the operator makes per module.
    """

    #: addresses probed at most per target, taken evenly from each family in sorted order
    max_addresses: int = DEFAULT_MAX_ADDRESSES
    #: the address families resolved, 4 and/or 6
    families: tuple[int, ...] = (4, 6)


def family_counts(addresses: Iterable[tuple[str, bool]]) -> list[tuple[str, int, int]]:
    """Per family (``ip4``, ``ip6``, sorted): addresses, and those of them that are up, of
    (address, up) pairs: an every_address target's in the store and in a /probe answer."""
    counts: dict[str, list[int]] = {}
    for ip, up in addresses:
        c = counts.setdefault("ip6" if ":" in ip else "ip4", [0, 0])
        c[0] += 1
        c[1] += up
    return [(family, c[0], c[1]) for family, c in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    #: seconds; 0 means unset (blackbox: use the scrape timeout; continuous: DEFAULT_TIMEOUT)
    timeout: float = 0.0
    #: the prober's own options, of the type its declaration names
    options: Options = field(default_factory=Options)
    #: probe every address of the target's name (ours); None: the one address blackbox picks
    every_address: EveryAddress | None = None

    @property
    def runnable(self) -> bool:
        return self.options.runnable

    @property
    def continuous_timeout(self) -> float:
        return self.timeout or DEFAULT_TIMEOUT


class Details:
    """Base of a prober's typed result details: what only that prober measures.

    ``observe`` feeds the continuous families the prober declared, ``blackbox`` writes its
    ``/probe`` families; both do nothing here.
    """

    __slots__ = ()

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        """Feed this probe's measurements into the target's continuous series."""

    def blackbox(self, out: dict[str, list[Sample]], result: ProbeResult) -> None:
        """Add the families blackbox_exporter writes for this prober to ``out``."""


Sample = tuple[dict[str, str], float]


class SeriesSink:
    """What a prober's details may write into one target's continuous series."""

    __slots__ = ()

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        raise NotImplementedError

    def gauge(self, family: str, value: float) -> None:
        raise NotImplementedError

    def counter(self, family: str, value: float, label: int = 0) -> None:
        """Add ``value`` to the counter (of label value ``label``)."""
        raise NotImplementedError

    def info(self, family: str, label_value: str) -> str | None:
        """Set the info's label value; returns the one it replaces (None: the first)."""
        raise NotImplementedError


@dataclass(slots=True)
class ProbeResult:
    """What every probe shows, whatever its prober, and the prober's own ``details``.

    Every prober resolves its target through the same step (``probes.connect.resolve``), so
    the resolution figures and the probe_policy refusal are core. ``connect_duration`` is too:
    every target has the ``netprobe_connect_duration_seconds`` family (empty for a prober that
    does not connect); what else a TCP connect showed is in the details (``ConnectInfo``).
    """

    success: bool
    result: str
    #: whole probe, resolution included, in seconds
    duration: float
    #: time to establish the TCP connection; None unless the connection was established
    connect_duration: float | None = None
    #: the address actually probed, once resolved
    ip: str | None = None
    #: name resolution time; None unless the target's host was resolved (or an IP literal
    #: checked against the preferred protocol): blackbox emits its resolution metrics exactly
    #: when it is set
    resolve_duration: float | None = None
    #: what only this prober measures (its own type), None when nothing was measured
    details: Details | None = None
    #: why probe_policy refused the address, when it did (the probe was not sent)
    policy_refused: str | None = None
    #: with ``every_address``: each address probed and its own result, in the order probed;
    #: None when the module probes one address (or the name did not resolve)
    addresses: list[tuple[str, ProbeResult]] | None = None
    #: human-readable reason for a failure
    detail: str = ""
    #: step-by-step notes (time, level, message, fields), kept only when debugging
    log: list[tuple[float, str, str, dict[str, object]]] | None = None
    #: notes not kept because the log was full (``MAX_LOG_LINES`` / ``MAX_LOG_BYTES``)
    log_dropped: int = 0
    #: where in ``log`` the dropped notes would have been
    log_dropped_at: int = 0
    #: the wall clock the notes are stamped with (the probe context's)
    wall: Callable[[], float] = time.time
    _log_bytes: int = 0

    @property
    def log_bytes(self) -> int:
        """The text the kept notes hold (bounded by ``MAX_LOG_BYTES``)."""
        return self._log_bytes

    @property
    def ip_protocol(self) -> int:
        """4 or 6 once an address was chosen, else 0."""
        ip = self.ip
        return 0 if ip is None else 6 if ":" in ip else 4

    def note(self, msg: str, level: str = "info", **fields: object) -> None:
        """Record a step for ``/probe?debug=true``; free when not debugging, bounded when."""
        if self.log is None:
            return
        if self.log_dropped or len(self.log) >= MAX_LOG_LINES:
            self._drop()  # once one is dropped, later ones are too: no gaps in the middle
            return
        size = len(msg) + sum(len(k) + len(str(v)) + 2 for k, v in fields.items())
        if self._log_bytes + size > MAX_LOG_BYTES:
            self._drop()
            return
        self._log_bytes += size
        self.log.append((self.wall(), level, msg, fields))

    def adopt(self, other: ProbeResult, **extra: object) -> None:
        """Add ``other``'s notes to this log, with ``extra`` fields, bounded as ``note`` is."""
        if self.log is None or not other.log:
            return
        for ts, level, msg, fields in other.log:
            if self.log_dropped or len(self.log) >= MAX_LOG_LINES:
                self._drop()
                continue
            size = len(msg) + sum(len(k) + len(str(v)) + 2 for k, v in fields.items())
            if self._log_bytes + size > MAX_LOG_BYTES:
                self._drop()
                continue
            self._log_bytes += size
            self.log.append((ts, level, msg, {**extra, **fields}))

    def outcome(self, msg: str, level: str, **fields: object) -> None:
        """Record how the probe ended: kept even when the log is full, as it says the most."""
        if self.log is not None:
            self.log.append((self.wall(), level, msg, fields))

    def _drop(self) -> None:
        assert self.log is not None
        if not self.log_dropped:
            self.log_dropped_at = len(self.log)
        self.log_dropped += 1

    def fail(self, result: str, detail: str) -> ProbeResult:
        self.success = False
        self.result = result
        self.detail = detail
        self.outcome(detail, "error")
        return self
