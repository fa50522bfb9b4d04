"""Probe modules in blackbox_exporter 0.23 syntax: dataclasses and their validation.

A blackbox.yml is a valid module list. Every key blackbox 0.23 knows is recognised: those we run
are validated and used; those we do not run yet are errors that say so. Modules whose prober is
not implemented yet (dns, icmp, grpc) load with a warning, so a whole blackbox.yml still loads,
and are refused where used (``/probe`` answers 400, a continuous target is a config error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from netprobe_exporter.addresses import parse_host
from netprobe_exporter.yamlcheck import Checker, is_readable_file

DEFAULT_TIMEOUT = 5.0
RUNNABLE_PROBERS = ("tcp", "http", "dns", "icmp")
LATER_PROBERS = ("grpc",)
#: DNS rcodes by name, as blackbox (miekg/dns) spells them
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}  # fmt: skip
QUERY_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
               "AAAA": 28, "SRV": 33, "NAPTR": 35, "DS": 43, "DNSKEY": 48, "CAA": 257,
               "ANY": 255}  # fmt: skip
QUERY_CLASSES = {"IN": 1, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
COMPRESSIONS = ("gzip", "deflate", "identity")
SOON = "is not supported yet"


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential: its repr and str never show the value (logs, /config, debug output)."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "<secret>"

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None


@dataclass(frozen=True, slots=True)
class QueryResponse:
    expect: re.Pattern[str] | None = None
    send: str | None = None
    starttls: bool = False


@dataclass(frozen=True, slots=True)
class TCPProbe:
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    query_response: tuple[QueryResponse, ...] = ()
    tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    header: str
    regexp: re.Pattern[str]
    allow_missing: bool = False


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPProbe:
    valid_status_codes: tuple[int, ...] = ()
    valid_http_versions: tuple[str, ...] = ()
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    fail_if_body_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_body_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    body: str = ""
    compression: str = ""
    body_size_limit: int = 0
    basic_auth: BasicAuth | None = None
    #: Authorization header scheme and credentials (bearer_token / authorization)
    auth_type: str = "Bearer"
    credentials: Secret | None = None
    credentials_file: str | None = None
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    follow_redirects: bool = True
    enable_http2: bool = True


@dataclass(frozen=True, slots=True)
class RRValidator:
    fail_if_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_all_match_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_none_matches_regexp: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class DNSProbe:
    query_name: str = ""
    query_type: str = "ANY"
    query_class: str = "IN"
    transport_protocol: str = "udp"
    recursion_desired: bool = True
    #: empty means NOERROR only
    valid_rcodes: tuple[str, ...] = ()
    validate_answer_rrs: RRValidator = field(default_factory=RRValidator)
    validate_authority_rrs: RRValidator = field(default_factory=RRValidator)
    validate_additional_rrs: RRValidator = field(default_factory=RRValidator)
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    #: DNS over TLS (RFC 7858): needs transport_protocol tcp; port 853 when the target has none
    dns_over_tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True, slots=True)
class ICMPProbe:
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    #: bytes of echo data; 0 means blackbox's default payload
    payload_size: int = 0
    dont_fragment: bool = False
    #: IPv4 TTL or IPv6 hop limit of the request
    ttl: int = 64


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    #: seconds; 0 means unset (blackbox: use the scrape timeout; continuous: DEFAULT_TIMEOUT)
    timeout: float = 0.0
    tcp: TCPProbe = field(default_factory=TCPProbe)
    http: HTTPProbe = field(default_factory=HTTPProbe)
    dns: DNSProbe = field(default_factory=DNSProbe)
    icmp: ICMPProbe = field(default_factory=ICMPProbe)

    @property
    def runnable(self) -> bool:
        return self.prober in RUNNABLE_PROBERS

    @property
    def continuous_timeout(self) -> float:
        return self.timeout or DEFAULT_TIMEOUT


def builtin_modules() -> dict[str, Module]:
    """Modules that exist even when the config has no ``modules:`` section."""
    return {
        "tcp_connect": Module(name="tcp_connect", prober="tcp"),
        "tls_connect": Module(name="tls_connect", prober="tcp", tcp=TCPProbe(tls=True)),
        "http_2xx": Module(name="http_2xx", prober="http"),
        "icmp": Module(name="icmp", prober="icmp"),
        # as in blackbox's example configuration
        "dns_udp": Module(
            name="dns_udp",
            prober="dns",
            timeout=5.0,
            dns=DNSProbe(query_name="www.prometheus.io", query_type="A", valid_rcodes=("NOERROR",)),
        ),
    }


def _ip_protocol(c: Checker, m: dict[str, yaml.Node], path: str, kw: dict[str, object]) -> None:
    if "preferred_ip_protocol" in m:
        node = m["preferred_ip_protocol"]
        value = c.string(node, f"{path}.preferred_ip_protocol")
        if value is not None:
            if value not in ("ip4", "ip6"):
                c.error(node, f"{path}.preferred_ip_protocol", f'"{value}" must be ip4 or ip6')
            else:
                kw["preferred_ip_protocol"] = value
    if "ip_protocol_fallback" in m:
        fb = c.boolean(m["ip_protocol_fallback"], f"{path}.ip_protocol_fallback")
        if fb is not None:
            kw["ip_protocol_fallback"] = fb


def _addressing(c: Checker, m: dict[str, yaml.Node], path: str) -> dict[str, object]:
    """The keys tcp, dns and icmp share: which IP protocol, and the source address."""
    kw: dict[str, object] = {}
    _ip_protocol(c, m, path, kw)
    if "source_ip_address" in m:
        kw["source_ip_address"] = _source_ip(c, m["source_ip_address"], f"{path}.source_ip_address")
    return kw


def _source_ip(c: Checker, node: yaml.Node, path: str) -> str | None:
    src = c.string(node, path)
    if src is None:
        return None
    try:
        if parse_host(src) == 0:
            raise ValueError
    except ValueError:
        c.error(node, path, f'"{src}" is not an IP address')
        return None
    return src


def _pem_problem(path: str, key: str) -> str | None:
    """Why a certificate or key file cannot be used, checked once at load, not per probe."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if key == "key_file":
            serialization.load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except (OSError, ValueError, TypeError) as exc:
        kind = "private key" if key == "key_file" else "certificate"
        return f"not a usable PEM {kind} ({exc})"
    return None


