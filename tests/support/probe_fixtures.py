"""Probe fixtures shared by the tiers: icmp modules and their test base, a tcp module."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from netprobe_exporter.config import parse_config
from netprobe_exporter.modules import Module, TCPProbe
from netprobe_exporter.probes import ProbeContext
from netprobe_exporter.probes import icmp as icmp_prober
from netprobe_exporter.resolver import Resolver
from tests.support.loopback import SilentDNSServer, temp_path, write_file
from tests.support.reactor import reactor


def tcp_module(preferred: str = "ip6", fallback: bool = True, source: str | None = None) -> Module:
    return Module(
        name="tcp_connect",
        prober="tcp",
        options=TCPProbe(
            preferred_ip_protocol=preferred,
            ip_protocol_fallback=fallback,
            source_ip_address=source,
        ),
    )


MODULES = parse_config(
    """
modules:
  v4: {prober: icmp, icmp: {preferred_ip_protocol: ip4}}
  v6: {prober: icmp}
  ttl: {prober: icmp, icmp: {preferred_ip_protocol: ip4, ttl: 7, payload_size: 600,
                             dont_fragment: true}}
""",
    "icmp.yml",
).modules


def needs_icmp() -> None:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("ICMP sockets need root here (or a ping_group_range that covers us)")


class ICMPTestBase(TestCase):
    def setUp(self) -> None:
        needs_icmp()
        silent = SilentDNSServer()
        self.addCleanup(silent.stop)
        hosts = temp_path(self)
        write_file(hosts, "127.0.0.1 localhost\n::1 localhost6\n")
        self.ctx = ProbeContext(
            reactor, Resolver(reactor, servers=[silent.address], hosts_path=str(hosts))
        )

    def probe(self, target: str, module: str = "v4", timeout: float = 1.0) -> Any:
        return icmp_prober.probe(self.ctx, target, MODULES[module], timeout)
