"""Which proxy a request goes through, and the CONNECT tunnel for https targets.

The rules are prometheus/common's (so blackbox's): ``proxy_url`` alone proxies every request;
with ``no_proxy``, or with ``proxy_from_environment`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
``NO_PROXY`` and their lower-case forms, upper-case first), Go's ``httpproxy`` matching applies,
under which ``localhost`` and loopback addresses never go through a proxy. The host matched is
the one of the URL requested: the address the target resolved to, or its name with
``skip_resolve_phase_with_proxy``. Plain ``http://`` proxies are supported.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import yaml
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from netprobe_exporter.model import Secret
from netprobe_exporter.schema import BOOL, STRING, Check, Kind, Opt, Reading
from netprobe_exporter.yamlcheck import REDACTED, Checker

#: a proxy's answer to CONNECT may take this many bytes before its blank line
MAX_CONNECT_RESPONSE = 64 * 1024
PROXY_SCHEMES = ("http",)


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A proxy's address; its userinfo becomes ``Proxy-Authorization: Basic``."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: Secret | None = None

    def authorization(self) -> bytes | None:
        if self.username is None:
            return None
        secret = self.password.reveal() if self.password is not None else ""
        return b"Basic " + base64.b64encode(f"{self.username}:{secret}".encode())

    def shown(self) -> str:
        """The URL with its password replaced, for /config and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = self.username + (f":{REDACTED}" if self.password is not None else "") + "@"
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_proxy(text: str) -> ProxyURL:
    """A proxy URL (no scheme: ``http://``, as Go's environment reader); ValueError says why
    it is refused, never with its password."""
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(f'scheme "{scheme}" is not supported (http only)')
    if not parts.hostname:
        raise ValueError("has no host")
    password = None if parts.password is None else Secret(unquote(parts.password))
    username = None if parts.username is None else unquote(parts.username)
    return ProxyURL(scheme, parts.hostname, port or 80, username, password)


@dataclass(frozen=True, slots=True)
class ProxyURLKind(Kind[ProxyURL]):
    """``proxy_url``: refused when it does not parse; its password is shown as ``<secret>``."""

    def read(self, c: Checker, node: yaml.Node, path: str) -> ProxyURL | None:
        text = c.string(node, path)
        if not text:
            return None
        try:
            return parse_proxy(text)
        except ValueError as exc:
            c.error(node, path, f"proxy URL {exc}")
            return None

    def dump(self, value: ProxyURL | None) -> object:
        return None if value is None else value.shown()


# no_proxy matching (Go's golang.org/x/net/http/httpproxy)


@dataclass(frozen=True, slots=True)
class NoProxy:
    """A parsed ``no_proxy`` list: ``*``, CIDRs, IPs and domains, each optionally ``:port``."""

    everything: bool = False
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: (ip, port or "")
    ips: tuple[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str], ...] = ()
    #: (".suffix", port or "", the bare name matches too)
    domains: tuple[tuple[str, str, bool], ...] = ()

    def bypass(self, host: str, port: int) -> bool:
        """Whether a request to ``host:port`` goes direct."""
        host = host.lower().strip("[]")
        if host == "localhost":
            return True
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return True
        if self.everything:
            return True
        shown_port = str(port)
        if ip is not None:
            if any(ip in net for net in self.networks):
                return True
            if any(ip == m and p in ("", shown_port) for m, p in self.ips):
                return True
        for suffix, p, bare in self.domains:
            named = host.endswith(suffix) or (bare and host == suffix[1:])
            if named and p in ("", shown_port):
                return True
        return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_no_proxy(text: str) -> NoProxy:
    networks: list[Any] = []
    ips: list[tuple[Any, str]] = []
    domains: list[tuple[str, str, bool]] = []
    for entry in text.split(","):
        p = entry.strip().lower()
        if not p:
            continue
        if p == "*":
            return NoProxy(everything=True)
        if "/" in p:
            try:
                networks.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                pass  # Go: not a CIDR, so read as a name below
            else:
                continue
        host, port = _split_host_port(p)
        if not host:
            continue
        ip = _ip(host)
        if ip is not None:
            ips.append((ip, port))
            continue
        if host.startswith("*."):
            host = host[1:]
        bare = not host.startswith(".")
        domains.append((host if not bare else "." + host, port, bare))
    return NoProxy(False, tuple(networks), tuple(ips), tuple(domains))


def _split_host_port(p: str) -> tuple[str, str]:
    if p.startswith("["):
        end = p.find("]")
        if end > 0 and p[end + 1 : end + 2] == ":":
            return p[1:end], p[end + 2 :]
        return p.strip("[]"), ""
    if p.count(":") == 1:
        host, port = p.split(":")
        return host, port
    return p, ""


@dataclass(frozen=True, slots=True)
class ProxyChoice:
    """The module's proxy settings, as a function of the request URL."""

    url: ProxyURL | None = None
    no_proxy: str = ""
    from_environment: bool = False

    def proxy_for(
        self, scheme: str, host: str, port: int, environ: Mapping[str, str] | None = None
    ) -> ProxyURL | None:
        """The proxy a request to ``scheme://host:port`` goes through, or None (direct).

        ``ValueError``: the environment's proxy does not parse."""
        if self.from_environment:
            env = os.environ if environ is None else environ
            name = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
            given = _env(env, name)
            if not given or parse_no_proxy(_env(env, "NO_PROXY")).bypass(host, port):
                return None
            try:
                return parse_proxy(given)
            except ValueError as exc:
                raise ValueError(f"{name} from the environment: proxy URL {exc}") from None
        if self.url is None:
            return None
        if self.no_proxy and parse_no_proxy(self.no_proxy).bypass(host, port):
            return None
        return self.url


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or env.get(name.lower()) or ""


