"""Configuration as plain YAML with every secret replaced by ``<secret>`` (for ``/config`` and
``/probe?debug=true``): passwords and tokens never leave the process this way."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import yaml

from netprobe_exporter.addresses import redact_url
from netprobe_exporter.config import (
    DEFAULTS,
    DNS_CACHE,
    LIMITS,
    PROBE_POLICY,
    TARGET,
    TARGET_FILES,
    Config,
)
from netprobe_exporter.durations import byte_size, format_duration
from netprobe_exporter.model import Module
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.schema import plain

__all__ = ["byte_size", "config_yaml", "module_doc", "plain", "request_uri"]


def module_doc(module: Module) -> dict[str, Any]:
    """A module in blackbox's layout: its prober, timeout and its own prober's section."""
    doc: dict[str, Any] = {"prober": module.prober}
    if module.timeout:
        doc["timeout"] = format_duration(module.timeout)
    every = module.every_address
    if every is not None:
        doc["every_address"] = {
            "max_addresses": every.max_addresses,
            "families": [f"ip{f}" for f in every.families],
        }
    if module.runnable:  # a prober not run yet has no options to show
        spec = PROBERS[module.prober]
        shown = spec.options.dump(module.options)
        hook = spec.shown
        doc[module.prober] = shown if hook is None else hook(module.options, shown)
    return doc


def config_yaml(config: Config) -> str:
    """The running config (every section, target_files, limits and dns_cache included) as
    YAML, redacted: each section written by its declarations."""
    doc: dict[str, Any] = {
        "defaults": DEFAULTS.dump(config.defaults),
        "modules": {name: module_doc(m) for name, m in sorted(config.modules.items())},
        "targets": [TARGET.dump(t) for t in config.targets],
        "probe_policy": PROBE_POLICY.dump(config.probe_policy),
        "limits": LIMITS.dump(config.limits),
        "dns_cache": DNS_CACHE.dump(config.dns_cache),
        "target_files": [TARGET_FILES.dump(spec) for spec in config.target_files],
    }
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
