"""``probe_policy``: which targets ``/probe`` may reach, and how much of it may run at once.

The address check happens after name resolution, on the address the prober is about to
contact (every redirect hop included), so a name cannot smuggle in a denied address. Host
patterns (``*.example.org``) match the name as written in the target.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PATTERN = re.compile(r"^[A-Za-z0-9*?._-]+$")


@dataclass(frozen=True, slots=True)
class Rule:
    network: IPNetwork | None = None
    pattern: str | None = None

    def matches(self, host: str, ip: str) -> bool:
        if self.network is not None:
            if not ip:
                return False  # a Unix socket path: no address for a network to hold
            addr = ipaddress.ip_address(ip)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            return addr.version == self.network.version and addr in self.network
        assert self.pattern is not None
        return fnmatch.fnmatchcase(host.lower().rstrip("."), self.pattern)

    def __str__(self) -> str:
        return str(self.network) if self.network is not None else str(self.pattern)


def parse_rule(text: str) -> Rule:
    """A CIDR (or a single address) or a host pattern; raise ValueError otherwise."""
    try:
        return Rule(network=ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    if not _PATTERN.match(text):
        raise ValueError(f'"{text}" is neither a CIDR nor a host pattern like "*.example.org"')
    return Rule(pattern=text.lower().rstrip("."))


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    #: /probe requests running at once, in all and per client address
    max_concurrent: int = 100
    max_per_source: int = 20
    #: the longest a /probe may take, whatever the scrape timeout header says
    max_timeout: float = 120.0

    def check(self, host: str, ip: str) -> str | None:
        """Why ``host`` (resolved to ``ip``; "" for a Unix socket path) may not be probed, or
        None if it may."""
        what = f"{host} ({ip})" if ip else host
        for rule in self.deny:
            if rule.matches(host, ip):
                return f"{what} matches deny rule {rule}"
        if self.allow and not any(rule.matches(host, ip) for rule in self.allow):
            return f"{what} matches no allow rule"
        return None
