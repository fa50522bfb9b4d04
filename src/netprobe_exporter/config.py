"""The config file: YAML in, immutable dataclasses out, every error as ``file:line: key: what``.

All errors are collected, not just the first, because a user fixing a config wants the whole list
at once (``--config.check`` prints one per line). Module syntax lives in ``modules``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import yaml

from netprobe_exporter.addresses import is_url, redact_url
from netprobe_exporter.durations import format_duration
from netprobe_exporter.model import (
    ADDRESS_LENGTH_LIMIT,
    DEFAULT_BUCKETS,
    DEFAULT_TIMEOUT,
    RESULTS,
    DNSCacheSettings,
    Limits,
    Module,
    Target,
)
from netprobe_exporter.modules import builtin_modules, parse_module
from netprobe_exporter.nhist import (
    DEFAULT_BUCKET_FACTOR,
    DEFAULT_MAX_BUCKETS,
    DEFAULT_ZERO_THRESHOLD,
)
from netprobe_exporter.policy import ProbePolicy, Rule, parse_rule
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.scheduler import deadline_margin
from netprobe_exporter.schema import (
    ANY,
    STRING,
    ByteSize,
    Check,
    Duration,
    Int,
    Kind,
    ListOf,
    Opt,
    Reading,
    Scalar,
    Section,
    require,
)
from netprobe_exporter.yamlcheck import YAML_LOADER, Checker, is_null, release, scalar, show

__all__ = [
    "ADDRESS_LENGTH_LIMIT", "DEFAULT_BUCKETS", "DEFAULT_TIMEOUT", "Config", "ConfigError",
    "DNSCacheSettings", "Defaults", "Limits", "Module", "Target",
]  # fmt: skip

DEFAULT_INTERVAL = 15.0
MIN_INTERVAL = 0.1
#: label names the exporter sets itself; a user label may not take them
RESERVED_LABELS = frozenset({"target", "module", "result", "le", "phase", "ip", "quantile",
                             "version", "hop", "path", "cipher", "serving_status"})  # fmt: skip

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_NODES = 1_000_000
#: a config file larger than this is refused before it is parsed (parsing costs ~0.1 s per MiB)
MAX_FILE_BYTES = 64 * 1024 * 1024
#: the most native buckets a histogram may keep (client_golang has no bound; 160 by default)
MAX_NATIVE_BUCKETS = 10_000
_SOON = "is not supported yet"


@dataclass(frozen=True, slots=True)
class Defaults:
    interval: float = DEFAULT_INTERVAL
    module: str = "tcp_connect"
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    native_histogram_bucket_factor: float = DEFAULT_BUCKET_FACTOR
    native_histogram_max_buckets: int = DEFAULT_MAX_BUCKETS
    native_histogram_zero_threshold: float = DEFAULT_ZERO_THRESHOLD


@dataclass(frozen=True, slots=True)
class TargetFiles:
    """One ``target_files`` entry: file_sd files whose targets share a module and interval."""

    #: glob patterns; a relative one is taken from the config file's directory
    files: tuple[str, ...]
    module: str
    interval: float
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    #: how often the files are looked at (a stat each); changed ones are read again
    refresh_interval: float = 5.0
    native_histogram_bucket_factor: float = DEFAULT_BUCKET_FACTOR
    native_histogram_max_buckets: int = DEFAULT_MAX_BUCKETS
    native_histogram_zero_threshold: float = DEFAULT_ZERO_THRESHOLD


@dataclass(frozen=True, slots=True)
class Config:
    defaults: Defaults = field(default_factory=Defaults)
    modules: dict[str, Module] = field(default_factory=builtin_modules)
    targets: tuple[Target, ...] = ()
    source: str = "<embedded>"
    #: things that load but deserve attention (modules whose prober is not implemented yet)
    warnings: tuple[str, ...] = ()
    probe_policy: ProbePolicy = field(default_factory=ProbePolicy)
    limits: Limits = field(default_factory=Limits)
    target_files: tuple[TargetFiles, ...] = ()
    #: continuous mode's resolver cache
    dns_cache: DNSCacheSettings = field(default_factory=DNSCacheSettings)
    #: the document parsed without its targets and target_files: what probe workers parse
    #: their modules from (None: the embedded default)
    worker_text: str | None = field(default=None, repr=False, compare=False)


class ConfigError(Exception):
    """A config that failed validation; ``errors`` holds one ``file:line: key: what`` per item."""

    def __init__(self, errors: list[str], partial: Config | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        #: what parsed despite the errors (its ``target_files``), so that ``--config.check``
        #: can report the target files' errors in the same run
        self.partial = partial


def brief(text: str, keep: int = 32) -> str:
    """``text`` for an error message: a long one cut to its first ``keep`` characters."""
    return text if len(text) <= keep else f"{text[:keep]}…"


def labels_of(
    c: Checker, node: yaml.Node, path: str, limits: Limits, skip_meta: bool = False
) -> dict[str, str] | None:
    """A ``labels:`` mapping, validated and held to ``limits``; ``skip_meta`` drops Prometheus'
    ``__`` meta labels (as file_sd groups carry them) instead of refusing them.

    Every series line of a target repeats its labels, so their count and length are bounded
    here, before anything is built from them; a refused name or value is never quoted whole.
    """
    if is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        c.error(node, path, f"must be a mapping of label names to values, not {show(node, path)}")
        return None
    pairs = [(k, v) for k, v in node.value if not (skip_meta and _is_meta(k))]
    too_many = limits.too_many_labels(len(pairs))
    if too_many is not None:
        c.error(node, path, too_many)
        return None
    out: dict[str, str] = {}
    ok = True
    for knode, vnode in pairs:
        name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
        sub = f"{path}.{name}"
        if len(name) > limits.label_name_length_limit:
            c.error(knode, path, f'label name "{brief(name)}" has {len(name)} characters, more '
                                 f"than limits.label_name_length_limit "
                                 f"({limits.label_name_length_limit})")  # fmt: skip
            ok = False
        elif not LABEL_NAME.match(name) or name.startswith("__"):
            c.error(knode, path, f'"{name}" is not a valid label name')
            ok = False
        elif name in RESERVED_LABELS:
            c.error(knode, sub, "is set by the exporter and cannot be overridden")
            ok = False
        elif name in out:
            c.error(knode, sub, "duplicate label")
            ok = False
        elif not isinstance(vnode, yaml.ScalarNode):
            c.error(vnode, sub, f"label value must be a string, not {show(vnode, sub)}")
            ok = False
        elif (too_long := limits.too_long(vnode.value)) is not None:
            c.error(vnode, sub, too_long)
            ok = False
        else:
            out[name] = "" if is_null(vnode) else str(vnode.value)
    return out if ok else None


def _is_meta(knode: yaml.Node) -> bool:
    return isinstance(knode, yaml.ScalarNode) and str(knode.value).startswith("__")


def merged_labels(
    c: Checker,
    node: yaml.Node,
    path: str,
    base: tuple[tuple[str, str], ...],
    limits: Limits,
    skip_meta: bool = False,
) -> tuple[tuple[str, str], ...] | None:
    """``base`` labels with those of ``node`` on top, the union held to ``limits.label_limit``."""
    own = labels_of(c, node, path, limits, skip_meta)
    if own is None:
        return None
    merged = {**dict(base), **own}
    too_many = limits.too_many_labels(len(merged))
    if too_many is not None:
        c.error(node, path, f"{too_many} (with those it inherits)")
        return None
    return tuple(sorted(merged.items()))


def _buckets(c: Checker, node: yaml.Node, path: str) -> tuple[float, ...] | None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        c.error(node, path, "must be a non-empty list of numbers")
        return None
    values: list[float] = []
    for i, item in enumerate(node.value):
        value = scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if isinstance(value, str) and not item.style:  # YAML 1.1 reads 2e-05 as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            c.error(item, f"{path}[{i}]", f"must be a number, not {show(item, path)}")
            return None
        if not math.isfinite(value) or value <= 0:
            c.error(item, f"{path}[{i}]", f"{value} must be a positive finite number")
            return None
        if values and value <= values[-1]:
            c.error(item, f"{path}[{i}]", "buckets must be strictly increasing")
            return None
        values.append(float(value))
    return tuple(values)


def _number(c: Checker, node: yaml.Node, path: str) -> float | None:
    value = scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, str) and not getattr(node, "style", None):  # YAML 1.1: 2e-05 is text
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        c.error(node, path, f"must be a finite number, not {show(node, path)}")
        return None
    return float(value)


def _bucket_factor(c: Checker, node: yaml.Node, path: str) -> float | None:
    value = _number(c, node, path)
    if value is not None and value <= 1:
        c.error(node, path, f"{value} must be greater than 1")
        return None
    return value


def _zero_threshold(c: Checker, node: yaml.Node, path: str) -> float | None:
    value = _number(c, node, path)
    if value is not None and value < 0:
        c.error(node, path, f"{value} must not be negative")
        return None
    return value


#: native histogram keys, in defaults, targets and target_files entries alike; each native
#: bucket is a dict entry per histogram, so their number is bounded
NATIVE_OPTS: tuple[Opt[Any], ...] = (
    Opt("native_histogram_bucket_factor", Scalar(_bucket_factor)),
    Opt("native_histogram_max_buckets", Int(1, MAX_NATIVE_BUCKETS)),
    Opt("native_histogram_zero_threshold", Scalar(_zero_threshold)),
)


def native_fields(d: Defaults | TargetFiles) -> dict[str, Any]:
    """The native histogram settings of ``d``, as Target keyword arguments."""
    return {
        "native_histogram_bucket_factor": d.native_histogram_bucket_factor,
        "native_histogram_max_buckets": d.native_histogram_max_buckets,
        "native_histogram_zero_threshold": d.native_histogram_zero_threshold,
    }


def target_address_error(
    address: str, module: Module, modules: Mapping[str, Module] | None = None
) -> str | None:
    """Why ``address`` cannot be probed with ``module``, or None if it can.

    A URL given to a module whose prober takes none gets said so, with a module of ``modules``
    that takes it: the prober's own complaint (a port that is not a number) would mislead.
    """
    if not module.runnable:
        return f'module "{module.name}" uses prober "{module.prober}", which {_SOON}'
    problem = PROBERS[module.prober].check_address(address)
    if problem is None or not is_url(address) or _takes_urls(module.prober):
        return problem  # a prober that takes URLs says best what is wrong with this one
    takers = modules_taking(address, modules or {})
    hint = f'; module "{takers[0]}" takes URLs' if takers else "; use a module that takes URLs"
    if "URL" in problem:  # the prober already says what it takes instead
        return problem + hint
    return (
        f'{redact_url(address)!r} is a URL, which module "{module.name}" (prober '
        f"{module.prober}) does not take{hint}"
    )


def interval_error(interval: float, module: Module) -> str | None:
    """Why a continuous target of ``module`` cannot be probed every ``interval``, or None: a
    probe ends before the target's next slot, so what it needs must fit in that time."""
    check = PROBERS[module.prober].check_timeout
    if check is None:
        return None
    budget = interval - deadline_margin(interval)
    interval_text = format_duration(interval)
    whose = f'the {{}} a probe of module "{module.name}" has at interval {interval_text}'
    problem = check(module.options, budget, whose)
    return None if problem is None else f"{problem}, or lengthen the interval"


