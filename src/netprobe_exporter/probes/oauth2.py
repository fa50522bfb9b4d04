"""OAuth 2.0 client credentials for the http prober: the token, fetched through the reactor.

The token request is an HTTP POST made by the http prober's own machinery (non-blocking
connect, TLS with ``oauth2.tls_config``, the oauth2 proxy keys), so nothing here blocks. A token
is kept per oauth2 configuration until ``expires_in`` minus ``EXPIRY_MARGIN`` (a token without
``expires_in`` does not expire, as in Go's oauth2 package); while one is being fetched, other
probes of the same configuration wait for it instead of fetching their own. A failed fetch is
not kept: the next probe tries again. ``client_secret_file`` is read by each probe (a small
file, as the other ``*_file`` keys are), and a token got with another secret is not used.
The client authenticates with HTTP Basic first and, when the server refuses that (4xx), once
more with the credentials in the form, which it then keeps using (Go's auto-detection).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote_plus, urlencode

from twisted.internet.defer import Deferred

from netprobe_exporter.model import Secret
from netprobe_exporter.probes import ProbeContext, engine
from netprobe_exporter.probes.httpproxy import PROXY_OPTIONS, ProxyURL
from netprobe_exporter.probes.tls import TLS_OPTION, TLSConfig, read_config_file
from netprobe_exporter.schema import (
    PROBE_FILE,
    SECRET_TEXT,
    STRING,
    STRINGS,
    Check,
    Opt,
    Reading,
    Section,
    StringMap,
    require,
)

#: a token is used until this many seconds before it expires (Go's oauth2 expiryDelta)
EXPIRY_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class OAuth2:
    client_id: str = ""
    client_secret: Secret | None = None
    client_secret_file: str | None = None
    scopes: tuple[str, ...] = ()
    token_url: str = ""
    endpoint_params: tuple[tuple[str, str], ...] = ()
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    proxy_url: ProxyURL | None = None
    no_proxy: str = ""
    proxy_from_environment: bool = False
    proxy_connect_header: tuple[tuple[str, tuple[Secret, ...]], ...] = ()


def _one_secret(r: Reading) -> None:
    if "client_secret" in r.nodes and "client_secret_file" in r.nodes:
        r.error(
            "client_secret_file",
            "at most one of oauth2 client_secret, client_secret_file & client_secret_ref must "
            "be configured using grant-type=client_credentials",
        )


def _grant_type(r: Reading) -> None:
    node = r.nodes.get("grant_type")
    if node is not None and str(node.value) not in ("", "client_credentials"):
        r.error("grant_type", f'grant type "{node.value}" is not supported (client_credentials)')


OAUTH2_SECTION = Section(
    OAuth2(),
    (
        require("client_id", "oauth2 client_id must be configured"),
        require("token_url", "oauth2 token_url must be configured"),
        Opt("client_id", STRING),
        Check(_one_secret),
        Opt("client_secret", SECRET_TEXT, secret=True),
        Opt("client_secret_file", PROBE_FILE, secret=True),
        Check(_grant_type),
        Opt("grant_type", STRING, field=None),
        Opt("scopes", STRINGS),
        Opt("token_url", STRING),
        Opt("endpoint_params", StringMap()),
        TLS_OPTION,
        *PROXY_OPTIONS,
    ),
)


@dataclass(frozen=True, slots=True)
class Token:
    access_token: Secret
    token_type: str
    #: monotonic time after which it is fetched again; None: never
    renew_at: float | None

    def header(self) -> bytes:
        kind = self.token_type
        if kind.lower() == "bearer" or not kind:
            kind = "Bearer"
        elif kind.lower() == "mac":
            kind = "MAC"
        elif kind.lower() == "basic":
            kind = "Basic"
        return f"{kind} {self.access_token.reveal()}".encode()


class TokenError(Exception):
    """The token could not be had; the message names why, never a credential."""


@dataclass(frozen=True, slots=True)
class TokenReply:
    """What the token endpoint answered (status 0: no answer, ``error`` says why)."""

    status: int
    body: bytes = b""
    content_type: str = ""
    error: str = ""


#: posts ``form`` (with ``basic``: the Authorization value, or None) to the token URL within
#: ``timeout`` seconds: the http prober's request machinery
Fetch = Callable[[OAuth2, bytes, bytes | None, float], Awaitable[TokenReply]]


@dataclass
class _Slot:
    token: Token | None = None
    inflight: list[Deferred[Token]] | None = None
    #: the token endpoint wants the credentials in the form, not in a Basic header
    in_params: bool = False
    #: the client secret ``token`` was got with
    secret: str = ""


def _client_secret(cfg: OAuth2) -> str:
    if not cfg.client_secret_file:
        return cfg.client_secret.reveal() if cfg.client_secret is not None else ""
    try:
        raw = read_config_file(cfg.client_secret_file, "client_secret_file")
    except ValueError as exc:
        raise TokenError(f"oauth2: {exc}") from None
    return raw.decode("utf-8", "replace").strip()


def token_form(cfg: OAuth2) -> list[tuple[str, str]]:
    """The client credentials request's parameters, as Go's clientcredentials builds them:
    ``endpoint_params`` may replace ``grant_type`` but not a ``scope`` made of ``scopes``."""
    form: dict[str, str] = {"grant_type": "client_credentials"}
    if cfg.scopes:
        form["scope"] = " ".join(cfg.scopes)
    for key, value in cfg.endpoint_params:
        if key in form and key != "grant_type":
            raise TokenError(f'oauth2: cannot overwrite parameter "{key}"')
        form[key] = value
    return list(form.items())


class TokenCache:
    """Tokens per oauth2 configuration, one fetch in flight for each."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._slots: dict[OAuth2, _Slot] = {}

    def token(self, cfg: OAuth2, fetch: Fetch, timeout: float) -> Deferred[Token]:
        """The cached token, or one fetched (by this call or one already in flight).

        ``client_secret_file`` is read each time, as Go's oauth2 client reads it: a token got
        with another secret than the file's now is fetched again."""
        now = self._clock()
        d: Deferred[Token] = Deferred()
        try:
            secret = _client_secret(cfg)
        except TokenError as exc:
            d.errback(exc)
            return d
        slot = self._slots.get(cfg)
        if slot is None:
            self._prune(now)
            slot = self._slots[cfg] = _Slot()
        token = slot.token
        if (
            token is not None
            and slot.secret == secret
            and (token.renew_at is None or now < token.renew_at)
        ):
            d.callback(token)
            return d
        if slot.inflight is not None:
            slot.inflight.append(d)
            return d
        slot.inflight = [d]
        Deferred.fromCoroutine(self._fetch(cfg, slot, secret, fetch, timeout))
        return d

    def _prune(self, now: float) -> None:
        """Forget configurations whose token has expired and that nothing waits for (a
        reload's old modules), so the cache does not grow with every config change."""
        for key, slot in list(self._slots.items()):
            token = slot.token
            stale = token is None or (token.renew_at is not None and now >= token.renew_at)
            if stale and slot.inflight is None:
                del self._slots[key]

    async def _fetch(
        self, cfg: OAuth2, slot: _Slot, secret: str, fetch: Fetch, timeout: float
    ) -> None:
        outcome: Token | TokenError
        try:
            outcome = await self._request(cfg, slot, secret, fetch, timeout)
        except TokenError as exc:
            outcome = exc
        except Exception as exc:
            outcome = TokenError(f"oauth2: cannot fetch token: {type(exc).__name__}")
        waiters, slot.inflight = slot.inflight or [], None
        if isinstance(outcome, Token):
            slot.token, slot.secret = outcome, secret
        for w in waiters:
            if w.called:  # that probe timed out meanwhile
                continue
            if isinstance(outcome, Token):
                w.callback(outcome)
            else:
                w.errback(outcome)

    async def _request(
        self, cfg: OAuth2, slot: _Slot, secret: str, fetch: Fetch, timeout: float
    ) -> Token:
        started = self._clock()
        form = token_form(cfg)
        styles = [True] if slot.in_params else [False, True]
        reply, used_params = TokenReply(0), False
        for in_params in styles:
            used_params = in_params
            body, basic = form, None
            if in_params:
                body = [*form, ("client_id", cfg.client_id), ("client_secret", secret)]
            else:
                pair = f"{quote_plus(cfg.client_id)}:{quote_plus(secret)}".encode()
                basic = b"Basic " + base64.b64encode(pair)
            remaining = timeout - (self._clock() - started)
            reply = await fetch(cfg, urlencode(body).encode(), basic, remaining)
            if reply.status == 0 or not 400 <= reply.status < 500:
                break
        if reply.status and 200 <= reply.status < 300:
            slot.in_params = used_params
            return parse_token(reply, self._clock())
        if reply.status == 0:
            raise TokenError(f"oauth2: cannot fetch token: {reply.error}")
        code = _error_code(reply)
        raise TokenError(f"oauth2: cannot fetch token: HTTP {reply.status}{code}")


