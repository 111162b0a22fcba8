"""`stockade lab demo` runs end to end, through the shop's own Services, and says what the
published Sock Shop policies do, then what the administrator's tiers do (ClusterNetworkPolicy:
an Admin Deny no NetworkPolicy reopens, a Baseline default deny); the kubectl commands it prints
work with the real kubectl against the lab it keeps."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .labenv import Lab

pytestmark = pytest.mark.root

# The published policies' known mistakes: `cart-access` selects `name: cart` (the pods are
# `carts`), `carts-db-access` admits `name: cart`, and nothing admits anyone to session-db.
EXPECTED_BLOCKED = {
    ("front-end", "carts", 80),
    ("front-end", "session-db", 6379),
    ("orders", "carts", 80),
    ("carts", "carts-db", 27017),
}


def _tables(out: str) -> list[list[str]]:
    tables: list[list[str]] = []
    for line in out.splitlines():
        if line.strip().startswith("FROM ") and "PORT" in line:
            tables.append([])
        elif tables and len(line.split()) >= 5 and line.split()[4] in ("works", "BLOCKED"):
            tables[-1].append(line)
    return tables


def _blocked(rows: list[str]) -> set[tuple[str, str, int]]:
    return {
        (r.split()[0], r.split()[1], int(r.split()[3])) for r in rows if "BLOCKED" in r or "policies say blocked" in r
    }


def _through_services(rows: list[str]) -> None:
    """Every call dials a Service: the external host front-end's NodePort 30001 on a node's
    address; the others a ClusterIP on the Service port; the PORT is the backend's container port."""
    for row in rows:
        src, dst, via, port = row.split()[:4]
        address, _, dialled = via.rpartition(":")
        if src == "external":
            assert (dst, dialled, port) == ("front-end", "30001", "8079"), row
            assert ipaddress.ip_address(address) in ipaddress.ip_network("10.240.0.0/24"), row
        else:
            assert ipaddress.ip_address(address) in ipaddress.ip_network("10.96.0.0/16"), row
            assert dialled == port, row  # the shop's other Services keep their container ports


DATABASES = {  # the shop's databases and their container ports
    ("carts-db", 27017),
    ("catalogue-db", 3306),
    ("orders-db", 27017),
    ("session-db", 6379),
    ("user-db", 27017),
}
ADMIN_RULE = "ClusterNetworkPolicy sock-shop-databases rule no-other-namespace"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _shown(path: Path) -> str:
    """A path as the demo prints it: relative to the current directory when under it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _rows(rows: list[str]) -> dict[tuple[str, str, int], bool]:
    """Each row's verdict: connected, or not (probed blocked, or the policies say so; see _blocked)."""
    blocked = _blocked(rows)
    cells = [(r.split()[0], r.split()[1], int(r.split()[3])) for r in rows]
    return {c: c not in blocked for c in cells}


def _section(out: str, start: str, end: str | None = None) -> str:
    body = out.split(start, 1)[1]
    return body.split(end, 1)[0] if end else body