@functools.cache
def _takes_urls(prober: str) -> bool:
    return PROBERS[prober].check_address("http://127.0.0.1/") is None


def modules_taking(address: str, modules: Mapping[str, Module]) -> list[str]:
    """The runnable modules whose prober accepts ``address``, in config order."""
    return [
        name
        for name, m in modules.items()
        if m.runnable and PROBERS[m.prober].check_address(address) is None
    ]


#: series every target has whatever its prober: up, probes_total by result, the connect and
#: probe histograms, three last_* gauges, target_info and address_changes_total (metrics'
#: core families)
def _core_series(buckets: int) -> int:
    return 6 + len(RESULTS) + 2 * (buckets + 3)


def target_series(buckets: int, module: Module) -> int:
    """The most series a target with ``buckets`` bounds can show at /metrics (exposition's
    families; tests/test_labels.py checks the two agree), known before any probe ran: what
    ``limits.sample_limit`` holds a config to.

    With ``every_address``: the target's own core series, two per family (addresses probed
    and up), and each address's full set (no target_info or address changes of its own).
    """
    families = PROBERS[module.prober].module_families(module.options)
    one = _core_series(buckets) + sum(f.series(buckets) for f in families)
    every = module.every_address
    if every is None:
        return one
    return _core_series(buckets) - 1 + 2 * len(every.families) + every.max_addresses * (one - 2)