def parse_tls_config(c: Checker, node: yaml.Node, path: str) -> TLSConfig:
    m = c.mapping(
        node,
        path,
        {"ca_file": None, "cert_file": None, "key_file": None, "server_name": None,
         "insecure_skip_verify": None, "min_version": None, "max_version": None},
    )  # fmt: skip
    if m is None:
        return TLSConfig()
    kw: dict[str, object] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        if key in m:
            kw[key] = c.probe_time_file(m[key], f"{path}.{key}")
    if "server_name" in m:
        kw["server_name"] = c.string(m["server_name"], f"{path}.server_name")
    if "insecure_skip_verify" in m:
        kw["insecure_skip_verify"] = c.boolean(
            m["insecure_skip_verify"], f"{path}.insecure_skip_verify"
        )
    for key in ("min_version", "max_version"):
        if key in m:
            value = c.string(m[key], f"{path}.{key}")
            if value is not None and value not in TLS_VERSIONS:
                c.error(m[key], f"{path}.{key}", f'unknown TLS version "{value}"')
            else:
                kw[key] = value
    if ("cert_file" in m) != ("key_file" in m):
        c.error(node, path, "cert_file and key_file must be set together")
    for key in ("ca_file", "cert_file", "key_file"):
        name = kw.get(key)
        readable = isinstance(name, str) and is_readable_file(name)
        problem = _pem_problem(str(name), key) if readable else None  # else: warned above
        if problem:
            c.error(m[key], f"{path}.{key}", f'"{name}": {problem}')
            kw[key] = None
    low, high = kw.get("min_version"), kw.get("max_version")
    if isinstance(low, str) and isinstance(high, str) and low > high:
        c.error(m["max_version"], f"{path}.max_version", f"{high} is below min_version {low}")
    return TLSConfig(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


def _query_response(c: Checker, node: yaml.Node, path: str) -> tuple[QueryResponse, ...]:
    items = c.sequence(node, path)
    out: list[QueryResponse] = []
    for i, item in enumerate(items or []):
        sub = f"{path}[{i}]"
        m = c.mapping(item, sub, {"expect": None, "send": None, "starttls": None})
        if m is None:
            continue
        expect = c.regex(m["expect"], f"{sub}.expect") if "expect" in m else None
        send = c.text(m["send"], f"{sub}.send") if "send" in m else None
        starttls = bool(c.boolean(m["starttls"], f"{sub}.starttls")) if "starttls" in m else False
        out.append(QueryResponse(expect, send, starttls))
    return tuple(out)


def parse_tcp(c: Checker, node: yaml.Node, path: str) -> TCPProbe:
    m = c.mapping(
        node,
        path,
        {"preferred_ip_protocol": None, "ip_protocol_fallback": None, "source_ip_address": None,
         "query_response": None, "tls": None, "tls_config": None},
    )  # fmt: skip
    if m is None:
        return TCPProbe()
    kw = _addressing(c, m, path)
    if "query_response" in m:
        kw["query_response"] = _query_response(c, m["query_response"], f"{path}.query_response")
    if "tls" in m:
        kw["tls"] = c.boolean(m["tls"], f"{path}.tls")
    if "tls_config" in m:
        kw["tls_config"] = parse_tls_config(c, m["tls_config"], f"{path}.tls_config")
    return TCPProbe(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


def _header_matches(c: Checker, node: yaml.Node, path: str) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    for i, item in enumerate(c.sequence(node, path) or []):
        sub = f"{path}[{i}]"
        m = c.mapping(item, sub, {"header": None, "regexp": None, "allow_missing": None})
        if m is None:
            continue
        if "header" not in m or "regexp" not in m:
            what = "header" if "header" not in m else "regexp"
            c.error(item, f"{sub}.{what}", f"{what} must be set for HTTP header matchers")
            continue
        header = c.string(m["header"], f"{sub}.header")
        regexp = c.regex(m["regexp"], f"{sub}.regexp")
        allow = (
            bool(c.boolean(m["allow_missing"], f"{sub}.allow_missing"))
            if ("allow_missing" in m)
            else False
        )
        if header and regexp is not None:
            out.append(HeaderMatch(header, regexp, allow))
    return tuple(out)


def _http_auth(c: Checker, m: dict[str, yaml.Node], path: str, kw: dict[str, object]) -> None:
    given = [k for k in ("basic_auth", "authorization", "bearer_token", "bearer_token_file")
             if k in m]  # fmt: skip
    if len(given) > 1:
        c.error(m[given[1]], f"{path}.{given[1]}", f"at most one of {', '.join(given)} may be set")
        return
    if "basic_auth" in m:
        sub = f"{path}.basic_auth"
        b = c.mapping(m["basic_auth"], sub, {"username": None, "password": None,
                                             "password_file": None})  # fmt: skip
        if b is None:
            return
        user = c.text(b["username"], f"{sub}.username") if "username" in b else ""
        if "password" in b and "password_file" in b:
            c.error(b["password_file"], sub, "only one of password and password_file may be set")
        password = c.text(b["password"], f"{sub}.password") if "password" in b else None
        pfile = (
            c.probe_time_file(b["password_file"], f"{sub}.password_file")
            if ("password_file" in b)
            else None
        )
        kw["basic_auth"] = BasicAuth(
            user or "", Secret(password) if password is not None else None, pfile
        )
    elif "authorization" in m:
        sub = f"{path}.authorization"
        a = c.mapping(m["authorization"], sub, {"type": None, "credentials": None,
                                                "credentials_file": None})  # fmt: skip
        if a is None:
            return
        if "type" in a:
            kind = c.string(a["type"], f"{sub}.type")
            if kind is not None and kind.lower() == "basic":
                c.error(a["type"], f"{sub}.type", "use basic_auth for Basic authorization")
            elif kind:
                kw["auth_type"] = kind
        if "credentials" in a:
            cred = c.text(a["credentials"], f"{sub}.credentials")
            kw["credentials"] = Secret(cred) if cred is not None else None
        if "credentials_file" in a:
            kw["credentials_file"] = c.probe_time_file(
                a["credentials_file"], f"{sub}.credentials_file"
            )
    elif "bearer_token" in m:
        tok = c.text(m["bearer_token"], f"{path}.bearer_token")
        kw["credentials"] = Secret(tok) if tok is not None else None
    elif "bearer_token_file" in m:
        kw["credentials_file"] = c.probe_time_file(
            m["bearer_token_file"], f"{path}.bearer_token_file"
        )


def parse_http(c: Checker, node: yaml.Node, path: str) -> HTTPProbe:
    m = c.mapping(
        node,
        path,
        {"valid_status_codes": None, "valid_http_versions": None, "preferred_ip_protocol": None,
         "ip_protocol_fallback": None, "skip_resolve_phase_with_proxy": None,
         "no_follow_redirects": None, "fail_if_ssl": None, "fail_if_not_ssl": None,
         "method": None, "headers": None, "fail_if_body_matches_regexp": None,
         "fail_if_body_not_matches_regexp": None, "fail_if_header_matches": None,
         "fail_if_header_not_matches": None, "body": None, "compression": None,
         "body_size_limit": None, "basic_auth": None, "authorization": None,
         "bearer_token": None, "bearer_token_file": None, "tls_config": None,
         "follow_redirects": None, "enable_http2": None,
         "oauth2": SOON, "proxy_url": SOON, "proxy_connect_header": SOON},
    )  # fmt: skip
    if m is None:
        return HTTPProbe()
    kw: dict[str, object] = {}
    _ip_protocol(c, m, path, kw)
    if "valid_status_codes" in m:
        items = c.sequence(m["valid_status_codes"], f"{path}.valid_status_codes") or []
        codes = [c.integer(n, f"{path}.valid_status_codes[{i}]", 100, 999)
                 for i, n in enumerate(items)]  # fmt: skip
        kw["valid_status_codes"] = tuple(x for x in codes if x is not None)
    if "valid_http_versions" in m:
        kw["valid_http_versions"] = c.strings(
            m["valid_http_versions"], f"{path}.valid_http_versions"
        )
    if "skip_resolve_phase_with_proxy" in m:  # meaningless without proxy_url: checked, ignored
        c.boolean(m["skip_resolve_phase_with_proxy"], f"{path}.skip_resolve_phase_with_proxy")
    for key in ("fail_if_ssl", "fail_if_not_ssl", "follow_redirects", "enable_http2"):
        if key in m:
            kw[key] = c.boolean(m[key], f"{path}.{key}")
    if "no_follow_redirects" in m:
        nf = c.boolean(m["no_follow_redirects"], f"{path}.no_follow_redirects")
        if nf is not None:
            kw["follow_redirects"] = not nf
            c.warn(m["no_follow_redirects"], f"{path}.no_follow_redirects",
                   "is deprecated: use follow_redirects")  # fmt: skip
    if "method" in m:
        method = c.string(m["method"], f"{path}.method")
        if method is not None and not re.fullmatch(r"[A-Za-z]+", method):
            c.error(m["method"], f"{path}.method", f'"{method}" is not an HTTP method')
        elif method:
            kw["method"] = method.upper()
    if "headers" in m:
        headers = c.string_map(m["headers"], f"{path}.headers")
        if headers is not None:
            kw["headers"] = tuple(headers.items())
    for key in ("fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp"):
        if key in m:
            kw[key] = c.regexes(m[key], f"{path}.{key}")
    for key in ("fail_if_header_matches", "fail_if_header_not_matches"):
        if key in m:
            kw[key] = _header_matches(c, m[key], f"{path}.{key}")
    if "body" in m:
        kw["body"] = c.text(m["body"], f"{path}.body")
    if "compression" in m:
        comp = c.string(m["compression"], f"{path}.compression")
        if comp is not None and comp.lower() == "br":
            c.error(m["compression"], f"{path}.compression", f'"br" {SOON} (gzip, deflate)')
        elif comp is not None and comp.lower() not in COMPRESSIONS:
            c.error(m["compression"], f"{path}.compression", f'unknown compression "{comp}"')
        elif comp is not None:
            kw["compression"] = comp.lower()
            for name, value in kw.get("headers", ()):  # type: ignore[attr-defined]
                if name.lower() == "accept-encoding" and comp.lower() not in value.lower():
                    c.error(m["compression"], f"{path}.compression",
                            f'invalid configuration "Accept-Encoding: {value}", '
                            f'"compression: {comp}"')  # fmt: skip
    if "body_size_limit" in m:
        kw["body_size_limit"] = c.byte_size(m["body_size_limit"], f"{path}.body_size_limit")
    _http_auth(c, m, path, kw)
    if "tls_config" in m:
        kw["tls_config"] = parse_tls_config(c, m["tls_config"], f"{path}.tls_config")
    return HTTPProbe(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


def _rr_validator(c: Checker, node: yaml.Node, path: str) -> RRValidator:
    keys = ("fail_if_matches_regexp", "fail_if_all_match_regexp", "fail_if_not_matches_regexp",
            "fail_if_none_matches_regexp")  # fmt: skip
    m = c.mapping(node, path, dict.fromkeys(keys))
    if m is None:
        return RRValidator()
    kw = {k: c.regexes(m[k], f"{path}.{k}") for k in keys if k in m}
    return RRValidator(**{k: v for k, v in kw.items() if v is not None})


def parse_dns(c: Checker, node: yaml.Node, path: str) -> DNSProbe:
    m = c.mapping(
        node,
        path,
        {"query_name": None, "query_type": None, "query_class": None,
         "transport_protocol": None, "recursion_desired": None, "valid_rcodes": None,
         "validate_answer_rrs": None, "validate_authority_rrs": None,
         "validate_additional_rrs": None, "preferred_ip_protocol": None,
         "ip_protocol_fallback": None, "source_ip_address": None,
         "dns_over_tls": None, "tls_config": None},
    )  # fmt: skip
    if m is None:
        return DNSProbe()
    kw = _addressing(c, m, path)
    if "query_name" in m:
        kw["query_name"] = c.text(m["query_name"], f"{path}.query_name")
    else:
        c.error(node, f"{path}.query_name", "query name must be set for DNS module")
    for key, known in (("query_type", QUERY_TYPES), ("query_class", QUERY_CLASSES)):
        if key in m:
            value = c.string(m[key], f"{path}.{key}")
            if value is not None and value.upper() not in known:
                c.error(m[key], f"{path}.{key}", f'unknown {key.split("_")[1]} "{value}"')
            elif value is not None:
                kw[key] = value.upper()
    if "transport_protocol" in m:
        proto = c.string(m["transport_protocol"], f"{path}.transport_protocol")
        if proto is not None and proto not in ("udp", "tcp"):
            c.error(m["transport_protocol"], f"{path}.transport_protocol",
                    f'"{proto}" must be udp or tcp')  # fmt: skip
        elif proto is not None:
            kw["transport_protocol"] = proto
    if "recursion_desired" in m:
        kw["recursion_desired"] = c.boolean(m["recursion_desired"], f"{path}.recursion_desired")
    if "valid_rcodes" in m:
        rcodes = c.strings(m["valid_rcodes"], f"{path}.valid_rcodes")
        for rc in rcodes or ():
            if rc not in RCODES:
                c.error(m["valid_rcodes"], f"{path}.valid_rcodes", f'unknown rcode "{rc}"')
        kw["valid_rcodes"] = rcodes
    for key in ("validate_answer_rrs", "validate_authority_rrs", "validate_additional_rrs"):
        if key in m:
            kw[key] = _rr_validator(c, m[key], f"{path}.{key}")
    if "dns_over_tls" in m:
        kw["dns_over_tls"] = c.boolean(m["dns_over_tls"], f"{path}.dns_over_tls")
        if kw["dns_over_tls"] and kw.get("transport_protocol", "udp") != "tcp":
            # blackbox loads this and fails every probe; so do we, and say so at load
            c.warn(m["dns_over_tls"], f"{path}.dns_over_tls",
                   "needs transport_protocol: tcp; every probe will fail")  # fmt: skip
    if "tls_config" in m:
        kw["tls_config"] = parse_tls_config(c, m["tls_config"], f"{path}.tls_config")
    return DNSProbe(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


def parse_icmp(c: Checker, node: yaml.Node, path: str) -> ICMPProbe:
    m = c.mapping(
        node,
        path,
        {"preferred_ip_protocol": None, "ip_protocol_fallback": None, "source_ip_address": None,
         "payload_size": None, "dont_fragment": None, "ttl": None},
    )  # fmt: skip
    if m is None:
        return ICMPProbe()
    kw = _addressing(c, m, path)
    if "payload_size" in m:
        kw["payload_size"] = c.integer(m["payload_size"], f"{path}.payload_size", 0, 65000)
    if "dont_fragment" in m:
        kw["dont_fragment"] = c.boolean(m["dont_fragment"], f"{path}.dont_fragment")
    if "ttl" in m:
        kw["ttl"] = c.integer(m["ttl"], f"{path}.ttl", 0, 255) or None
    return ICMPProbe(**{k: v for k, v in kw.items() if v is not None})  # type: ignore[arg-type]


_LATER_KEYS = {
    "grpc": ("service", "tls", "tls_config", "ip_protocol_fallback", "preferred_ip_protocol"),
}  # fmt: skip


def parse_module(c: Checker, name: str, node: yaml.Node, path: str) -> Module | None:
    m = c.mapping(
        node,
        path,
        {"prober": None, "timeout": None, "tcp": None, "http": None, "dns": None, "icmp": None,
         "grpc": None},
    )  # fmt: skip
    if m is None:
        return None
    if "prober" not in m:
        c.error(node, f"{path}.prober", "missing")
        return None
    pnode = m["prober"]
    prober = c.string(pnode, f"{path}.prober")
    if prober is None:
        return None
    if prober not in RUNNABLE_PROBERS + LATER_PROBERS:
        c.error(pnode, f"{path}.prober", f'unknown prober "{prober}"')
        return None
    timeout = 0.0
    if "timeout" in m:
        t = c.duration(m["timeout"], f"{path}.timeout")
        timeout = t if t is not None else timeout
    tcp = parse_tcp(c, m["tcp"], f"{path}.tcp") if "tcp" in m else TCPProbe()
    http = parse_http(c, m["http"], f"{path}.http") if "http" in m else HTTPProbe()
    dns = parse_dns(c, m["dns"], f"{path}.dns") if "dns" in m else DNSProbe()
    icmp = parse_icmp(c, m["icmp"], f"{path}.icmp") if "icmp" in m else ICMPProbe()
    if prober == "dns" and "dns" not in m:
        c.error(node, f"{path}.dns.query_name", "query name must be set for DNS module")
    for section, keys in _LATER_KEYS.items():
        if section in m:  # recognised, not run yet: check key names so typos still show
            c.mapping(m[section], f"{path}.{section}", dict.fromkeys(keys))
    if prober in LATER_PROBERS:
        c.warn(pnode, f"{path}.prober",
               f'prober "{prober}" {SOON}: module "{name}" cannot be probed')  # fmt: skip
    return Module(name=name, prober=prober, timeout=timeout, tcp=tcp, http=http, dns=dns, icmp=icmp)
