"""The config file: YAML in, immutable dataclasses out, every error as ``file:line: key: what``.

Validation walks the composed YAML node tree rather than the constructed Python objects, so every
error can name the line it comes from. All errors are collected, not just the first, because a
user fixing a config wants the whole list at once (``--config.check`` prints one per line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from netprobe_exporter.addresses import parse_host, parse_host_port
from netprobe_exporter.durations import parse_duration

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 5.0
MIN_INTERVAL = 0.1
#: label names the exporter sets itself; a user label may not take them
RESERVED_LABELS = frozenset({"target", "module", "result", "le", "phase", "ip", "quantile"})
SUPPORTED_PROBERS = ("tcp",)
#: probers blackbox knows that this version cannot run yet
LATER_PROBERS = ("http", "dns", "icmp", "grpc")

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_NODES = 1_000_000


@dataclass(frozen=True, slots=True)
class TCPProbe:
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    timeout: float = DEFAULT_TIMEOUT
    tcp: TCPProbe = field(default_factory=TCPProbe)


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


def builtin_modules() -> dict[str, Module]:
    """Modules that exist even when the config has no ``modules:`` section."""
    return {"tcp_connect": Module(name="tcp_connect", prober="tcp")}


@dataclass(frozen=True, slots=True)
class Config:
    defaults: Defaults = field(default_factory=Defaults)
    modules: dict[str, Module] = field(default_factory=builtin_modules)
    targets: tuple[Target, ...] = ()
    source: str = "<embedded>"


class ConfigError(Exception):
    """A config that failed validation; ``errors`` holds one ``file:line: key: what`` per item."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Errors:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[str] = []

    def add(self, node: yaml.Node | None, path: str, what: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        where = f"{self.filename}:{line}" if line else self.filename
        self.items.append(f"{where}: {path}: {what}" if path else f"{where}: {what}")


_constructor = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _constructor.construct_object(node, deep=True)


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f'"{node.value}"'
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _mapping(
    node: yaml.Node, path: str, errs: _Errors, allowed: dict[str, str | None]
) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """Return ``{key: (key_node, value_node)}``; unknown and duplicate keys are errors.

    ``allowed`` maps each key to None when supported, or to the reason it is not (yet).
    """
    if not isinstance(node, yaml.MappingNode):
        errs.add(node, path, f"must be a mapping, not {_show(node)}")
        return None
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        key = knode.value if isinstance(knode, yaml.ScalarNode) else None
        sub = f"{path}.{key}" if path else str(key)
        if key is None or not isinstance(key, str):
            errs.add(knode, path, "keys must be strings")
            continue
        if key not in allowed:
            errs.add(knode, sub, "unknown key")
            continue
        if allowed[key] is not None:
            errs.add(knode, sub, str(allowed[key]))
            continue
        if key in out:
            errs.add(knode, sub, "duplicate key")
            continue
        out[key] = (knode, vnode)
    return out


def _duration(node: yaml.Node, path: str, errs: _Errors, minimum: float = 0.0) -> float | None:
    if not isinstance(node, yaml.ScalarNode):
        errs.add(node, path, f"must be a duration, not {_show(node)}")
        return None
    try:
        value = parse_duration(str(node.value))
    except ValueError:
        errs.add(node, path, f'"{node.value}" is not a duration')
        return None
    if value < minimum or value <= 0:
        errs.add(node, path, f'"{node.value}" is too short (minimum {minimum:g}s)')
        return None
    return value


def _string(node: yaml.Node, path: str, errs: _Errors) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        errs.add(node, path, f"must be a string, not {_show(node)}")
        return None
    return str(node.value)


def _bool(node: yaml.Node, path: str, errs: _Errors) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return bool(_scalar(node))
    errs.add(node, path, f"must be true or false, not {_show(node)}")
    return None


def _labels(node: yaml.Node, path: str, errs: _Errors) -> dict[str, str] | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return {}
    if not isinstance(node, yaml.MappingNode):
        errs.add(node, path, f"must be a mapping of label names to values, not {_show(node)}")
        return None
    out: dict[str, str] = {}
    ok = True
    for knode, vnode in node.value:
        name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
        sub = f"{path}.{name}"
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            errs.add(knode, path, f'"{name}" is not a valid label name')
            ok = False
        elif name in RESERVED_LABELS:
            errs.add(knode, sub, "is set by the exporter and cannot be overridden")
            ok = False
        elif name in out:
            errs.add(knode, sub, "duplicate label")
            ok = False
        elif not isinstance(vnode, yaml.ScalarNode):
            errs.add(vnode, sub, f"label value must be a string, not {_show(vnode)}")
            ok = False
        else:
            value = _scalar(vnode)
            out[name] = "" if value is None else str(vnode.value)
    return out if ok else None


def _buckets(node: yaml.Node, path: str, errs: _Errors) -> tuple[float, ...] | None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        errs.add(node, path, "must be a non-empty list of numbers")
        return None
    values: list[float] = []
    for i, item in enumerate(node.value):
        value = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            errs.add(item, f"{path}[{i}]", f"must be a number, not {_show(item)}")
            return None
        if not math.isfinite(value) or value <= 0:
            errs.add(item, f"{path}[{i}]", f"{value} must be a positive finite number")
            return None
        if values and value <= values[-1]:
            errs.add(item, f"{path}[{i}]", "buckets must be strictly increasing")
            return None
        values.append(float(value))
    return tuple(values)


def _tcp_section(node: yaml.Node, path: str, errs: _Errors) -> TCPProbe | None:
    soon = "is not supported yet"
    m = _mapping(
        node,
        path,
        errs,
        {
            "preferred_ip_protocol": None,
            "ip_protocol_fallback": None,
            "source_ip_address": None,
            "query_response": soon,
            "tls": soon,
            "tls_config": soon,
        },
    )
    if m is None:
        return None
    kwargs: dict[str, Any] = {}
    if "preferred_ip_protocol" in m:
        vnode = m["preferred_ip_protocol"][1]
        value = _string(vnode, f"{path}.preferred_ip_protocol", errs)
        if value is not None:
            if value not in ("ip4", "ip6"):
                errs.add(vnode, f"{path}.preferred_ip_protocol", f'"{value}" must be ip4 or ip6')
            else:
                kwargs["preferred_ip_protocol"] = value
    if "ip_protocol_fallback" in m:
        fb = _bool(m["ip_protocol_fallback"][1], f"{path}.ip_protocol_fallback", errs)
        if fb is not None:
            kwargs["ip_protocol_fallback"] = fb
    if "source_ip_address" in m:
        vnode = m["source_ip_address"][1]
        src = _string(vnode, f"{path}.source_ip_address", errs)
        if src is not None:
            try:
                if parse_host(src) == 0:
                    raise ValueError
            except ValueError:
                errs.add(vnode, f"{path}.source_ip_address", f'"{src}" is not an IP address')
            else:
                kwargs["source_ip_address"] = src
    return TCPProbe(**kwargs)


def _module(name: str, node: yaml.Node, path: str, errs: _Errors) -> Module | None:
    later = "is not supported yet"
    m = _mapping(
        node,
        path,
        errs,
        {"prober": None, "timeout": None, "tcp": None, "http": later, "dns": later,
         "icmp": later, "grpc": later},
    )  # fmt: skip
    if m is None:
        return None
    if "prober" not in m:
        errs.add(node, f"{path}.prober", "missing")
        return None
    pnode = m["prober"][1]
    prober = _string(pnode, f"{path}.prober", errs)
    if prober is None:
        return None
    if prober not in SUPPORTED_PROBERS:
        if prober in LATER_PROBERS:
            errs.add(pnode, f"{path}.prober", f'prober "{prober}" is not supported yet')
        else:
            errs.add(pnode, f"{path}.prober", f'unknown prober "{prober}"')
        return None
    timeout = DEFAULT_TIMEOUT
    if "timeout" in m:
        t = _duration(m["timeout"][1], f"{path}.timeout", errs)
        timeout = t if t is not None else timeout
    tcp = TCPProbe()
    if "tcp" in m:
        tcp = _tcp_section(m["tcp"][1], f"{path}.tcp", errs) or tcp
    return Module(name=name, prober=prober, timeout=timeout, tcp=tcp)


def _target_address_error(address: str, module: Module) -> str | None:
    if module.prober == "tcp":
        try:
            parse_host_port(address)
        except ValueError as exc:
            return str(exc)
    return None


def _defaults(node: yaml.Node, errs: _Errors) -> Defaults:
    m = _mapping(
        node,
        "defaults",
        errs,
        {"interval": None, "module": None, "labels": None, "buckets": None,
         "timeout": "is a module setting: set timeout under modules.NAME"},
    )  # fmt: skip
    if m is None:
        return Defaults()
    d = Defaults()
    kw: dict[str, Any] = {}
    if "interval" in m:
        kw["interval"] = _duration(m["interval"][1], "defaults.interval", errs, MIN_INTERVAL)
    if "module" in m:
        kw["module"] = _string(m["module"][1], "defaults.module", errs)
    if "labels" in m:
        labels = _labels(m["labels"][1], "defaults.labels", errs)
        kw["labels"] = tuple(sorted(labels.items())) if labels is not None else None
    if "buckets" in m:
        kw["buckets"] = _buckets(m["buckets"][1], "defaults.buckets", errs)
    return Defaults(**{k: (v if v is not None else getattr(d, k)) for k, v in kw.items()})


def _targets(
    node: yaml.Node, defaults: Defaults, modules: dict[str, Module], errs: _Errors
) -> list[Target]:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, yaml.SequenceNode):
        errs.add(node, "targets", f"must be a list, not {_show(node)}")
        return []
    out: list[Target] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(node.value):
        path = f"targets[{i}]"
        m = _mapping(
            item,
            path,
            errs,
            {"address": None, "module": None, "interval": None, "labels": None, "buckets": None},
        )
        if m is None:
            continue
        if "address" not in m:
            errs.add(item, f"{path}.address", "missing")
            continue
        anode = m["address"][1]
        address = _string(anode, f"{path}.address", errs)
        module_name: str | None = defaults.module
        mnode: yaml.Node = item
        if "module" in m:
            mnode = m["module"][1]
            module_name = _string(mnode, f"{path}.module", errs)
        interval: float | None = defaults.interval
        if "interval" in m:
            interval = _duration(m["interval"][1], f"{path}.interval", errs, MIN_INTERVAL)
        labels: dict[str, str] | None = dict(defaults.labels)
        if "labels" in m:
            own = _labels(m["labels"][1], f"{path}.labels", errs)
            labels = None if own is None else {**dict(defaults.labels), **own}
        buckets: tuple[float, ...] | None = defaults.buckets
        if "buckets" in m:
            buckets = _buckets(m["buckets"][1], f"{path}.buckets", errs)
        if address is None or module_name is None or interval is None:
            continue
        if labels is None or buckets is None:
            continue
        module = modules.get(module_name)
        if module is None:
            errs.add(mnode, f"{path}.module", f'unknown module "{module_name}"')
            continue
        problem = _target_address_error(address, module)
        if problem is not None:
            errs.add(anode, f"{path}.address", problem)
            continue
        target = Target(address, module_name, interval, tuple(sorted(labels.items())), buckets)
        if target.key in seen:
            errs.add(
                anode,
                f"{path}.address",
                f'duplicate target "{address}" with module "{module_name}" '
                f"(first at targets[{seen[target.key]}])",
            )
            continue
        seen[target.key] = i
        out.append(target)
    return out


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


