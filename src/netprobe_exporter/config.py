"""The config file: YAML in, immutable dataclasses out, every error as ``file:line: key: what``.

All errors are collected, not just the first, because a user fixing a config wants the whole list
at once (``--config.check`` prints one per line). Module syntax lives in ``modules``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from netprobe_exporter.model import (
    ADDRESS_LENGTH_LIMIT,
    DEFAULT_BUCKETS,
    DEFAULT_TIMEOUT,
    RESULTS,
    Limits,
    Module,
    Target,
)
from netprobe_exporter.modules import builtin_modules, parse_module
from netprobe_exporter.policy import ProbePolicy, parse_rule
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.yamlcheck import YAML_LOADER, Checker, is_null, release, scalar, show

__all__ = [
    "ADDRESS_LENGTH_LIMIT", "DEFAULT_BUCKETS", "DEFAULT_TIMEOUT", "Config", "ConfigError",
    "Defaults", "Limits", "Module", "Target",
]  # fmt: skip

DEFAULT_INTERVAL = 15.0
MIN_INTERVAL = 0.1
#: label names the exporter sets itself; a user label may not take them
RESERVED_LABELS = frozenset({"target", "module", "result", "le", "phase", "ip", "quantile",
                             "version"})  # fmt: skip

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_NODES = 1_000_000
#: a config file larger than this is refused before it is parsed (parsing costs ~0.1 s per MiB)
MAX_FILE_BYTES = 64 * 1024 * 1024
_SOON = "is not supported yet"


@dataclass(frozen=True, slots=True)
class Defaults:
    interval: float = DEFAULT_INTERVAL
    module: str = "tcp_connect"
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS


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


class ConfigError(Exception):
    """A config that failed validation; ``errors`` holds one ``file:line: key: what`` per item."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


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


def target_address_error(address: str, module: Module) -> str | None:
    """Why ``address`` cannot be probed with ``module``, or None if it can."""
    if not module.runnable:
        return f'module "{module.name}" uses prober "{module.prober}", which {_SOON}'
    return PROBERS[module.prober].check_address(address)


#: series every target has whatever its prober: up, probes_total by result, the connect and
#: probe histograms, three last_* gauges and target_info (metrics' core families)
def _core_series(buckets: int) -> int:
    return 5 + len(RESULTS) + 2 * (buckets + 3)


def target_series(buckets: int, module: Module) -> int:
    """The most series a target with ``buckets`` bounds can show at /metrics (exposition's
    families; tests/test_labels.py checks the two agree), known before any probe ran: what
    ``limits.sample_limit`` holds a config to."""
    families = PROBERS[module.prober].module_families(module.options)
    return _core_series(buckets) + sum(f.series(buckets) for f in families)


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


def _defaults(c: Checker, node: yaml.Node, limits: Limits) -> Defaults:
    m = c.mapping(
        node,
        "defaults",
        {"interval": None, "module": None, "labels": None, "buckets": None,
         "timeout": "is a module setting: set timeout under modules.NAME"},
    )  # fmt: skip
    if m is None:
        return Defaults()
    d = Defaults()
    kw: dict[str, object] = {}
    if "interval" in m:
        kw["interval"] = c.duration(m["interval"], "defaults.interval", MIN_INTERVAL)
    if "module" in m:
        kw["module"] = c.string(m["module"], "defaults.module")
    if "labels" in m:
        kw["labels"] = merged_labels(c, m["labels"], "defaults.labels", (), limits)
    if "buckets" in m:
        kw["buckets"] = _buckets(c, m["buckets"], "defaults.buckets")
    return Defaults(**{k: (v if v is not None else getattr(d, k)) for k, v in kw.items()})  # type: ignore[arg-type]