def series_total(targets: Iterable[Target], modules: Mapping[str, Module]) -> int:
    """Series of ``targets`` in all: one estimate per (module, buckets) kind, so it is cheap
    enough for the reactor thread even at limits.max_targets."""
    kinds: dict[tuple[str, int], int] = {}
    for t in targets:
        kind = (t.module, len(t.buckets))
        kinds[kind] = kinds.get(kind, 0) + 1
    total = 0
    for (name, buckets), n in kinds.items():
        module = modules.get(name)
        if module is not None:
            total += n * target_series(buckets, module)
    return total


@dataclass(frozen=True, slots=True)
class Labels(Kind[tuple[tuple[str, str], ...]]):
    """A ``labels:`` mapping on top of ``base``, held to ``limits``."""

    limits: Limits
    base: tuple[tuple[str, str], ...] = ()

    def read(self, c: Checker, node: yaml.Node, path: str) -> tuple[tuple[str, str], ...] | None:
        return merged_labels(c, node, path, self.base, self.limits)


BUCKETS = Scalar(_buckets)
_INTERVAL = Duration(MIN_INTERVAL)


def _defaults_section(limits: Limits) -> Section[Defaults]:
    return Section(
        Defaults(),
        (
            Opt("interval", _INTERVAL),
            Opt("module", STRING),
            Opt("labels", Labels(limits)),
            Opt("buckets", BUCKETS),
            *NATIVE_OPTS,
            Opt("timeout", ANY, field=None,
                unsupported="is a module setting: set timeout under modules.NAME"),
        ),
    )  # fmt: skip


