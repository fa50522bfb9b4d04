"""``--web.config.file``: TLS, basic auth and response headers, in Prometheus exporter-toolkit's
``web-config.yml`` format.

Passwords are bcrypt hashes. Checking one costs ~60-70 ms of CPU at cost 10 (four times that
at cost 12), so it runs in a thread pool of its own (not on the reactor, and not in the
reactor's pool, where reloads and target-file reads must never queue behind a flood of wrong
passwords), and verified (user, password) pairs are remembered, as a digest, so a known client
never waits for that pool. Checks waiting or running are bounded: past the bound a request is
refused at once with 429. An unknown user is checked against a dummy hash of the configured
hashes' highest cost, so a wrong user costs what a wrong password costs.
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
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IReactorCore,
    IReactorFromThreads,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
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
#: threads checking passwords. bcrypt releases the GIL, so one thread takes one core: on a
#: small (2-core) host the other stays for the reactor and config work, whatever the flood
BCRYPT_THREADS = 1
#: password checks waiting or running at once; more are refused at once (429). With one thread
#: that is a worst wait of 8 checks: ~0.5 s at cost 10, ~2 s at cost 12
MAX_PENDING_CHECKS = 8
#: of those, at most this many for one client address, so that one flooding address leaves
#: room for the others' first logins
MAX_PENDING_PER_CLIENT = 2
_dummies: dict[int, bytes] = {}
_dummies_lock = threading.Lock()


def hash_cost(hashed: bytes) -> int:
    """The cost of a hash that matched ``_BCRYPT``: ``$2b$12$…`` is 12."""
    return int(hashed[4:6])


def dummy_hash(cost: int) -> bytes:
    """A hash of ``cost`` that no password matches in practice, made once per cost (a cost-12
    one takes ~0.25 s: call this off the reactor)."""
    with _dummies_lock:
        if cost not in _dummies:
            _dummies[cost] = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
        return _dummies[cost]


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

    def __init__(self, inner: Resource, reactor: IReactorCore, config: WebConfig) -> None:
        super().__init__()
        self._inner = inner
        self._reactor = reactor
        #: digest of a verified (user, password, hash) -> that hash
        self._verified: dict[bytes, bytes] = {}
        self._secret = os.urandom(16)
        self._pool = ThreadPool(minthreads=1, maxthreads=BCRYPT_THREADS, name="bcrypt")
        reactor.callWhenRunning(self._pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        #: checks waiting or running, in all and per client address (touched on the reactor)
        self._pending = 0
        self._pending_by_client: dict[str, int] = {}
        self.refused_checks = 0
        self._dummy_cost = 0
        self.config = config

    @property
    def config(self) -> WebConfig:
        return self._config

    @config.setter
    def config(self, config: WebConfig) -> None:
        self._config = config
        # a pair verified against a hash that is gone (a password changed, a user removed) must
        # be checked again; those whose hash is still configured stay verified
        hashes = set(config.users.values())
        self._verified = {k: h for k, h in self._verified.items() if h in hashes}
        self._dummy_cost = max((hash_cost(h) for h in hashes), default=0)
        if self._dummy_cost:  # made now, in the pool, not by the first unknown user's check
            self._pool.callInThread(dummy_hash, self._dummy_cost)

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        # the tree below is the real one; authorisation happens in render()
        return self

    def render(self, request: Request) -> Any:
        for name, value in self.config.headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if not self.config.users:
            return self._pass(request)
        if not request.getHeader(b"authorization"):
            return _unauthorized(request)  # no password to check: no need for bcrypt
        user, password = _credentials(request)
        hashed = self.config.users.get(user.decode("utf-8", "replace"))
        key = b""
        if hashed is not None:
            key = hmac.new(self._secret, b"\0".join((user, password, hashed)),
                           hashlib.sha256).digest()  # fmt: skip
            if key in self._verified:  # checked on the reactor: never queued behind a flood
                return self._pass(request)
        client = request.getClientAddress()
        host = str(getattr(client, "host", client))
        if not self._admit(host):
            return self._refuse(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d: Deferred[bool] = threads.deferToThreadPool(
            IReactorFromThreads(self._reactor),
            self._pool,
            _check,
            password,
            hashed,
            self._dummy_cost,
            gone,
        )

        def decided(ok: bool) -> None:
            if gone or request.finished:
                return
            if ok and hashed is not None:
                self._verified[key] = hashed
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
        d.addBoth(self._done, host)
        d.addCallback(decided)
        return NOT_DONE_YET

    def _admit(self, host: str) -> bool:
        """Take a place in the bcrypt queue for ``host``, if there is one."""
        mine = self._pending_by_client.get(host, 0)
        if self._pending >= MAX_PENDING_CHECKS or mine >= MAX_PENDING_PER_CLIENT:
            return False
        self._pending += 1
        self._pending_by_client[host] = mine + 1
        return True

    def _done(self, result: bool, host: str) -> bool:
        self._pending -= 1
        left = self._pending_by_client.pop(host) - 1
        if left:
            self._pending_by_client[host] = left
        return result

    def _refuse(self, request: Request) -> bytes:
        self.refused_checks += 1
        if self.refused_checks == 1 or self.refused_checks % 1000 == 0:
            log.warn("password check refused: too many at once", limit=MAX_PENDING_CHECKS,
                     per_client=MAX_PENDING_PER_CLIENT, refused=self.refused_checks)  # fmt: skip
        request.setResponseCode(429)
        request.setHeader(b"retry-after", b"1")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Too many password checks at once; retry\n"

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


def _check(password: bytes, hashed: bytes | None, dummy_cost: int, gone: list[bool]) -> bool:
    """In the bcrypt pool: does ``password`` match? An unknown user (``hashed`` None) costs the
    same, against the dummy hash; a client that went away while queued costs nothing."""
    if gone:
        return False
    if hashed is None:
        bcrypt.checkpw(password, dummy_hash(dummy_cost))
        return False
    return bool(bcrypt.checkpw(password, hashed))


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
