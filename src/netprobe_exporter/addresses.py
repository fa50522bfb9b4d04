"""Parsing of target addresses, shared by config validation and the probers.

Parsers are cached: continuous mode parses the same few thousand addresses at every probe, and
``ipaddress`` is slow enough to show up per probe.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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


#: what a URL's password is shown as, wherever a URL is shown (Go's ``URL.Redacted``)
REDACTED_PASSWORD = "xxxxx"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(address: str) -> bool:
    """``scheme://…``: what a user who pasted a URL where host:port belongs typed."""
    return _SCHEME.match(address) is not None


def _password_span(text: str) -> tuple[int, int] | None:
    """Where the password of ``text``'s userinfo is (start, end), if it has one.

    Works on text that does not parse as well (an error message must not show the password
    of a malformed URL either), with or without a scheme (``http://`` is assumed without).
    """
    m = _SCHEME.match(text)
    start = m.end() if m else 0
    ends = [i for i in (text.find(ch, start) for ch in "/?#") if i >= 0]
    at = text.rfind("@", start, min(ends, default=len(text)))
    colon = text.find(":", start, at) if at >= 0 else -1
    return None if colon < 0 else (colon + 1, at)


@functools.lru_cache(maxsize=65536)
def redact_url(text: str) -> str:
    """``text`` with the password of its userinfo shown as ``xxxxx``; anything else unchanged."""
    span = _password_span(text)
    if span is None:
        return text
    return text[: span[0]] + REDACTED_PASSWORD + text[span[1] :]


@dataclass(frozen=True, slots=True)
class URL:
    """An http(s) target, as blackbox reads it: a missing scheme means ``http://``."""

    scheme: str
    host: str
    port: int
    ip_version: int
    #: path and query, as sent in the request line
    path: str
    #: the full URL text, scheme (and userinfo, if any) included
    text: str
    #: the userinfo's user and password, percent-decoded; None when the URL has none
    username: str | None = None
    password: str | None = None

    @property
    def request_text(self) -> str:
        """The URL as requested: without userinfo, which goes in an Authorization header."""
        if self.username is None:
            return self.text
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def display(self) -> str:
        """The URL as shown (logs, debug output): its password as ``xxxxx``."""
        return redact_url(self.text)

    @property
    def netloc(self) -> str:
        """``host:port`` for the Host header: the port only when it is not the default."""
        host = f"[{self.host}]" if self.ip_version == 6 else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=65536)
def parse_url(target: str) -> URL:
    """Parse an http(s) target; raise ValueError naming what is wrong (never its password)."""
    try:
        return _parse_url(target)
    except ValueError as exc:
        message = str(exc)
        password = _raw_password(target)
        if password:
            message = message.replace(password, REDACTED_PASSWORD)
        raise ValueError(message) from None


def _raw_password(target: str) -> str:
    span = _password_span(target)
    return "" if span is None else target[span[0] : span[1]]


def _parse_url(target: str) -> URL:
    shown = redact_url(target)
    text = target if target.startswith(("http://", "https://")) else f"http://{target}"
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in text):
        raise ValueError(f"{shown!r}: URLs may not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown!r}: not a valid URL ({exc})") from None
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{shown!r}: URL has no host")
    if "[" in parts.netloc:
        try:
            version: int = ipaddress.ip_address(host).version
        except ValueError:
            raise ValueError(f"{shown!r}: {host!r} is not an IPv6 address") from None
    else:
        version = parse_host(host)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise ValueError(f"{shown!r}: port {port} is out of range 1-65535")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return URL(parts.scheme, host, port, version, path, text, username, password)


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
