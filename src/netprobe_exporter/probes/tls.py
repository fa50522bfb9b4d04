"""TLS client settings from a module's ``tls_config``, and what a handshake reveals.

Verification follows Go's crypto/tls as blackbox uses it: the name checked (and sent as SNI) is
``server_name`` or else the target host, IP addresses included; ``insecure_skip_verify`` skips
both chain and name checks.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from netprobe_exporter.probes import (
    GO_ZERO_TIME,
    BlackboxFamily,
    Family,
    ProbeResult,
    Sample,
    SeriesSink,
)
from netprobe_exporter.schema import (
    BOOL,
    PROBE_FILE,
    STRING,
    Check,
    Choice,
    Nested,
    Opt,
    Reading,
    Section,
)
from netprobe_exporter.yamlcheck import REDACTED, is_readable_file, is_secret_path

TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None


@dataclass(slots=True)
class TLSInfo:
    """What the TLS handshake showed."""

    version: str = "unknown"  # "TLS 1.2", "TLS 1.3"
    #: earliest NotAfter of the certificates the peer presented
    earliest_expiry: float = 0.0
    #: earliest NotAfter of the verified chain; GO_ZERO_TIME when nothing was verified
    last_chain_expiry: float = GO_ZERO_TIME
    fingerprint_sha256: str = ""
    subject: str = ""
    issuer: str = ""
    #: DNS subject alternative names, comma-separated
    subject_alternative: str = ""
    #: the leaf's serial number as Go's ``%x`` of its bytes writes it (lowercase hex)
    serial_number: str = ""
    #: the negotiated cipher suite by its IANA name, as Go's ``tls.CipherSuiteName``
    cipher: str = ""


#: the continuous TLS families, part of every prober that may speak TLS (tcp, http, dns)
FAMILIES = (
    Family("netprobe_tls_cert_expiry_timestamp_seconds", "gauge",
           "Earliest NotAfter (Unix time) of the certificates the peer presented last.",
           order=140),
    Family("netprobe_tls_version_info", "info", "TLS version of the last handshake.",
           order=150, label="version"),
    Family("netprobe_tls_cipher_info", "info", "TLS cipher suite of the last handshake.",
           order=155, label="cipher"),
)  # fmt: skip
_EXPIRY, _VERSION, _CIPHER = (f.name for f in FAMILIES)

BLACKBOX_FAMILIES = (
    BlackboxFamily("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime"),
    BlackboxFamily("probe_ssl_last_chain_expiry_timestamp_seconds",
                   "Returns last SSL chain expiry in timestamp"),
    BlackboxFamily("probe_ssl_last_chain_info", "Contains SSL leaf certificate information"),
    BlackboxFamily("probe_tls_version_info", "Returns the TLS version used or NaN when unknown"),
    BlackboxFamily("probe_tls_cipher_info", "Returns the TLS cipher negotiated during handshake"),
)  # fmt: skip


def observe(out: SeriesSink, info: TLSInfo | None) -> None:
    """Feed the continuous TLS families from a handshake, if there was one."""
    if info is not None:
        out.gauge(_EXPIRY, info.earliest_expiry)
        out.info(_VERSION, info.version)
        out.info(_CIPHER, info.cipher)


def blackbox(out: dict[str, list[Sample]], t: TLSInfo, cipher: bool = False) -> None:
    """blackbox's TLS families of a handshake; ``cipher``: with ``probe_tls_cipher_info``,
    which blackbox writes for http only (not tcp, unix or grpc)."""
    out["probe_ssl_earliest_cert_expiry"] = [({}, t.earliest_expiry)]
    out["probe_ssl_last_chain_expiry_timestamp_seconds"] = [({}, t.last_chain_expiry)]
    out["probe_tls_version_info"] = [({"version": t.version}, 1.0)]
    if cipher:
        out["probe_tls_cipher_info"] = [({"cipher": t.cipher}, 1.0)]
    out["probe_ssl_last_chain_info"] = [
        (
            {
                "fingerprint_sha256": t.fingerprint_sha256,
                "issuer": t.issuer,
                "subject": t.subject,
                "subjectalternative": t.subject_alternative,
                "serialnumber": t.serial_number,
            },
            1.0,
        )
    ]


_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1_0,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}


def read_config_file(path: str, key: str) -> bytes:
    """A file a module names, read when a probe runs. The error names the key, and the path only
    where it is not a secret (a key, password or token file's name is withheld like its
    contents)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        shown = REDACTED if is_secret_path(key) else f'"{path}"'
        raise ValueError(f"{key}: cannot read {shown} ({exc.strerror})") from None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerify:
    """A client connection creator that sends SNI but checks neither chain nor name."""

    def __init__(
        self, options: ssl.CertificateOptions, server_name: str, alpn: Sequence[bytes] = ()
    ) -> None:
        self._options = options
        self._sni = None if _is_ip(server_name) or not server_name else server_name
        #: set per connection: Twisted's options keep ALPN off the shared context
        self._alpn = list(alpn)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._options.getContext(), None)
        conn.set_app_data(tlsProtocol)
        if self._alpn:
            conn.set_alpn_protos(self._alpn)
        if self._sni:
            conn.set_tlsext_host_name(self._sni.encode("idna"))
        conn.set_connect_state()
        return conn


