"""Certificates from `stockade certs init`: who they name and what they may be used for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockade.tls import peer_names

ROOT = Path(__file__).resolve().parents[2]
ENV_PATH = ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": ENV_PATH, "PATH": "/usr/bin:/bin"},
    )


def test_certs_init_writes_a_ca_a_brain_and_one_cert_per_node(tmp_path: Path) -> None:
    out = _cli(
        "certs", "init", "--out", str(tmp_path), "--nodes", "n1,n2.example", "--brain-names", "brain.local,10.0.0.1"
    )
    assert out.returncode == 0, out.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    brain = x509.load_pem_x509_certificate((tmp_path / "brain.crt").read_bytes())
    node = x509.load_pem_x509_certificate((tmp_path / "nodes/n2.example.crt").read_bytes())
    assert (tmp_path / "nodes/n1.key").stat().st_mode & 0o077 == 0
    for cert in (brain, node):
        cert.verify_directly_issued_by(ca)
    san = brain.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["brain.local"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "n2.example"
    node_san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert node_san.get_values_for_type(x509.DNSName) == ["n2.example"]
    assert list(node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    # Adding a node later reuses the CA.
    assert _cli("certs", "init", "--out", str(tmp_path), "--nodes", "n3").returncode == 0
    n3 = x509.load_pem_x509_certificate((tmp_path / "nodes/n3.crt").read_bytes())
    n3.verify_directly_issued_by(ca)


def test_certs_init_refuses_bad_node_names_before_writing(tmp_path: Path) -> None:
    out = _cli("certs", "init", "--out", str(tmp_path / "x"), "--nodes", "ok,Not_OK")
    assert out.returncode == 2
    assert "Not_OK" in out.stderr and "not a valid node name" in out.stderr
    assert not (tmp_path / "x").exists()


def test_peer_names() -> None:
    ctx = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"n1"],
        "x509_subject_alternative_name": [b"n1", b"n1.alt"],
    }
    assert peer_names(ctx) == {"n1", "n1.alt"}
    assert peer_names({"transport_security_type": [b"insecure"], "x509_common_name": [b"n1"]}) == set()