# the CONNECT tunnel


class ConnectTunnel(Protocol):
    """Asks the proxy for a tunnel (``CONNECT host:port``); on a 200 hands the connection to
    the protocol ``then`` builds (TLS), passing on any bytes that came after the answer."""

    def __init__(
        self, authority: str, headers: list[tuple[bytes, bytes]], then: IProtocolFactory
    ) -> None:
        self._authority = authority
        self._headers = headers
        self._then = then
        self._buffer = b""
        self.next: IProtocol | None = None
        #: fires with the protocol built on the tunnel; fails with ConnectionError saying why
        self.ready: Deferred[IProtocol] = Deferred()

    def connectionMade(self) -> None:
        lines = [f"CONNECT {self._authority} HTTP/1.1".encode(),
                 f"Host: {self._authority}".encode()]  # fmt: skip
        lines += [name + b": " + value for name, value in self._headers]
        cast(Any, self.transport).write(b"\r\n".join(lines) + b"\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self.next is not None:
            self.next.dataReceived(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_RESPONSE:
                self._fail(f"proxy's CONNECT response head over {MAX_CONNECT_RESPONSE} bytes")
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "200":
            text = parts[2] if len(parts) == 3 else status
            self._fail(f"proxy refused CONNECT {self._authority}: {parts[1:2] and parts[1]} "
                       f"{text}".strip())  # fmt: skip
            return
        proto = self._then.buildProtocol(cast(Any, self.transport).getPeer())
        assert proto is not None
        self.next = proto
        proto.makeConnection(cast(Any, self.transport))
        self.ready.callback(proto)
        if rest:
            proto.dataReceived(rest)

    def _fail(self, why: str) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(ConnectionError(why)))
        cast(Any, self.transport).abortConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.next is not None:
            self.next.connectionLost(reason)
        elif not self.ready.called:
            why = reason.getErrorMessage()
            self.ready.errback(Failure(ConnectionError(f"proxy closed before CONNECT: {why}")))


def free_mapping(c: Checker, node: yaml.Node, path: str) -> dict[str, yaml.Node] | None:
    """A mapping whose keys are the user's (header names): strings, each once."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        c.error(node, path, "must be a mapping")
        return None
    out: dict[str, yaml.Node] = {}
    for knode, vnode in node.value:
        key = knode.value if isinstance(knode, yaml.ScalarNode) else None
        if not isinstance(key, str) or not key:
            c.error(knode, path, "keys must be strings")
        elif key in out:
            c.error(knode, f"{path}.{key}", "duplicate key")
        else:
            out[key] = vnode
    return out


class _SecretLists(Kind[tuple[tuple[str, tuple[Secret, ...]], ...]]):
    """``proxy_connect_header``: header name to a list of secret values."""

    def read(
        self, c: Checker, node: yaml.Node, path: str
    ) -> tuple[tuple[str, tuple[Secret, ...]], ...] | None:
        found = free_mapping(c, node, path)
        if found is None:
            return None
        out: list[tuple[str, tuple[Secret, ...]]] = []
        for name, vnode in found.items():
            items = c.sequence(vnode, f"{path}.{name}")
            if items is None:
                continue
            values = [c.text(n, f"{path}.{name}[{i}]") for i, n in enumerate(items)]
            out.append((name, tuple(Secret(v) for v in values if v is not None)))
        return tuple(out)

    def dump(self, value: tuple[tuple[str, tuple[Secret, ...]], ...]) -> object:
        return {name: [REDACTED for _ in values] for name, values in value}

    def holds_secret(self) -> bool:
        return True


def _proxy_rules(r: Reading) -> None:
    """prometheus/common's combinations (its wording)."""
    given = set(r.nodes) - r.failed
    has_url = "proxy_url" in r.values
    env = bool(r.values.get("proxy_from_environment"))
    if r.values.get("proxy_connect_header") and not has_url and not env:
        r.error("proxy_connect_header", "if proxy_connect_header is configured, proxy_url or "
                "proxy_from_environment must also be configured")  # fmt: skip
    if env and has_url:
        r.error("proxy_url", "if proxy_from_environment is configured, proxy_url must not be "
                "configured")  # fmt: skip
    if env and r.values.get("no_proxy"):
        r.error("no_proxy", "if proxy_from_environment is configured, no_proxy must not be "
                "configured")  # fmt: skip
    if "no_proxy" in given and r.values.get("no_proxy") and not has_url and not env:
        r.error("no_proxy", "if no_proxy is configured, proxy_url must also be configured")


#: the proxy keys of an HTTP client (the http prober's and its oauth2 token client's)
PROXY_OPTIONS = (
    Opt("proxy_url", ProxyURLKind(), holds_secret=True),
    Opt("no_proxy", STRING),
    Opt("proxy_from_environment", BOOL),
    Opt("proxy_connect_header", _SecretLists()),
    Check(_proxy_rules),
)
