"""Parsing of ``host:port`` target addresses, shared by config validation and the tcp prober."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int
    #: 4 or 6 for an IP literal, 0 for a name that must be resolved
    ip_version: int


def parse_host(host: str) -> int:
    """Return 4 or 6 for an IP literal, 0 for a valid hostname; raise ValueError otherwise."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        pass
    if not _HOSTNAME.match(host) or host.startswith("-"):
        raise ValueError(f"{host!r} is not a valid hostname or IP address")
    return 0


def parse_host_port(address: str) -> HostPort:
    """Split ``host:port`` or ``[v6]:port``; raise ValueError naming what is wrong."""
    if not address:
        raise ValueError("empty address")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"{address!r}: missing ']' after IPv6 address")
        host = address[1:end]
        rest = address[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"{address!r}: missing ':port' after ']'")
        port_text = rest[1:]
        try:
            version: int = ipaddress.ip_address(host).version
        except ValueError:
            raise ValueError(f"{address!r}: {host!r} is not an IPv6 address") from None
        if version != 6:
            raise ValueError(f"{address!r}: brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"{address!r}: missing port (want host:port)")
        if ":" in host:
            raise ValueError(f"{address!r}: IPv6 addresses need brackets, as [::1]:80")
        if not host:
            raise ValueError(f"{address!r}: missing host")
        version = parse_host(host)
    if not port_text.isdigit():
        raise ValueError(f"{address!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is out of range 1-65535")
    return HostPort(host, port, version)