def _targets(
    c: Checker, node: yaml.Node, defaults: Defaults, modules: dict[str, Module], limits: Limits
) -> list[Target]:
    items = c.sequence(node, "targets")
    out: list[Target] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items or []):
        path = f"targets[{i}]"
        m = c.mapping(
            item,
            path,
            {"address": None, "module": None, "interval": None, "labels": None, "buckets": None},
        )
        if m is None:
            continue
        if "address" not in m:
            c.error(item, f"{path}.address", "missing")
            continue
        anode = m["address"]
        address = target_address(c, anode, f"{path}.address", limits)
        module_name: str | None = defaults.module
        mnode: yaml.Node = item
        if "module" in m:
            mnode = m["module"]
            module_name = c.string(mnode, f"{path}.module")
        interval: float | None = defaults.interval
        if "interval" in m:
            interval = c.duration(m["interval"], f"{path}.interval", MIN_INTERVAL)
        labels: tuple[tuple[str, str], ...] | None = defaults.labels
        if "labels" in m:
            labels = merged_labels(c, m["labels"], f"{path}.labels", defaults.labels, limits)
        buckets: tuple[float, ...] | None = defaults.buckets
        if "buckets" in m:
            buckets = _buckets(c, m["buckets"], f"{path}.buckets")
        if address is None or module_name is None or interval is None:
            continue
        if labels is None or buckets is None:
            continue
        module = modules.get(module_name)
        if module is None:
            c.error(mnode, f"{path}.module", f'unknown module "{module_name}"')
            continue
        problem = target_address_error(address, module)
        if problem is not None:
            c.error(anode if module.runnable else mnode, f"{path}.address", problem)
            continue
        target = Target(address, module_name, interval, labels, buckets)
        if target.key in seen:
            c.error(
                anode,
                f"{path}.address",
                f'duplicate target "{target.display_address}" with module "{module_name}" '
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


def _policy(c: Checker, node: yaml.Node) -> ProbePolicy:
    m = c.mapping(
        node,
        "probe_policy",
        {"allow": None, "deny": None, "max_concurrent": None, "max_per_source": None,
         "max_timeout": None},
    )  # fmt: skip
    if m is None:
        return ProbePolicy()
    kw: dict[str, object] = {}
    for key in ("allow", "deny"):
        if key not in m:
            continue
        rules = []
        for i, item in enumerate(c.sequence(m[key], f"probe_policy.{key}") or []):
            text = c.string(item, f"probe_policy.{key}[{i}]")
            if text is None:
                continue
            try:
                rules.append(parse_rule(text))
            except ValueError as exc:
                c.error(item, f"probe_policy.{key}[{i}]", str(exc))
        kw[key] = tuple(rules)
    for key in ("max_concurrent", "max_per_source"):
        if key in m:
            kw[key] = c.integer(m[key], f"probe_policy.{key}", 1, 100_000)
    if "max_timeout" in m:
        kw["max_timeout"] = c.duration(m["max_timeout"], "probe_policy.max_timeout", 0.001)
    return ProbePolicy(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


_FILE_SD_SUFFIXES = (".json", ".yml", ".yaml")


def _target_files(
    c: Checker,
    node: yaml.Node,
    defaults: Defaults,
    modules: dict[str, Module],
    base: str,
    limits: Limits,
) -> list[TargetFiles]:
    out: list[TargetFiles] = []
    for i, item in enumerate(c.sequence(node, "target_files") or []):
        path = f"target_files[{i}]"
        m = c.mapping(
            item, path,
            {"files": None, "module": None, "interval": None, "labels": None, "buckets": None,
             "refresh_interval": None},
        )  # fmt: skip
        if m is None:
            continue
        if "files" not in m:
            c.error(item, f"{path}.files", "missing")
            continue
        patterns: list[str] = []
        for j, fnode in enumerate(c.sequence(m["files"], f"{path}.files") or []):
            pattern = c.string(fnode, f"{path}.files[{j}]")
            if pattern is None:
                continue
            if not pattern.endswith(_FILE_SD_SUFFIXES):
                c.error(fnode, f"{path}.files[{j}]",
                        f'"{pattern}" must end in .json, .yml or .yaml')  # fmt: skip
                continue
            patterns.append(os.path.join(glob.escape(base), pattern) if base else pattern)
        module_name = defaults.module
        if "module" in m:
            module_name = c.string(m["module"], f"{path}.module") or ""
            if module_name and module_name not in modules:
                c.error(m["module"], f"{path}.module", f'unknown module "{module_name}"')
            elif module_name and not modules[module_name].runnable:
                c.error(m["module"], f"{path}.module",
                        target_address_error("", modules[module_name]) or "")  # fmt: skip
        kw: dict[str, object] = {"interval": defaults.interval, "labels": defaults.labels,
                                 "buckets": defaults.buckets}  # fmt: skip
        if "interval" in m:
            kw["interval"] = c.duration(m["interval"], f"{path}.interval", MIN_INTERVAL)
        if "refresh_interval" in m:
            kw["refresh_interval"] = c.duration(
                m["refresh_interval"], f"{path}.refresh_interval", 1.0
            )
        if "labels" in m:
            kw["labels"] = merged_labels(c, m["labels"], f"{path}.labels", defaults.labels, limits)
        if "buckets" in m:
            kw["buckets"] = _buckets(c, m["buckets"], f"{path}.buckets")
        if None in kw.values() or not module_name:
            continue
        out.append(TargetFiles(tuple(patterns), module_name, **kw))  # type: ignore[arg-type]
    return out


def _limits(c: Checker, node: yaml.Node) -> Limits:
    ints = {
        "max_targets": (1, 10_000_000),
        "max_concurrent_probes": (1, 1_000_000),
        "max_web_connections": (1, 1_000_000),
        # raised, these stay bounded too: a config cannot lift them out of reach
        "label_limit": (1, 1000),
        "label_name_length_limit": (1, 1024),
        "label_value_length_limit": (1, 1 << 20),
        "sample_limit": (1, 1_000_000_000),
    }
    times = ("web_idle_timeout", "web_request_timeout")
    m = c.mapping(node, "limits", dict.fromkeys([*ints, *times, "max_body_bytes"]))
    if m is None:
        return Limits()
    kw: dict[str, object] = {}
    for key, (lo, hi) in ints.items():
        if key in m:
            kw[key] = c.integer(m[key], f"limits.{key}", lo, hi)
    for key in times:
        if key in m:
            kw[key] = c.duration(m[key], f"limits.{key}", 0.1)
    if "max_body_bytes" in m:
        size = c.byte_size(m["max_body_bytes"], "limits.max_body_bytes")
        if size == 0:  # nothing kept would make every body rule look at an empty body
            c.error(m["max_body_bytes"], "limits.max_body_bytes", "must be at least 1B")
        kw["max_body_bytes"] = size or None
    return Limits(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


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
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError([f"{filename}:{line}: invalid {kind}: {exc.problem}"]) from None
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
        return _parse_root(root, filename)
    finally:
        release(root)


def _parse_root(root: yaml.Node, filename: str) -> Config:
    c = Checker(filename)
    check_node_count(root, filename)
    top = c.mapping(
        root,
        "",
        {"defaults": None, "modules": None, "targets": None, "target_files": None,
         "probe_policy": None, "limits": None},
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
    files: list[TargetFiles] = []
    if "target_files" in top:
        base = os.path.dirname(filename)
        files = _target_files(c, top["target_files"], defaults, modules, base, limits)
    too_many = limits.too_many_targets(len(targets))
    if too_many is None and targets:
        too_many = limits.too_many_series(series_total(targets, modules))
    if too_many is not None:
        c.error(top["targets"], "targets", too_many)
    if c.errors:
        raise ConfigError(c.errors)
    return Config(
        defaults, modules, tuple(targets), filename, tuple(c.warnings), policy, limits,
        tuple(files),
    )  # fmt: skip


def over_limits(config: Config, targets: Sequence[Target]) -> str | None:
    """Why ``targets`` (config, ``--target`` and target files together) are refused, or None."""
    limits = config.limits
    return limits.too_many_targets(len(targets)) or limits.too_many_series(
        series_total(targets, config.modules)
    )


def load_config(path: str) -> Config:
    """Read and parse ``path``; an unreadable file is a ConfigError like any other."""
    return parse_config(read_file(path), path)


def with_extra_targets(
    config: Config,
    addresses: list[str],
    validate: Callable[[str, Module], str | None] = target_address_error,
) -> Config:
    """Add ``--target`` addresses, probed with the default module and interval."""
    module = config.modules[config.defaults.module]
    errors: list[str] = []
    known = {t.key for t in config.targets}
    extra: list[Target] = []
    for address in addresses:
        problem = config.limits.too_long_address(address)
        problem = problem or validate(address, module)
        if problem is not None:
            errors.append(f"--target: {problem}")
            continue
        t = Target(
            address, module.name, config.defaults.interval, config.defaults.labels,
            config.defaults.buckets,
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
