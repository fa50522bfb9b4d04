"""``--web.config.file``: TLS, basic auth and response headers, in Prometheus exporter-toolkit's
``web-config.yml`` format.

Passwords are bcrypt hashes. Checking one costs ~60-70 ms of CPU, so it runs in a thread (not
on the reactor) and verified (user, password) pairs are remembered, as a digest; an unknown user
is checked against a dummy hash, so a wrong user costs what a wrong password costs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml
from OpenSSL import SSL
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from netprobe_exporter.config import ConfigError, compose, read_file
from netprobe_exporter.yamlcheck import Checker, key_path

CLIENT_AUTH = (
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)  # fmt: skip
_VERSIONS = {"TLS10": SSL.TLS1_VERSION, "TLS11": SSL.TLS1_1_VERSION,
             "TLS12": SSL.TLS1_2_VERSION, "TLS13": SSL.TLS1_3_VERSION}  # fmt: skip
log = Logger()
#: a bcrypt hash as bcrypt itself accepts it: $2a$, $2b$ or $2y$, a two-digit cost, 53 characters
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_DUMMY = bcrypt.hashpw(b"not a password", bcrypt.gensalt(10))


@dataclass(frozen=True)
class TLSServer:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebConfig:
    tls: TLSServer | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()


def parse_web_config(text: str | bytes, filename: str) -> WebConfig:
    # as the exporter-toolkit does, file names are relative to the web config's own directory
    c = Checker(filename, base_dir=os.path.dirname(os.path.abspath(filename)))
    root = compose(text, filename, "YAML")
    if root is None:
        return WebConfig()
    top = c.mapping(root, "", {"tls_server_config": None, "basic_auth_users": None,
                               "http_server_config": None})  # fmt: skip
    if top is None:
        raise ConfigError(c.errors)
    tls = None
    if "tls_server_config" in top:
        tls = _tls(c, top["tls_server_config"])
    users: dict[str, bytes] = {}
    if "basic_auth_users" in top:
        for name, value in (
            c.string_map(top["basic_auth_users"], "basic_auth_users") or {}
        ).items():
            if not _BCRYPT.match(value):
                c.error(top["basic_auth_users"], key_path("basic_auth_users", name),
                        "must be a bcrypt hash ($2a$/$2b$/$2y$…)")  # fmt: skip
            users[name] = value.encode()
    headers: tuple[tuple[str, str], ...] = ()
    if "http_server_config" in top:
        m = c.mapping(top["http_server_config"], "http_server_config",
                      {"headers": None, "http2": None})  # fmt: skip
        if m and "headers" in m:
            headers = tuple(
                (c.string_map(m["headers"], "http_server_config.headers") or {}).items()
            )
        if m and "http2" in m:
            c.boolean(m["http2"], "http_server_config.http2")  # HTTP/1.1 is served either way
    if c.errors:
        raise ConfigError(c.errors)
    return WebConfig(tls, users, headers)


def _tls(c: Checker, node: yaml.Node) -> TLSServer | None:
    path = "tls_server_config"
    m = c.mapping(node, path, {"cert_file": None, "key_file": None, "client_auth_type": None,
                               "client_ca_file": None, "min_version": None, "max_version": None,
                               "cipher_suites": None, "prefer_server_cipher_suites": None,
                               "curve_preferences": None})  # fmt: skip
    if m is None:
        return None
    kw: dict[str, Any] = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        if key in m:
            kw[key] = c.readable_file(m[key], f"{path}.{key}")
    for key in ("cert_file", "key_file"):
        if key not in m:
            c.error(node, f"{path}.{key}", "missing")
    if "client_auth_type" in m:
        kind = c.string(m["client_auth_type"], f"{path}.client_auth_type")
        if kind is not None and kind not in CLIENT_AUTH:
            c.error(m["client_auth_type"], f"{path}.client_auth_type",
                    f'"{kind}" is not one of {", ".join(CLIENT_AUTH)}')  # fmt: skip
        kw["client_auth_type"] = kind
        if kind and "Verify" in kind and "client_ca_file" not in m:
            c.error(m["client_auth_type"], f"{path}.client_ca_file",
                    f"is needed for client_auth_type {kind}")  # fmt: skip
    for key in ("min_version", "max_version"):
        if key in m:
            v = c.string(m[key], f"{path}.{key}")
            if v is not None and v not in _VERSIONS:
                c.error(m[key], f"{path}.{key}", f'unknown TLS version "{v}"')
            kw[key] = v
    if "cipher_suites" in m:
        kw["cipher_suites"] = c.strings(m["cipher_suites"], f"{path}.cipher_suites")
    if "prefer_server_cipher_suites" in m:
        c.boolean(m["prefer_server_cipher_suites"], f"{path}.prefer_server_cipher_suites")
    if "curve_preferences" in m:
        c.strings(m["curve_preferences"], f"{path}.curve_preferences")
    if None in (kw.get("cert_file"), kw.get("key_file")):
        return None
    return TLSServer(**{k: v for k, v in kw.items() if v is not None})


def load_web_config(path: str) -> WebConfig:
    return parse_web_config(read_file(path), path)


@implementer(IOpenSSLServerConnectionCreator)
class ServerContext:
    """Server TLS connections from a context that follows reloads (taken once per connection)."""

    def __init__(self, tls: TLSServer) -> None:
        self.context = _context(tls)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.context, None)

    def getContext(self) -> SSL.Context:
        return self.context


def _context(tls: TLSServer) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(_VERSIONS[tls.min_version])
    if tls.max_version:
        ctx.set_max_proto_version(_VERSIONS[tls.max_version])
    ctx.use_certificate_chain_file(tls.cert_file)
    ctx.use_privatekey_file(tls.key_file)
    if tls.cipher_suites:
        ctx.set_cipher_list(":".join(tls.cipher_suites).encode())
    mode = {
        "NoClientCert": SSL.VERIFY_NONE,
        "RequestClientCert": SSL.VERIFY_PEER,
        "RequireAnyClientCert": SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
        "VerifyClientCertIfGiven": SSL.VERIFY_PEER,
        "RequireAndVerifyClientCert": SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
    }[tls.client_auth_type]
    if tls.client_ca_file:
        ctx.load_verify_locations(tls.client_ca_file)
    if "Verify" in tls.client_auth_type or not tls.client_ca_file:
        ctx.set_verify(
            mode, lambda conn, cert, errno, depth, ok: bool(ok) or mode == SSL.VERIFY_NONE
        )
    else:  # request/require a certificate but do not verify it
        ctx.set_verify(mode, lambda *_: True)
    return ctx


class Guard(Resource):
    """Wraps the site's root: basic auth (when users are configured) and response headers."""

    def __init__(self, inner: Resource, reactor: Any, config: WebConfig) -> None:
        super().__init__()
        self._inner = inner
        self._reactor = reactor
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self._secret = os.urandom(16)
        self.config = config

    @property
    def config(self) -> WebConfig:
        return self._config

    @config.setter
    def config(self, config: WebConfig) -> None:
        # a reload may change or remove a password: what was verified against the old hashes
        # must be checked again
        with self._lock:
            self._config = config
            self._verified = set()

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        # the tree below is the real one; authorisation happens in render()
        return self

    def render(self, request: Request) -> Any:
        for name, value in self.config.headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if not self.config.users:
            return self._pass(request)
        user, password = _credentials(request)
        hashed = self.config.users.get(user.decode("utf-8", "replace"), _DUMMY)
        key = hmac.new(self._secret, b"\0".join((user, password, hashed)), hashlib.sha256).digest()
        with self._lock:
            known = key in self._verified
        if known:
            return self._pass(request)
        d: Deferred[bool] = threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), bcrypt.checkpw, password, hashed
        )

        def decided(ok: bool) -> None:
            if request.finished or request._disconnected:
                return
            if ok and hashed is not _DUMMY:
                with self._lock:
                    self._verified.add(key)
                result = self._pass(request)
                if result is not NOT_DONE_YET:
                    request.write(result)
                    request.finish()
                return
            request.write(_unauthorized(request))
            request.finish()

        def broken(reason: Failure) -> bool:
            # bcrypt refuses passwords over 72 bytes and some hash variants: a plain no
            log.debug("password check refused", error=reason.getErrorMessage())
            return False

        d.addErrback(broken)
        d.addCallback(decided)
        return NOT_DONE_YET

    def _pass(self, request: Request) -> Any:
        request.prepath, request.postpath = (
            [],
            [*(request.prepath or []), *(request.postpath or [])],
        )
        resource = self._inner
        while request.postpath and not resource.isLeaf:
            segment = request.postpath.pop(0)
            request.prepath.append(segment)
            resource = resource.getChildWithDefault(segment, request)
        return resource.render(request)


def _credentials(request: Request) -> tuple[bytes, bytes]:
    header = request.getHeader(b"authorization") or b""
    if isinstance(header, str):
        header = header.encode("latin-1")
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return b"", b""
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
    except ValueError:
        return b"", b""
    return user, password


def _unauthorized(request: Request) -> bytes:
    request.setResponseCode(401)
    request.setHeader(b"www-authenticate", b'Basic realm="netprobe-exporter"')
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"Unauthorized\n"
