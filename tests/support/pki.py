"""The test PKI: a CA, leaves signed by it (one expired) and a self-signed leaf, as PEM files.

Pure computation and files (no sockets), so that every tier can make certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Certs", "make_certs"]


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a CA-signed leaf, an expired CA-signed leaf and a self-signed leaf.

    The leaves are for ``localhost`` (SAN DNS:localhost and IP:127.0.0.1). ``leaf_chain`` is the
    leaf followed by the CA certificate, as a server sends it.
    """

    directory: Path
    ca_cert: Path
    leaf_cert: Path
    leaf_chain: Path
    leaf_key: Path
    expired_cert: Path
    expired_key: Path
    selfsigned_cert: Path
    selfsigned_key: Path
    #: NotAfter of the leaf / expired leaf / self-signed cert, Unix seconds
    leaf_not_after: int
    expired_not_after: int
    selfsigned_not_after: int

    def server_context(self, which: str) -> ssl.SSLContext:
        """A server-side context presenting ``which``: ``valid``, ``expired`` or ``selfsigned``."""
        chain, key = {
            "valid": (self.leaf_chain, self.leaf_key),
            "expired": (self.expired_cert, self.expired_key),
            "selfsigned": (self.selfsigned_cert, self.selfsigned_key),
        }[which]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        return ctx


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        ).add_extension(
            # usable as a client certificate too (the web-config mTLS tests)
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, *items: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path.write_bytes(data)
    return path


def make_certs(directory: Path) -> Certs:
    """Generate the test PKI into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    # whole seconds: the exporters report NotAfter in Unix seconds
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    day = datetime.timedelta(days=1)

    ca_key = _key()
    ca_name = _name((NameOID.ORGANIZATION_NAME, "Netprobe Test"), (NameOID.COMMON_NAME, "Test CA"))
    ca = _cert(ca_name, ca_key, ca_name, ca_key, now - day, now + 365 * day, ca=True)

    leaf_name = _name(
        (NameOID.ORGANIZATION_NAME, "Netprobe Test"), (NameOID.COMMON_NAME, "localhost")
    )
    leaf_key = _key()
    leaf_end = now + 30 * day
    leaf = _cert(leaf_name, leaf_key, ca_name, ca_key, now - day, leaf_end, ca=False)

    expired_key = _key()
    expired_end = now - day
    expired = _cert(leaf_name, expired_key, ca_name, ca_key, now - 60 * day, expired_end, ca=False)

    # an attribute Go's pkix.Name.String() does not know (printed as OID=#hex), on purpose
    self_name = _name(
        (NameOID.ORGANIZATION_NAME, "Self Signed"),
        (NameOID.COMMON_NAME, "localhost"),
        (NameOID.EMAIL_ADDRESS, "ops@example.test"),
    )
    self_key = _key()
    self_end = now + 90 * day
    selfsigned = _cert(self_name, self_key, self_name, self_key, now - day, self_end, ca=False)

    return Certs(
        directory=directory,
        ca_cert=_write(directory / "ca.pem", ca),
        leaf_cert=_write(directory / "leaf.pem", leaf),
        leaf_chain=_write(directory / "leaf-chain.pem", leaf, ca),
        leaf_key=_write(directory / "leaf-key.pem", leaf_key),
        expired_cert=_write(directory / "expired.pem", expired),
        expired_key=_write(directory / "expired-key.pem", expired_key),
        selfsigned_cert=_write(directory / "selfsigned.pem", selfsigned),
        selfsigned_key=_write(directory / "selfsigned-key.pem", self_key),
        leaf_not_after=int(leaf_end.timestamp()),
        expired_not_after=int(expired_end.timestamp()),
        selfsigned_not_after=int(self_end.timestamp()),
    )