DEFAULTS = _defaults_section(Limits())


def _defaults(c: Checker, node: yaml.Node, limits: Limits) -> Defaults:
    return _defaults_section(limits).read_or_default(c, node, "defaults")


@dataclass(frozen=True, slots=True)
class TargetAddress(Kind[str]):
    """A target's address: shown without a URL's password."""

    limits: Limits

    def read(self, c: Checker, node: yaml.Node, path: str) -> str | None:
        return target_address(c, node, path, self.limits)

    def dump(self, value: str) -> object:
        return redact_url(value)


def _target_section(defaults: Defaults, limits: Limits) -> Section[Target]:
    return Section(
        Target(
            "",
            defaults.module,
            defaults.interval,
            defaults.labels,
            defaults.buckets,
            **native_fields(defaults),
        ),
        (
            require("address", "missing", drop=True),
            Opt("address", TargetAddress(limits)),
            Opt("module", STRING),
            Opt("interval", _INTERVAL),
            Opt("labels", Labels(limits, defaults.labels)),
            Opt("buckets", BUCKETS),
            *NATIVE_OPTS,
        ),
    )


TARGET = _target_section(Defaults(), Limits())


def _targets(
    c: Checker, node: yaml.Node, defaults: Defaults, modules: dict[str, Module], limits: Limits
) -> list[Target]:
    entry = _target_section(defaults, limits)
    out: list[Target] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(c.sequence(node, "targets") or []):
        path = f"targets[{i}]"
        r = entry.reading(c, item, path)
        if r is None or r.failed:
            continue
        target = entry.build(r)
        anode, mnode = r.nodes["address"], r.nodes.get("module", item)
        module = modules.get(target.module)
        if module is None:
            c.error(mnode, f"{path}.module", f'unknown module "{target.module}"')
            continue
        problem = target_address_error(target.address, module, modules)
        if problem is not None:
            c.error(anode if module.runnable else mnode, f"{path}.address", problem)
            continue
        slow = interval_error(target.interval, module)
        if slow is not None:
            c.error(r.nodes.get("interval", mnode), f"{path}.interval", slow)
            continue
        if target.key in seen:
            c.error(
                anode,
                f"{path}.address",
                f'duplicate target "{target.display_address}" with module "{target.module}" '
                f"(first at targets[{seen[target.key]}])",
            )
            continue
        seen[target.key] = i
        out.append(target)
    return out


