"""`stockade lab demo` runs end to end, through the shop's own Services, and says what the
published Sock Shop policies do."""

from __future__ import annotations

import ipaddress

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


def test_demo(lab: Lab) -> None:
    out = lab.run("demo", timeout=180).stdout
    before, deny, published = _tables(out)
    assert len(before) == len(deny) == len(published) == 16
    for rows in (before, deny, published):
        _through_services(rows)
    assert "kube-proxy: 14 services programmed on every node" in out
    assert "16 of 16 of the shop's connections work" in out
    assert not _blocked(before)
    assert len(_blocked(deny)) == 16  # DefaultDeny: nothing enters the shop
    assert _blocked(published) == EXPECTED_BLOCKED
    if "this build has no brain" not in out:  # enforced: what was probed is what the policies say
        assert "enforcement is not in effect" not in out
        assert "(4 in step 4;" in out  # the agents counted each blocked attempt once
        records = out.split("== 6.")[1].split("== 7.")[0]
        for src, dst, port in EXPECTED_BLOCKED:
            assert f"sock-shop/{src} -> sock-shop/{dst} TCP/{port}, dropped on node-" in records
    assert "did you mean name=carts?" in out  # lint points at the typo
    assert "Tearing the lab down" in out
    assert lab.namespaces() == [] and not lab.dir.exists()
