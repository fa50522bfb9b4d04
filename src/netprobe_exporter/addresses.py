"""Parsing of target addresses, shared by config validation and the probers.

Parsers are cached: continuous mode parses the same few thousand addresses at every probe, and
``ipaddress`` is slow enough to show up per probe.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

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


@functools.lru_cache(maxsize=65536)
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
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"{address!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is out of range 1-65535")
    return HostPort(host, port, version)


@dataclass(frozen=True, slots=True)
class URL:
    """An http(s) target, as blackbox reads it: a missing scheme means ``http://``."""

    scheme: str
    host: str
    port: int
    ip_version: int
    #: path and query, as sent in the request line
    path: str
    #: the full URL text, scheme included
    text: str

    @property
    def netloc(self) -> str:
        """``host:port`` for the Host header: the port only when it is not the default."""
        host = f"[{self.host}]" if self.ip_version == 6 else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=65536)
def parse_url(target: str) -> URL:
    """Parse an http(s) target; raise ValueError naming what is wrong."""
    text = target if target.startswith(("http://", "https://")) else f"http://{target}"
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in text):
        raise ValueError(f"{target!r}: URLs may not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{target!r}: not a valid URL ({exc})") from None
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{target!r}: URL has no host")
    if "[" in parts.netloc:
        try:
            version: int = ipaddress.ip_address(host).version
        except ValueError:
            raise ValueError(f"{target!r}: {host!r} is not an IPv6 address") from None
    else:
        version = parse_host(host)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise ValueError(f"{target!r}: port {port} is out of range 1-65535")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return URL(parts.scheme, host, port, version, path, text)


@functools.lru_cache(maxsize=65536)
def parse_dns_server(address: str, default_port: int = 53) -> HostPort:
    """A DNS server target: ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    try:
        return parse_host_port(address)
    except ValueError:
        pass
    try:
        version = parse_host(address)
    except ValueError:
        raise ValueError(f"{address!r}: not a host or host:port") from None
    return HostPort(address, default_port, version)