def target_address(c: Checker, node: yaml.Node, path: str, limits: Limits) -> str | None:
    """A target's address: a string, and as short as a label value (it is the ``target``
    label of every series of the target)."""
    address = c.string(node, path)
    too_long = limits.too_long_address(address or "")
    if too_long is not None:
        c.error(node, path, too_long)
        return None
    return address


def _rule(c: Checker, node: yaml.Node, path: str) -> Rule | None:
    text = c.string(node, path)
    if text is None:
        return None
    try:
        return parse_rule(text)
    except ValueError as exc:
        c.error(node, path, str(exc))
        return None


def _rule_text(rule: Rule) -> str:
    return str(rule.network) if rule.network is not None else str(rule.pattern)


_RULES = ListOf(Scalar(_rule, _rule_text))
_PER_POLICY = Int(1, 100_000)
PROBE_POLICY = Section(
    ProbePolicy(),
    (
        Opt("allow", _RULES),
        Opt("deny", _RULES),
        Opt("max_concurrent", _PER_POLICY),
        Opt("max_per_source", _PER_POLICY),
        Opt("max_timeout", Duration(0.001)),
    ),
)


def _policy(c: Checker, node: yaml.Node) -> ProbePolicy:
    return PROBE_POLICY.read_or_default(c, node, "probe_policy")


