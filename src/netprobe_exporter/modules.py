"""Probe modules in blackbox_exporter 0.23 syntax: ``prober``, ``timeout`` and prober sections.

A blackbox.yml is a valid module list. Every prober section is read by its prober's own
declaration (``probes.PROBERS``); keys blackbox knows that we do not run yet are errors that
say so. Modules whose prober is recognised but not run yet load with a warning, so a
whole blackbox.yml still loads, and are refused where used (``/probe`` answers 400, a
continuous target is a config error).
"""

from __future__ import annotations

import yaml

from netprobe_exporter.model import (
    DEFAULT_TIMEOUT,
    MAX_ADDRESSES,
    EveryAddress,
    Module,
    Options,
    Secret,
)
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.probes.dns import DNSProbe, RRValidator
from netprobe_exporter.probes.http import BasicAuth, HeaderMatch, HTTPProbe
from netprobe_exporter.probes.icmp import ICMPProbe
from netprobe_exporter.probes.tcp import QueryResponse, TCPProbe
from netprobe_exporter.probes.tls import TLSConfig
from netprobe_exporter.yamlcheck import Checker

# the option types stay importable from here, where they used to live
__all__ = [
    "DEFAULT_TIMEOUT", "SOON", "BasicAuth", "DNSProbe", "HTTPProbe", "HeaderMatch", "ICMPProbe",
    "Module", "QueryResponse", "RRValidator", "Secret", "TCPProbe", "TLSConfig",
    "builtin_modules", "parse_module",
]  # fmt: skip
SOON = "is not supported yet"


def builtin_modules() -> dict[str, Module]:
    """Modules that exist even when the config has no ``modules:`` section."""
    return {
        "tcp_connect": Module(name="tcp_connect", prober="tcp", options=TCPProbe()),
        "tls_connect": Module(name="tls_connect", prober="tcp", options=TCPProbe(tls=True)),
        "http_2xx": Module(name="http_2xx", prober="http", options=HTTPProbe()),
        "icmp": Module(name="icmp", prober="icmp", options=ICMPProbe()),
        # as in blackbox's example configuration
        "dns_udp": Module(
            name="dns_udp",
            prober="dns",
            timeout=5.0,
            options=DNSProbe(
                query_name="www.prometheus.io", query_type="A", valid_rcodes=("NOERROR",)
            ),
        ),
    }


def parse_module(c: Checker, name: str, node: yaml.Node, path: str) -> Module | None:
    allowed: dict[str, str | None] = {
        "prober": None, "timeout": None, "every_address": None, **dict.fromkeys(PROBERS)
    }  # fmt: skip
    m = c.mapping(node, path, allowed)
    if m is None:
        return None
    if "prober" not in m:
        c.error(node, f"{path}.prober", "missing")
        return None
    pnode = m["prober"]
    prober = c.string(pnode, f"{path}.prober")
    if prober is None:
        return None
    spec = PROBERS.get(prober)
    if spec is None:
        c.error(pnode, f"{path}.prober", f'unknown prober "{prober}"')
        return None
    timeout = 0.0
    if "timeout" in m:
        t = c.duration(m["timeout"], f"{path}.timeout")
        timeout = t if t is not None else timeout
    # every section given is checked, the module's own prober's is kept
    options: Options | None = None
    for section, other in PROBERS.items():
        if section in m:
            parsed = other.parse(c, m[section], f"{path}.{section}", node)
            if section == prober:
                options = parsed
    if options is None:
        options = spec.parse(c, None, f"{path}.{prober}", node)
    if spec.check_timeout is not None:
        whose = (
            "the module's timeout of {}" if timeout
            else "the {} a module without timeout gets in continuous mode"
        )  # fmt: skip
        problem = spec.check_timeout(options, timeout or DEFAULT_TIMEOUT, whose)
        if problem is not None:
            at = m.get(prober) or pnode
            c.error(at, f"{path}.{prober}", f"{problem}, or raise {path}.timeout")
    if not options.runnable:
        c.warn(pnode, f"{path}.prober",
               f'prober "{prober}" {SOON}: module "{name}" cannot be probed')  # fmt: skip
    every = None
    if "every_address" in m:
        every = parse_every_address(c, m["every_address"], f"{path}.every_address")
        if every is not None and spec.target_host is None:
            why = f'prober "{prober}" targets are not resolved: there is only one address'
            c.error(m["every_address"], f"{path}.every_address", why)
            every = None
    return Module(name=name, prober=prober, timeout=timeout, options=options, every_address=every)


_FAMILIES = {"ip4": 4, "ip6": 6}


def parse_every_address(c: Checker, node: yaml.Node, path: str) -> EveryAddress | None:
    """``every_address: true`` (the defaults), ``false``, or ``{max_addresses, families}``."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
        return EveryAddress() if c.boolean(node, path) else None
    m = c.mapping(node, path, {"max_addresses": None, "families": None})
    if m is None:
        return None
    most = EveryAddress().max_addresses
    if "max_addresses" in m:
        found = c.integer(m["max_addresses"], f"{path}.max_addresses", 1, MAX_ADDRESSES)
        most = most if found is None else found
    families = EveryAddress().families
    if "families" in m:
        names = c.strings(m["families"], f"{path}.families")
        if names is not None:
            bad = [n for n in names if n not in _FAMILIES]
            if bad or not names or len(set(names)) != len(names):
                c.error(m["families"], f"{path}.families",
                        "must list ip4, ip6 or both, each once")  # fmt: skip
            else:
                families = tuple(_FAMILIES[n] for n in names)
    return EveryAddress(most, families)