def parse_config(text: str | bytes, filename: str = "config.yml") -> Config:
    """Parse and validate a config document; raise ConfigError listing every problem."""
    errs = _Errors(filename)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            what = f"{filename}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            raise ConfigError([what]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError([f"{filename}:{line}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}: invalid YAML: {exc}"]) from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        raise ConfigError([f"{filename}: empty config: expected a mapping with modules or targets"])
    for n, _ in enumerate(_count_nodes(root)):
        if n > _MAX_NODES:
            raise ConfigError([f"{filename}: config too large (over {_MAX_NODES} YAML nodes)"])
    soon = "is not supported yet"
    top = _mapping(
        root,
        "",
        errs,
        {"defaults": None, "modules": None, "targets": None, "target_files": soon,
         "probe_policy": soon},
    )  # fmt: skip
    if top is None:
        raise ConfigError(errs.items)
    defaults = _defaults(top["defaults"][1], errs) if "defaults" in top else Defaults()
    modules = builtin_modules()
    if "modules" in top:
        mnode = top["modules"][1]
        if isinstance(mnode, yaml.MappingNode):
            seen: set[str] = set()
            for knode, vnode in mnode.value:
                name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
                if not name:
                    errs.add(knode, "modules", "module names must be non-empty strings")
                    continue
                if name in seen:
                    errs.add(knode, f"modules.{name}", "duplicate module")
                    continue
                seen.add(name)
                module = _module(name, vnode, f"modules.{name}", errs)
                if module is not None:
                    modules[name] = module
        elif not (isinstance(mnode, yaml.ScalarNode) and mnode.tag.endswith(":null")):
            errs.add(mnode, "modules", f"must be a mapping of module names, not {_show(mnode)}")
    if "defaults" in top and defaults.module not in modules:
        knode = top["defaults"][1]
        errs.add(knode, "defaults.module", f'unknown module "{defaults.module}"')
    targets = _targets(top["targets"][1], defaults, modules, errs) if "targets" in top else []
    if errs.items:
        raise ConfigError(errs.items)
    return Config(defaults=defaults, modules=modules, targets=tuple(targets), source=filename)


def load_config(path: str) -> Config:
    """Read and parse ``path``; an unreadable file is a ConfigError like any other."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(data, path)


def with_extra_targets(
    config: Config,
    addresses: list[str],
    validate: Callable[[str, Module], str | None] | None = None,
) -> Config:
    """Add ``--target`` addresses, probed with the default module and interval."""
    validate = validate or _target_address_error
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
    if errors:
        raise ConfigError(errors)
    return Config(config.defaults, config.modules, config.targets + tuple(extra), config.source)
