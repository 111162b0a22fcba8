"""A small CA for development and the lab: the brain's server certificate, one client
certificate per node and client certificates for operators.

Operators bring their own (cert-manager, ...); all the brain needs is that a certificate is
signed by the CA it trusts and says whose it is with a URI SAN (`stockade.tls.identity`):
``stockade://node/<node>`` for a node agent, ``stockade://operator/<role>`` for an operator.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockade.codec.validate import check_node_name
from stockade.tls.identity import node_uri, operator_uri

ORG = "stockade"


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key."""

    cert: bytes
    key: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(self.cert)
        key_path.touch(mode=0o600)
        key_path.chmod(0o600)
        key_path.write_bytes(self.key)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast handshakes when a thousand agents reconnect at once.
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(name: str = "stockade-ca", days: int = 3650) -> CertPair:
    key = _key()
    subject = _name(name, "ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _issue(
    ca: CertPair,
    cn: str,
    unit: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> CertPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key (made by `stockade certs init`)")
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, unit))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_brain_cert(ca: CertPair, names: Iterable[str] = ("localhost", "127.0.0.1"), days: int = 825) -> CertPair:
    """The brain's server certificate; ``names`` are DNS names or IP addresses it is reached by."""
    sans = [_san(n) for n in names]
    if not sans:
        raise ValueError("the brain certificate needs at least one DNS name or IP address")
    return _issue(ca, "stockade-brain", "brain", sans, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_node_cert(ca: CertPair, node: str, days: int = 825) -> CertPair:
    """A node agent's client certificate: CN and DNS SAN are the node name, and the URI SAN
    ``stockade://node/<node>`` is what the brain reads as its identity."""
    check_node_name(node)
    sans = [x509.DNSName(node), x509.UniformResourceIdentifier(node_uri(node))]
    return _issue(ca, node, "node", sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def issue_operator_cert(ca: CertPair, name: str, role: str = "read", days: int = 365) -> CertPair:
    """An operator's client certificate for the admin API: CN ``name``, URI SAN
    ``stockade://operator/<role>`` (``read`` or ``admin``). The sync port refuses it."""
    if not name or len(name) > 64 or any(not (c.isalnum() or c in "-_.@") for c in name):
        raise ValueError(f"operator name {name!r}: use 1-64 letters, digits and -_.@")
    sans = [x509.UniformResourceIdentifier(operator_uri(role))]
    return _issue(ca, name, "operator", sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def write_bundle(
    out: Path,
    nodes: Iterable[str],
    brain_names: Iterable[str] = ("localhost", "127.0.0.1"),
    ca: CertPair | None = None,
) -> list[Path]:
    """Write ca.crt/ca.key, brain.crt/brain.key and nodes/<node>.crt/.key under ``out``.

    An existing CA in ``out`` is reused, so nodes can be added later. Returns the files written.
    """
    nodes = [check_node_name(n) for n in nodes]  # all or nothing: check before writing
    out.mkdir(parents=True, exist_ok=True)
    if ca is None:
        if (out / "ca.crt").exists() and (out / "ca.key").exists():
            ca = CertPair((out / "ca.crt").read_bytes(), (out / "ca.key").read_bytes())
        else:
            ca = make_ca()
    written: list[Path] = []

    def put(pair: CertPair, stem: Path) -> None:
        # Not with_suffix: node names may contain dots ("n1.example").
        cert, key = stem.parent / f"{stem.name}.crt", stem.parent / f"{stem.name}.key"
        pair.write(cert, key)
        written.extend([cert, key])

    put(ca, out / "ca")
    put(issue_brain_cert(ca, brain_names), out / "brain")
    for node in nodes:
        put(issue_node_cert(ca, node), out / "nodes" / node)
    return written


def write_operator(out: Path, name: str, role: str = "read", days: int = 365) -> list[Path]:
    """Write operators/<name>.crt/.key under ``out``, signed by the CA already there."""
    if not ((out / "ca.crt").exists() and (out / "ca.key").exists()):
        raise ValueError(f"no CA in {out}: run `stockade certs init --out {out}` first")
    ca = CertPair((out / "ca.crt").read_bytes(), (out / "ca.key").read_bytes())
    pair = issue_operator_cert(ca, name, role, days)
    cert, key = out / "operators" / f"{name}.crt", out / "operators" / f"{name}.key"
    pair.write(cert, key)
    return [cert, key]