def _kubectl(kubeconfig: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run(["kubectl", *argv], env=env, text=True, capture_output=True, timeout=60, check=False)


def test_demo(lab: Lab) -> None:
    out = lab.run("demo", "--keep", timeout=240).stdout
    before, deny, published, admin, baseline = _tables(out)
    assert len(before) == len(deny) == len(published) == len(baseline) == 16
    for rows in (before, deny, published, admin, baseline):
        _through_services(rows)
    assert "kube-proxy: 14 services programmed on every node" in out
    assert "16 of 16 of the shop's connections work" in out
    assert not _blocked(before)
    assert len(_blocked(deny)) == 16  # DefaultDeny: nothing enters the shop
    assert _blocked(published) == EXPECTED_BLOCKED
    # The Admin tier: the namespace policy opens orders to analytics, but no database; the shop's
    # own database calls still work. Real packets, through the Services.
    assert _rows(admin) == {
        ("analytics/reports", "orders", 80): True,
        **{("analytics/reports", db, port): False for db, port in DATABASES},
        ("orders", "orders-db", 27017): True,
        ("catalogue", "catalogue-db", 3306): True,
        ("user", "user-db", 27017): True,
    }
    # The Baseline in place of the annotation (and cortex-access gone): the same verdicts.
    assert _blocked(baseline) == EXPECTED_BLOCKED
    if "this build has no brain" not in out:  # enforced: what was probed is what the policies say
        assert "enforcement is not in effect" not in out
        assert "(4 in step 4;" in out  # the agents counted each blocked attempt once
        records = out.split("== 6.")[1].split("== 7.")[0]
        for src, dst, port in EXPECTED_BLOCKED:
            assert f"sock-shop/{src} -> sock-shop/{dst} TCP/{port}, dropped on node-" in records
        step8 = _section(out, "== 8.", "== 9.")
        assert (
            "ingress to sock-shop/orders-db: blocked at the Admin tier by ClusterNetworkPolicy sock-shop-databases "
            "(priority 10) rule 'no-other-namespace' (Deny; final: no NetworkPolicy can change it)"
        ) in step8
        # drops top --by policy: the five database attempts, under the CNP's rule
        assert re.search(rf"^\s+{re.escape(ADMIN_RULE)}\s+5$", step8, re.M), step8
        step9 = _section(out, "== 9.", "The lab stays up")
        baseline_says = "blocked at the Baseline tier by ClusterNetworkPolicy sock-shop-default-deny (priority 10)"
        for dst in ("carts", "session-db"):  # no NetworkPolicy selects them: the Baseline decides
            assert f"ingress to sock-shop/{dst}: {baseline_says} rule 'default-deny'" in step9
        assert "ingress to sock-shop/carts-db: isolated by policies sock-shop/carts-db-access;" in step9
    assert "did you mean name=carts?" in out  # lint points at the typo
    assert "Tearing the lab down" not in out

    # --keep: a kubeconfig to export, and the commands the demo printed work with the real kubectl,
    # replayed in order (all but the Sock Shop's own manifests: the lab serves no Deployments).
    exported = re.findall(r"^\s+\$ export KUBECONFIG=(\S+)$", out, re.M)
    assert exported == [str((lab.dir / "kubeconfig").resolve())]
    printed = [shlex.split(c)[1:] for c in re.findall(r"^\s+\$ (kubectl .+)$", out, re.M)]
    assert ["apply", "-f", _shown(EXAMPLES / "sock-shop" / "policies")] in printed
    assert ["apply", "-f", _shown(EXAMPLES / "sock-shop-tiers" / "admin-protect-databases.yaml")] in printed
    assert ["get", "clusternetworkpolicies"] in printed
    assert ["delete", "-f", _shown(EXAMPLES / "sock-shop" / "policies" / "netpol-cortex-access.yaml")] in printed
    assert shutil.which("kubectl"), "kubectl is needed for this test: it runs the commands the demo prints"
    replayed = [argv for argv in printed if _shown(EXAMPLES / "sock-shop" / "complete-demo.yaml") not in argv]
    assert len(replayed) == len(printed) - 1
    for argv in replayed:
        res = _kubectl(exported[0], argv)
        assert res.returncode == 0, f"kubectl {shlex.join(argv)}: {res.stdout}{res.stderr}"
    cnps = _kubectl(exported[0], ["get", "clusternetworkpolicies", "--no-headers"]).stdout.split("\n")
    assert sorted(line.split()[:3] for line in cnps if line) == [
        ["sock-shop-databases", "Admin", "10"],
        ["sock-shop-default-deny", "Baseline", "10"],
    ]
    netpols = _kubectl(exported[0], ["get", "networkpolicies", "-A", "-o", "name"]).stdout.split()
    assert "networkpolicy.networking.k8s.io/analytics-reads-orders" in netpols
    assert "networkpolicy.networking.k8s.io/cortex-access" not in netpols  # the replayed delete

    lab.run("down")
    assert lab.namespaces() == [] and not lab.dir.exists()
