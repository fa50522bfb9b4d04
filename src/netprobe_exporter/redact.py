"""Configuration as plain YAML with every secret replaced by ``<secret>`` (for ``/config`` and
``/probe?debug=true``): passwords and tokens never leave the process this way."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import yaml

from netprobe_exporter.addresses import redact_url
from netprobe_exporter.durations import byte_size, format_duration
from netprobe_exporter.model import Module, Secret
from netprobe_exporter.policy import Rule
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.yamlcheck import REDACTED, SECRET_KEYS, is_secret_header

__all__ = ["byte_size", "config_yaml", "module_doc", "plain", "request_uri"]


def plain(value: Any) -> Any:
    """Dataclasses, patterns, networks and secrets as plain YAML-able values; empties dropped."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = plain(getattr(value, f.name))
            if f.name in SECRET_KEYS and v:
                v = REDACTED
            elif f.name == "headers" and isinstance(v, dict):
                v = {k: REDACTED if is_secret_header(k) else x for k, x in v.items()}
            if v not in (None, (), [], "", {}):
                out[f.name] = v
        return out
    if isinstance(value, tuple | list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {str(k): plain(v) for k, v in value}  # header and label pairs
        return [plain(x) for x in value]
    return value


def module_doc(module: Module) -> dict[str, Any]:
    """A module in blackbox's layout: its prober, timeout and its own prober's section."""
    doc: dict[str, Any] = {"prober": module.prober}
    if module.timeout:
        doc["timeout"] = format_duration(module.timeout)
    if module.runnable:  # a prober not run yet has no options to show
        spec = PROBERS[module.prober]
        shown = spec.options.dump(module.options)
        hook = spec.shown
        doc[module.prober] = shown if hook is None else hook(module.options, shown)
    return doc


def _rule(rule: Rule) -> str:
    return str(rule.network) if rule.network is not None else str(rule.pattern)


def config_yaml(config: Any) -> str:
    """The running config (every section, target_files and limits included) as YAML, redacted."""
    doc: dict[str, Any] = {
        "defaults": plain(config.defaults),
        "modules": {name: module_doc(m) for name, m in sorted(config.modules.items())},
        "targets": [{**plain(t), "address": t.display_address} for t in config.targets],
        "probe_policy": plain(config.probe_policy),
        "limits": plain(config.limits),
        "target_files": [plain(spec) for spec in config.target_files],
    }
    for spec in doc["target_files"]:
        for key in ("interval", "refresh_interval"):
            spec[key] = format_duration(spec[key])
    for key in ("web_request_timeout", "web_idle_timeout"):
        doc["limits"][key] = format_duration(doc["limits"][key])
    doc["limits"]["max_body_bytes"] = byte_size(config.limits.max_body_bytes)
    policy = config.probe_policy
    for key in ("allow", "deny"):
        if getattr(policy, key):
            doc["probe_policy"][key] = [_rule(r) for r in getattr(policy, key)]
    doc["probe_policy"]["max_timeout"] = format_duration(policy.max_timeout)
    doc["defaults"]["interval"] = format_duration(config.defaults.interval)
    for target in doc["targets"]:
        target["interval"] = format_duration(target["interval"])
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def request_uri(uri: str) -> str:
    """A request's URI for the log: a ``target`` parameter's URL password shown as ``xxxxx``."""
    path, sep, query = uri.partition("?")
    if not sep or "target" not in query:
        return uri
    pairs = parse_qsl(query, keep_blank_values=True)
    if all(k != "target" or redact_url(v) == v for k, v in pairs):
        return uri
    return f"{path}?{urlencode([(k, redact_url(v) if k == 'target' else v) for k, v in pairs])}"
