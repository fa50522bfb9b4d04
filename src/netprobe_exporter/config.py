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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import yaml

from netprobe_exporter.addresses import parse_dns_server, parse_host, parse_host_port, parse_url
from netprobe_exporter.modules import DEFAULT_TIMEOUT, Module, builtin_modules, parse_module
from netprobe_exporter.policy import ProbePolicy, parse_rule
from netprobe_exporter.yamlcheck import YAML_LOADER, Checker, is_null, release, scalar, show

__all__ = ["DEFAULT_TIMEOUT", "Config", "ConfigError", "Defaults", "Module", "Target"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
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
class Target:
    address: str
    module: str
    interval: float
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS

    @property
    def key(self) -> tuple[str, str]:
        """What makes a target unique: two entries with the same key are a config error."""
        return (self.address, self.module)


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

    def too_many_targets(self, count: int) -> str | None:
        """Why ``count`` continuous targets are refused, or None when they are not."""
        if count > self.max_targets:
            return f"{count} targets exceed limits.max_targets ({self.max_targets})"
        return None


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


def labels_of(
    c: Checker, node: yaml.Node, path: str, skip_meta: bool = False
) -> dict[str, str] | None:
    """A ``labels:`` mapping, validated; ``skip_meta`` drops Prometheus' ``__`` meta labels
    (as file_sd groups carry them) instead of refusing them."""
    if is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        c.error(node, path, f"must be a mapping of label names to values, not {show(node)}")
        return None
    out: dict[str, str] = {}
    ok = True
    for knode, vnode in node.value:
        name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
        sub = f"{path}.{name}"
        if skip_meta and name.startswith("__"):
            continue
        if not LABEL_NAME.match(name) or name.startswith("__"):
            c.error(knode, path, f'"{name}" is not a valid label name')
            ok = False
        elif name in RESERVED_LABELS:
            c.error(knode, sub, "is set by the exporter and cannot be overridden")
            ok = False
        elif name in out:
            c.error(knode, sub, "duplicate label")
            ok = False
        elif not isinstance(vnode, yaml.ScalarNode):
            c.error(vnode, sub, f"label value must be a string, not {show(vnode)}")
            ok = False
        else:
            out[name] = "" if is_null(vnode) else str(vnode.value)
    return out if ok else None


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
            c.error(item, f"{path}[{i}]", f"must be a number, not {show(item)}")
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
    try:
        if module.prober == "tcp":
            parse_host_port(address)
        elif module.prober == "http":
            parse_url(address)
        elif module.prober == "dns":
            parse_dns_server(address)
        elif module.prober == "icmp":
            parse_host(address)
    except ValueError as exc:
        return str(exc)
    return None


def _defaults(c: Checker, node: yaml.Node) -> Defaults:
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
        labels = labels_of(c, m["labels"], "defaults.labels")
        kw["labels"] = tuple(sorted(labels.items())) if labels is not None else None
    if "buckets" in m:
        kw["buckets"] = _buckets(c, m["buckets"], "defaults.buckets")
    return Defaults(**{k: (v if v is not None else getattr(d, k)) for k, v in kw.items()})  # type: ignore[arg-type]


def _targets(
    c: Checker, node: yaml.Node, defaults: Defaults, modules: dict[str, Module]
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
        address = c.string(anode, f"{path}.address")
        module_name: str | None = defaults.module
        mnode: yaml.Node = item
        if "module" in m:
            mnode = m["module"]
            module_name = c.string(mnode, f"{path}.module")
        interval: float | None = defaults.interval
        if "interval" in m:
            interval = c.duration(m["interval"], f"{path}.interval", MIN_INTERVAL)
        labels: dict[str, str] | None = dict(defaults.labels)
        if "labels" in m:
            own = labels_of(c, m["labels"], f"{path}.labels")
            labels = None if own is None else {**dict(defaults.labels), **own}
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
        target = Target(address, module_name, interval, tuple(sorted(labels.items())), buckets)
        if target.key in seen:
            c.error(
                anode,
                f"{path}.address",
                f'duplicate target "{address}" with module "{module_name}" '
                f"(first at targets[{seen[target.key]}])",
            )
            continue
        seen[target.key] = i
        out.append(target)
    return out


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
    c: Checker, node: yaml.Node, defaults: Defaults, modules: dict[str, Module], base: str
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
            own = labels_of(c, m["labels"], f"{path}.labels")
            kw["labels"] = None if own is None else tuple(sorted({**dict(defaults.labels),
                                                                  **own}.items()))  # fmt: skip
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
    defaults = _defaults(c, top["defaults"]) if "defaults" in top else Defaults()
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
                if name in seen:
                    c.error(knode, f"modules.{name}", "duplicate module")
                    continue
                seen.add(name)
                module = parse_module(c, name, vnode, f"modules.{name}")
                if module is not None:
                    modules[name] = module
        elif not is_null(mnode):
            c.error(mnode, "modules", f"must be a mapping of module names, not {show(mnode)}")
    if "defaults" in top and defaults.module not in modules:
        c.error(top["defaults"], "defaults.module", f'unknown module "{defaults.module}"')
    targets = _targets(c, top["targets"], defaults, modules) if "targets" in top else []
    policy = _policy(c, top["probe_policy"]) if "probe_policy" in top else ProbePolicy()
    limits = _limits(c, top["limits"]) if "limits" in top else Limits()
    files: list[TargetFiles] = []
    if "target_files" in top:
        base = os.path.dirname(filename)
        files = _target_files(c, top["target_files"], defaults, modules, base)
    too_many = limits.too_many_targets(len(targets))
    if too_many is not None:
        c.error(top["targets"], "targets", too_many)
    if c.errors:
        raise ConfigError(c.errors)
    return Config(
        defaults, modules, tuple(targets), filename, tuple(c.warnings), policy, limits,
        tuple(files),
    )  # fmt: skip


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
        problem = validate(address, module)
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
    if too_many is not None:
        errors.append(f"--target: {too_many}")
    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(config, targets=config.targets + tuple(extra))