def client_creator(
    cfg: TLSConfig, host: str, alpn: Sequence[bytes] = ()
) -> IOpenSSLClientConnectionCreator:
    """Build the client TLS settings for ``host`` from ``cfg``, offering ``alpn`` if any."""
    name = cfg.server_name or host
    extra: dict[str, Any] = {}
    if cfg.min_version:
        version = _VERSIONS[cfg.min_version]
        if version < ssl.TLSVersion.TLSv1_2:
            extra["insecurelyLowerMinimumTo"] = version
        else:
            extra["raiseMinimumTo"] = version
    if cfg.max_version:
        extra["lowerMaximumSecurityTo"] = _VERSIONS[cfg.max_version]
    client_cert = None
    if cfg.cert_file and cfg.key_file:
        client_cert = ssl.PrivateCertificate.loadPEM(
            read_config_file(cfg.cert_file, "cert_file")
            + read_config_file(cfg.key_file, "key_file")
        )
    if cfg.insecure_skip_verify:
        kw: dict[str, Any] = dict(extra)
        if client_cert is not None:
            kw["privateKey"] = client_cert.privateKey.original
            kw["certificate"] = client_cert.original
        return _NoVerify(ssl.CertificateOptions(verify=False, **kw), name, alpn)
    trust: Any = ssl.platformTrust()
    if cfg.ca_file:
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(c) for c in _load_certs(read_config_file(cfg.ca_file, "ca_file"))]
        )
    return ssl.optionsForClientTLS(
        name, trustRoot=trust, clientCertificate=client_cert, extraCertificateOptions=extra,
        acceptableProtocols=list(alpn) or None,
    )  # fmt: skip


def creator_or_fail(
    cfg: TLSConfig, host: str, result: ProbeResult
) -> IOpenSSLClientConnectionCreator | None:
    """``client_creator``, or None with the probe failed: the files are local, so a problem
    with them is ours, found before any packet is sent."""
    try:
        return client_creator(cfg, host)
    except Exception as exc:
        result.fail("error", f"tls_config: {exc}")
        return None


def _load_certs(pem: bytes) -> list[Any]:
    from OpenSSL import crypto

    return [crypto.X509.from_cryptography(c) for c in x509.load_pem_x509_certificates(pem)]