_FILE_SD_SUFFIXES = (".json", ".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class FilePattern(Kind[str]):
    """A file_sd glob pattern, taken from ``base`` (the config file's directory)."""

    base: str

    def read(self, c: Checker, node: yaml.Node, path: str) -> str | None:
        pattern = c.string(node, path)
        if pattern is None:
            return None
        if not pattern.endswith(_FILE_SD_SUFFIXES):
            c.error(node, path, f'"{pattern}" must end in .json, .yml or .yaml')
            return None
        return os.path.join(glob.escape(self.base), pattern) if self.base else pattern


def _known_module(modules: Mapping[str, Module]) -> Check:
    """A target_files entry's module exists and can be probed."""

    def run(r: Reading) -> None:
        name = r.values.get("module")
        if not isinstance(name, str) or not name:
            return
        if name not in modules:
            r.error("module", f'unknown module "{name}"')
        elif not modules[name].runnable:
            r.error("module", target_address_error("", modules[name]) or "")

    return Check(run)


def _fits_interval(modules: Mapping[str, Module], defaults: Defaults) -> Check:
    """A target_files entry's probes fit in its interval (``interval_error``)."""

    def run(r: Reading) -> None:
        module = modules.get(str(r.values.get("module", defaults.module)))
        interval = r.values.get("interval", defaults.interval)
        if module is not None and isinstance(interval, float):
            slow = interval_error(interval, module)
            if slow is not None:
                r.error("interval", slow, on_section="interval" not in r.nodes)

    return Check(run)


def _target_files_section(
    defaults: Defaults, modules: Mapping[str, Module], base: str, limits: Limits
) -> Section[TargetFiles]:
    return Section(
        TargetFiles(
            (),
            defaults.module,
            defaults.interval,
            defaults.labels,
            defaults.buckets,
            **native_fields(defaults),
        ),
        (
            require("files", "missing", drop=True),
            Opt("files", ListOf(FilePattern(base))),
            Opt("module", STRING),
            _known_module(modules),
            Opt("interval", _INTERVAL),
            _fits_interval(modules, defaults),
            Opt("refresh_interval", Duration(1.0)),
            Opt("labels", Labels(limits, defaults.labels)),
            Opt("buckets", BUCKETS),
            *NATIVE_OPTS,
            Check(lambda r: bool(r.values.get("module", defaults.module))),
        ),
    )


TARGET_FILES = _target_files_section(Defaults(), {}, "", Limits())


def _target_files(
    c: Checker,
    node: yaml.Node,
    defaults: Defaults,
    modules: dict[str, Module],
    base: str,
    limits: Limits,
) -> list[TargetFiles]:
    entry = _target_files_section(defaults, modules, base, limits)
    out: list[TargetFiles] = []
    for i, item in enumerate(c.sequence(node, "target_files") or []):
        spec = entry.read(c, item, f"target_files[{i}]")
        if spec is not None:  # one that is not fails the config
            out.append(spec)
    return out


_WEB_TIMEOUT = Duration(0.1)
LIMITS = Section(
    Limits(),
    (
        Opt("max_targets", Int(1, 10_000_000)),
        Opt("max_concurrent_probes", Int(1, 1_000_000)),
        Opt("max_web_connections", Int(1, 1_000_000)),
        # raised, these stay bounded too: a config cannot lift them out of reach
        Opt("label_limit", Int(1, 1000)),
        Opt("label_name_length_limit", Int(1, 1024)),
        Opt("label_value_length_limit", Int(1, 1 << 20)),
        Opt("sample_limit", Int(1, 1_000_000_000)),
        Opt("web_idle_timeout", _WEB_TIMEOUT),
        Opt("web_request_timeout", _WEB_TIMEOUT),
        # nothing kept would make every body rule look at an empty body
        Opt("max_body_bytes", ByteSize(nonzero=True)),
    ),
)


def _limits(c: Checker, node: yaml.Node) -> Limits:
    return LIMITS.read_or_default(c, node, "limits")


def _ttl_order(r: Reading) -> None:
    """min_ttl may not exceed max_ttl, unless max_ttl is 0 (no cache: min_ttl unused)."""
    if r.failed & {"min_ttl", "max_ttl"}:
        return
    default = DNSCacheSettings()
    low = cast(float, r.values.get("min_ttl", default.min_ttl))
    high = cast(float, r.values.get("max_ttl", default.max_ttl))
    if high > 0 and low > high:
        where = "min_ttl" if "min_ttl" in r.nodes else "max_ttl"
        what = (
            f"{format_duration(low)} must not exceed "
            f"{r.at('max_ttl')} ({format_duration(high)}); max_ttl 0s turns the cache off"
        )
        r.error(where, what)


DNS_CACHE = Section(
    DNSCacheSettings(),
    (
        Opt("min_ttl", Duration()),
        Opt("max_ttl", Duration()),
        Opt("negative_ttl", Duration()),
        Opt("max_entries", Int(1, 10_000_000)),
        Check(_ttl_order),
    ),
)


def _dns_cache(c: Checker, node: yaml.Node) -> DNSCacheSettings:
    return DNS_CACHE.read_or_default(c, node, "dns_cache")


def check_node_count(root: yaml.Node, filename: str) -> None:
    """Refuse a document of more than ``_MAX_NODES`` node visits (alias bombs included)."""
    for n, _ in enumerate(_count_nodes(root)):
        if n > _MAX_NODES:
            raise ConfigError([f"{filename}: too large (over {_MAX_NODES} YAML nodes)"])


def _count_nodes(node: yaml.Node) -> Iterator[None]:
    """Walk every node once; guards against alias bombs that expand exponentially."""
    stack = [node]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        yield None
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.append(k)
                stack.append(v)


def read_file(path: str) -> bytes:
    """A config or target file's bytes; unreadable or over MAX_FILE_BYTES is a ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"{path}: file too large (over {MAX_FILE_BYTES >> 20} MiB)"])
    return data


def _char_at(text: str, index: int) -> str:
    return text[index] if 0 <= index < len(text) else ""


def compose(text: str | bytes, filename: str, kind: str) -> yaml.Node | None:
    """The document's node graph (None when empty); a ConfigError naming the line otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            what = f"{filename}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            raise ConfigError([what]) from None
    try:
        root: yaml.Node | None = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem
        if mark is not None and _char_at(text, mark.index) == "\t":
            problem = f"a tab at column {mark.column + 1}: YAML indents with spaces, not tabs"
        raise ConfigError([f"{filename}:{line}: invalid {kind}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}: invalid {kind}: {exc}"]) from None
    except RecursionError:  # the composer recurses per level of nesting
        raise ConfigError([f"{filename}: invalid {kind}: nested too deeply"]) from None
    return None if root is None or is_null(root) else root


def parse_config(text: str | bytes, filename: str = "config.yml") -> Config:
    """Parse and validate a config document; raise ConfigError listing every problem."""
    root = compose(text, filename, "YAML")
    if root is None:
        raise ConfigError([f"{filename}: empty config: expected a mapping with modules or targets"])
    try:
        config = _parse_root(root, filename)
        if isinstance(root, yaml.MappingNode):
            source = text.decode() if isinstance(text, bytes) else text  # compose decoded it
            config = dataclasses.replace(config, worker_text=_worker_text(source, root, config))
        return config
    finally:
        release(root)


def _parse_root(root: yaml.Node, filename: str) -> Config:
    c = Checker(filename)
    check_node_count(root, filename)
    top = c.mapping(
        root,
        "",
        {"defaults": None, "modules": None, "targets": None, "target_files": None,
         "probe_policy": None, "limits": None, "dns_cache": None},
    )  # fmt: skip
    if top is None:
        raise ConfigError(c.errors)
    # first: the label limits apply to every labels: below
    limits = _limits(c, top["limits"]) if "limits" in top else Limits()
    defaults = _defaults(c, top["defaults"], limits) if "defaults" in top else Defaults()
    modules = builtin_modules()
    if "modules" in top:
        mnode = top["modules"]
        if isinstance(mnode, yaml.MappingNode):
            seen: set[str] = set()
            for knode, vnode in mnode.value:
                name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
                if not name:
                    c.error(knode, "modules", "module names must be non-empty strings")
                    continue
                too_long = limits.too_long(name, "the name (the module label)")
                if too_long is not None:
                    c.error(knode, "modules", too_long)
                    continue
                if name in seen:
                    c.error(knode, f"modules.{name}", "duplicate module")
                    continue
                seen.add(name)
                module = parse_module(c, name, vnode, f"modules.{name}")
                if module is not None:
                    modules[name] = module
        elif not is_null(mnode):
            what = f"must be a mapping of module names, not {show(mnode, 'modules')}"
            c.error(mnode, "modules", what)
    if "defaults" in top and defaults.module not in modules:
        c.error(top["defaults"], "defaults.module", f'unknown module "{defaults.module}"')
    targets = _targets(c, top["targets"], defaults, modules, limits) if "targets" in top else []
    policy = _policy(c, top["probe_policy"]) if "probe_policy" in top else ProbePolicy()
    dns_cache = _dns_cache(c, top["dns_cache"]) if "dns_cache" in top else DNSCacheSettings()
    files: list[TargetFiles] = []
    if "target_files" in top:
        base = os.path.dirname(filename)
        files = _target_files(c, top["target_files"], defaults, modules, base, limits)
    too_many = limits.too_many_targets(len(targets))
    if too_many is None and targets:
        too_many = limits.too_many_series(series_total(targets, modules))
    if too_many is not None:
        c.error(top["targets"], "targets", too_many)
    config = Config(
        defaults, modules, tuple(targets), filename, tuple(c.warnings), policy, limits,
        tuple(files), dns_cache,
    )  # fmt: skip
    if c.errors:
        raise ConfigError(c.errors, config)
    return config


def over_limits(config: Config, targets: Sequence[Target]) -> str | None:
    """Why ``targets`` (config, ``--target`` and target files together) are refused, or None."""
    limits = config.limits
    return limits.too_many_targets(len(targets)) or limits.too_many_series(
        series_total(targets, config.modules)
    )


def load_config(path: str) -> Config:
    """Read and parse ``path``; an unreadable file is a ConfigError like any other."""
    return parse_config(read_file(path), path)


_WORKERS_SKIP = ("targets", "target_files")


def _skipped(knode: yaml.Node) -> bool:
    return isinstance(knode, yaml.ScalarNode) and knode.value in _WORKERS_SKIP


def parse_modules(text: str | bytes, filename: str) -> Config:
    """A config's modules, limits, policy and dns_cache, its targets and target_files ignored
    (a probe worker is sent its targets)."""
    root = compose(text, filename, "YAML")
    if root is None:  # nothing but targets: the built-in modules and default limits
        return Config(source=filename)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{filename}: not a mapping"])
    try:
        root.value = [(k, v) for k, v in root.value if not _skipped(k)]
        return _parse_root(root, filename)
    finally:
        release(root)


def _worker_text(text: str, root: yaml.MappingNode, config: Config) -> str:
    """``text`` without its top-level targets and target_files, cut where the parser found
    them, so that workers do not scan 50,000 targets to read a few modules. Checked by
    parsing it: when the cut text does not give the same modules, policy, limits, dns_cache (flow
    style, anchors used across sections), workers get the whole text."""
    spans = sorted((k.start_mark.index, v.end_mark.index) for k, v in root.value if _skipped(k))
    if not spans or root.flow_style:
        return text
    parts, pos = [], 0
    for start, end in spans:
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    cut = "".join(parts)
    try:
        again = parse_modules(cut, config.source)
    except ConfigError:
        return text
    same = (again.modules, again.probe_policy, again.limits, again.dns_cache) == (
        config.modules, config.probe_policy, config.limits, config.dns_cache)  # fmt: skip
    return cut if same else text


def with_extra_targets(
    config: Config,
    addresses: list[str],
    validate: Callable[[str, Module, Mapping[str, Module]], str | None] = target_address_error,
) -> Config:
    """Add ``--target`` addresses, probed with the default module and interval.

    A URL the default module cannot probe goes to the first module that can (``http_2xx`` in
    the embedded modules), so ``--target=https://example.org`` works as a user expects.
    """
    default = config.modules[config.defaults.module]
    errors: list[str] = []
    known = {t.key for t in config.targets}
    extra: list[Target] = []
    for address in addresses:
        module = default
        if is_url(address) and validate(address, default, config.modules) is not None:
            takers = modules_taking(address, config.modules)
            module = config.modules[takers[0]] if takers else default
        problem = config.limits.too_long_address(address)
        problem = problem or validate(address, module, config.modules)
        problem = problem or interval_error(config.defaults.interval, module)
        if problem is not None:
            errors.append(f"--target: {problem}")
            continue
        t = Target(
            address, module.name, config.defaults.interval, config.defaults.labels,
            config.defaults.buckets, **native_fields(config.defaults),
        )  # fmt: skip
        if t.key not in known:
            known.add(t.key)
            extra.append(t)
    too_many = config.limits.too_many_targets(len(config.targets) + len(extra))
    if too_many is None and extra:
        total = series_total((*config.targets, *extra), config.modules)
        too_many = config.limits.too_many_series(total)
    if too_many is not None:
        errors.append(f"--target: {too_many}")
    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(config, targets=config.targets + tuple(extra))
