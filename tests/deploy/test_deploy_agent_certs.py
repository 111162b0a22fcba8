"""deploy/agent-certs.sh: from a CA shaped like cert-manager's (an ECDSA key in a Secret's
tls.crt/tls.key), the Secret it applies holds one certificate per node that chains to that CA and
names its node, which is what the brain requires of an agent. kubectl is a small stand-in here (no
cluster); `stockade certs init` is the real command."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .render import DEPLOY, REPO, find, render

SCRIPT = DEPLOY / "agent-certs.sh"
NODES = ["node-a", "node-b.example"]

# Just enough kubectl for the script: read a Secret field, list nodes, build a Secret from files,
# add a label locally, apply (recorded to a file).
FAKE_KUBECTL = textwrap.dedent(
    """\
    import base64, json, os, sys, yaml
    state = json.load(open(os.environ["FAKE_STATE"]))
    args = sys.argv[1:]
    if args[:2] == ["-n", state["namespace"]]:
        args = args[2:]
    def opt(name):
        return args[args.index(name) + 1]
    if args[:2] == ["get", "secret"]:
        field = opt("-o").split("{.data.")[1].rstrip("}").replace("\\\\.", ".")
        print(state["secrets"][args[2]][field], end="")
    elif args[:2] == ["get", "nodes"]:
        print("".join(n + "," for n in state["nodes"]), end="")
    elif args[:3] == ["create", "secret", "generic"]:
        data = {}
        for a in args:
            if a.startswith("--from-file="):
                key, path = a[len("--from-file="):].split("=", 1)
                data[key] = base64.b64encode(open(path, "rb").read()).decode()
        print(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": args[3]}, "data": data}))
    elif args[0] == "label":
        obj = yaml.safe_load(sys.stdin)
        key, value = args[-3].split("=")
        obj["metadata"].setdefault("labels", {})[key] = value
        print(yaml.safe_dump(obj))
    elif args[:2] == ["apply", "-f"]:
        open(os.environ["FAKE_APPLIED"], "w").write(sys.stdin.read())
    else:
        sys.exit("fake kubectl: unexpected " + repr(sys.argv))
    """
)


def cert_manager_like_ca() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stockade-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    # cert-manager writes EC keys in the SEC1 ("EC PRIVATE KEY") form.
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def run_script(tmp_path: Path, ca_cert: bytes, ca_key: bytes) -> dict[str, bytes]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fake_kubectl.py").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir}/fake_kubectl.py" "$@"\n')
    (bin_dir / "stockade").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stockade.cli.main "$@"\n')
    for exe in ("kubectl", "stockade"):
        (bin_dir / exe).chmod(0o755)
    state = {
        "namespace": "stockade-system",
        "nodes": NODES,
        "secrets": {
            "stockade-ca": {
                "tls.crt": base64.b64encode(ca_cert).decode(),
                "tls.key": base64.b64encode(ca_key).decode(),
            }
        },
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    roots = ["services/common", "services/brain", "services/node-agent", "services/lab", "services/cli"]
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(str(REPO / r) for r in roots),
        "FAKE_STATE": str(tmp_path / "state.json"),
        "FAKE_APPLIED": str(tmp_path / "applied.yaml"),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    applied = yaml.safe_load((tmp_path / "applied.yaml").read_text())
    assert applied["kind"] == "Secret"
    assert applied["metadata"]["name"] == "stockade-agent-tls"
    assert applied["metadata"]["labels"] == {"app.kubernetes.io/part-of": "stockade"}
    return {k: base64.b64decode(v) for k, v in applied["data"].items()}


def test_one_certificate_per_node_chained_to_the_cluster_ca(tmp_path: Path) -> None:
    ca_cert, ca_key = cert_manager_like_ca()
    data = run_script(tmp_path, ca_cert, ca_key)
    assert set(data) == {"ca.crt"} | {f"{n}.{ext}" for n in NODES for ext in ("crt", "key")}
    assert data["ca.crt"] == ca_cert  # the CA the brain's cert-manager Secret also carries
    ca = x509.load_pem_x509_certificate(ca_cert)
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    for node in NODES:
        cert = x509.load_pem_x509_certificate(data[f"{node}.crt"])
        ca_public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        assert cert.issuer == ca.subject
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [node]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        key = serialization.load_pem_private_key(data[f"{node}.key"], password=None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert "ca.key" not in data  # the CA's key never goes to the nodes


def client_certs_overlay(tmp_path: Path) -> Path:
    """An overlay of the base with the component deploy/client-certs, as its comment says."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(DEPLOY, tmp_path)],
                "components": [os.path.relpath(DEPLOY / "client-certs", tmp_path)],
            }
        )
    )
    return tmp_path


def test_daemonset_reads_the_files_the_script_writes(tmp_path: Path) -> None:
    objects = render(client_certs_overlay(tmp_path)).objects
    spec = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = dict(a.split("=", 1) for a in c["args"][1:])
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "tls")
    assert args["--tls-cert"] == f"{mount}/$(NODE_NAME).crt"
    assert args["--tls-key"] == f"{mount}/$(NODE_NAME).key"
    brain = find(objects, "Deployment", "stockade-brain")["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in brain["args"] if a.startswith("--agent-auth=")][-1] == "--agent-auth=cert"  # the last wins
    assert "NODE_NAME" in {e["name"] for e in c["env"]}  # what $(NODE_NAME) expands from
    volume = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "stockade-agent-tls"