def _error_code(reply: TokenReply) -> str:
    """The RFC 6749 ``error`` code of a refusal (a fixed vocabulary; the description is not
    shown: servers may echo what was sent)."""
    try:
        doc = json.loads(reply.body)
    except ValueError:
        return ""
    code = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return f' "{code}"'
    return ""


def parse_token(reply: TokenReply, now: float) -> Token:
    """The token of a 2xx answer: JSON, or a form (``application/x-www-form-urlencoded`` or
    ``text/plain``, as Go's oauth2 reads them)."""
    doc: dict[str, object]
    kind = reply.content_type.split(";", 1)[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", "text/plain"):
        doc = dict(parse_qsl(reply.body.decode("utf-8", "replace")))
    else:
        try:
            loaded = json.loads(reply.body)
        except ValueError:
            raise TokenError("oauth2: cannot parse token response: not JSON") from None
        if not isinstance(loaded, dict):
            raise TokenError("oauth2: cannot parse token response: not a JSON object")
        doc = loaded
    access = doc.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenError("oauth2: server response missing access_token")
    token_type = doc.get("token_type")
    expires = doc.get("expires_in")
    renew_at: float | None = None
    try:
        seconds = float(expires) if isinstance(expires, int | float | str) and expires else 0.0
    except ValueError:
        seconds = 0.0
    if seconds > 0:
        renew_at = now + seconds - EXPIRY_MARGIN
    return Token(Secret(access), token_type if isinstance(token_type, str) else "", renew_at)


def cache_of(ctx: ProbeContext) -> TokenCache:
    """The context's token cache (one per reactor, shared by every module)."""
    found = engine(ctx, "oauth2", lambda _: TokenCache(ctx.clock.monotonic))
    assert isinstance(found, TokenCache)
    return found