def _not_after(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp()


def handshake_info(conn: SSL.Connection, verified: bool) -> TLSInfo:
    """Certificates and version of a completed handshake, as blackbox reports them."""
    info = TLSInfo()
    info.version = _NAMES.get(conn.get_protocol_version_name(), "unknown")
    chain = [c.to_cryptography() for c in (conn.get_peer_cert_chain() or [])]
    if chain:
        info.earliest_expiry = min(_not_after(c) for c in chain)
        leaf = chain[0]
        info.fingerprint_sha256 = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
        info.subject = go_name_string(leaf.subject)
        info.issuer = go_name_string(leaf.issuer)
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            info.subject_alternative = ",".join(san.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            pass
        info.serial_number = go_serial(leaf.serial_number)
    info.cipher = cipher_name(conn.get_cipher_name())
    if verified:
        verified_chain = conn.get_verified_chain()
        if verified_chain:
            info.last_chain_expiry = min(_not_after(c.to_cryptography()) for c in verified_chain)
    else:
        info.last_chain_expiry = GO_ZERO_TIME
    return info


def go_serial(serial: int) -> str:
    """Go's ``fmt.Sprintf("%x", SerialNumber.Bytes())``: the magnitude's big-endian bytes in
    lowercase hex, so leading zero nibbles of a byte are kept (``0a``), none for 0."""
    n = abs(serial)
    return n.to_bytes((n.bit_length() + 7) // 8, "big").hex()


# OpenSSL's names of the suites Go's crypto/tls knows, to the IANA names Go reports
_GO_CIPHERS = {
    "RC4-SHA": "TLS_RSA_WITH_RC4_128_SHA",
    "DES-CBC3-SHA": "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA",
    "AES128-SHA256": "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-RC4-SHA": "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-RC4-SHA": "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "ECDHE-RSA-DES-CBC3-SHA": "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "ECDHE-ECDSA-AES128-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
}
_suite_ids: dict[str, int] = {}


def cipher_name(openssl_name: str | None) -> str:
    """A suite as Go's ``tls.CipherSuiteName`` names it: TLS 1.3 suites keep their (IANA)
    name, Go's TLS 1.2 suites get their IANA name, any other is its id as ``0x%04X``."""
    if not openssl_name:
        return ""
    if openssl_name.startswith("TLS_"):
        return openssl_name
    known = _GO_CIPHERS.get(openssl_name)
    if known is not None:
        return known
    if not _suite_ids:
        import ssl as std_ssl

        ctx = std_ssl.SSLContext(std_ssl.PROTOCOL_TLS_CLIENT)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        _suite_ids.update((c["name"], c["id"] & 0xFFFF) for c in ctx.get_ciphers())
    suite = _suite_ids.get(openssl_name)
    return openssl_name if suite is None else f"0x{suite:04X}"


# Go's pkix.Name fields, in the order Name.ToRDNSequence lists them
_GO_NAMES = [
    ("2.5.4.6", "C"), ("2.5.4.8", "ST"), ("2.5.4.7", "L"), ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"), ("2.5.4.10", "O"), ("2.5.4.11", "OU"), ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
]  # fmt: skip
_SINGLE = {"2.5.4.3", "2.5.4.5"}  # Go keeps one CommonName and one SerialNumber: the last
_PRINTABLE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def _go_escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        esc = ch in ',+"\\<>;' or (ch == " " and i in (0, len(value) - 1)) or (ch == "#" and i == 0)
        out.append("\\" + ch if esc else ch)
    return "".join(out)


def _der_string(value: str) -> str:
    """Hex DER of a string as Go's asn1.Marshal writes it (PrintableString, else UTF8String)."""
    data = value.encode("utf-8")
    tag = 0x13 if set(value) <= _PRINTABLE else 0x0C
    n = len(data)
    length = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return (bytes([tag]) + length + data).hex()


def go_name_string(name: x509.Name) -> str:
    """A certificate name as Go's ``pkix.Name.String()`` writes it (blackbox's label values)."""
    values: dict[str, list[str]] = {}
    extra: list[str] = []
    for attr in name:
        oid = attr.oid.dotted_string
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
        if any(oid == known for known, _ in _GO_NAMES):
            values[oid] = [value] if oid in _SINGLE else [*values.get(oid, []), value]
        else:
            extra.append(f"{oid}=#{_der_string(value)}")
    rdns = [
        "+".join(f"{key}={_go_escape(v)}" for v in values[oid])
        for oid, key in _GO_NAMES
        if values.get(oid)
    ]
    return ",".join(list(reversed(rdns)) + list(reversed(extra)))


def tls_connection(transport: Any) -> SSL.Connection | None:
    """The pyOpenSSL connection behind a transport after a handshake, if any."""
    for candidate in (transport, getattr(transport, "protocol", None)):
        get = getattr(candidate, "getHandle", None)
        if get is not None:
            handle = get()
            if isinstance(handle, SSL.Connection):
                return handle
    return None


def _pem_problem(path: str, key: str) -> str | None:
    """Why a certificate or key file cannot be used, checked once at load, not per probe."""
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


def _pem_files(r: Reading) -> None:
    """Certificate and key files are checked once at load, not per probe."""
    for key in ("ca_file", "cert_file", "key_file"):
        name = r.values.get(key)
        readable = isinstance(name, str) and is_readable_file(name)
        problem = _pem_problem(str(name), key) if readable else None  # else: warned already
        if problem:
            r.error(key, f'"{name}": {problem}')
            r.values.pop(key)


def _pair(r: Reading) -> None:
    if ("cert_file" in r.nodes) != ("key_file" in r.nodes):
        r.c.error(r.node, r.path, "cert_file and key_file must be set together")


def _version_order(r: Reading) -> None:
    low, high = r.values.get("min_version"), r.values.get("max_version")
    if isinstance(low, str) and isinstance(high, str) and low > high:
        r.error("max_version", f"{high} is below min_version {low}")


_TLS_VERSION = Choice(TLS_VERSIONS, 'unknown TLS version "{}"')

#: ``tls_config``, as tcp, http and dns take it
TLS_SECTION = Section(
    TLSConfig(),
    (
        Opt("ca_file", PROBE_FILE),
        Opt("cert_file", PROBE_FILE),
        Opt("key_file", PROBE_FILE, secret=True),
        Opt("server_name", STRING),
        Opt("insecure_skip_verify", BOOL),
        Opt("min_version", _TLS_VERSION),
        Opt("max_version", _TLS_VERSION),
        Check(_pair),
        Check(_pem_files),
        Check(_version_order),
    ),
)
TLS_OPTION = Opt("tls_config", Nested(TLS_SECTION))
