"""`stockade suggest` end to end in the lab, on both backends: real packets, real drops, the real
CLI against the lab's brain, the real kubectl against its API server.

The Sock Shop with its published policies blocks 4 of the shop's 16 calls (`cart-access` and
`carts-db-access` name `cart`, the pods are `carts`; nothing admits anyone to session-db; see
test_demo.py). In order:

1. The shop's 16 calls, once each, through its Services (real TCP handshakes from the pods'
   namespaces, and from the external host to front-end's NodePort): exactly the 4 are blocked,
   and the agents report their drops to the brain (waited for through `stockade drops top`).
2. `stockade suggest` online, from those drops alone (no ``--flows``, no ``-f``), ``-o json`` and
   ``-o yaml``: it admits exactly the 4, opens nothing else, leaves nothing blocked; the YAML is
   the JSON's manifests, and the suggestion offline (``-f examples/sock-shop --flows`` of the 4)
   makes: the same changes for the same reasons (the brain's copy of a mended policy carries
   the ``policyTypes`` the API server defaulted).
3. The lab's full reachability map (`lab probe`: every pod and the external host to every pod's
   declared ports, pod IPs). Taken after the suggestion: its blocked cells drop too, and a
   suggestion asked after them would be asked for more than the shop's calls.
4. The YAML applied with the real kubectl against the lab's API server, waited for until every
   node's agent applied the write (the brains' ``/v1/realized``, as `lab apply --wait`).
5. The shop's 16 calls again: all connect; and the map again: it differs from step 3's in exactly
   the 4 cells, now open.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.lab import demo, realize

from .lab_ops import cli, enforced, lab_state, poll
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACKENDS = ["nftables", "iptables"]
SHOP = Path(__file__).resolve().parents[2] / "examples" / "sock-shop"
NS = "sock-shop"
Call = tuple[str, str, int]  # (source pod or "external", destination pod, container port)
Cell = tuple[str, str, str, int]  # (from, to, protocol, port) of `lab probe`
# What the published policies block of the shop's calls (as test_demo.py and test_admin_lab.py).
BLOCKED: set[Call] = {
    (f"{NS}/front-end", f"{NS}/carts", 80),
    (f"{NS}/front-end", f"{NS}/session-db", 6379),
    (f"{NS}/orders", f"{NS}/carts", 80),
    (f"{NS}/carts", f"{NS}/carts-db", 27017),
}
# The suggestion, as offline (tests/cli/test_suggest_cli.py): two mends and one new policy.
CHANGES = {
    ("mend", f"{NS}/cart-access"): {(f"{NS}/front-end", f"{NS}/carts", 80), (f"{NS}/orders", f"{NS}/carts", 80)},
    ("mend", f"{NS}/carts-db-access"): {(f"{NS}/carts", f"{NS}/carts-db", 27017)},
    ("create", f"{NS}/session-db-access"): {(f"{NS}/front-end", f"{NS}/session-db", 6379)},
}
PATIENT = 3.0  # seconds a probe waits to call a connection blocked: an open one can take > 1 s on a busy machine
DROPS_WAIT = 60.0  # the agents read and report their drops in batches every few seconds (slower when busy)
REALIZED_WAIT = 60.0
CONNECTION_VARS = ("STOCKADE_BRAIN", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CERT", "STOCKADE_KEY")


@pytest.fixture(params=BACKENDS)
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    """The Sock Shop on a 3-node lab of the backend, its published policies applied and enforced."""
    backend: str = request.param
    lab = Lab(tmp_path, f"st-lab-sg-{backend[:3]}-")  # the slot's namespaces and ports
    for var in CONNECTION_VARS:
        lab.env.pop(var, None)  # the CLI finds the lab's brain through admin.json alone
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "3", "--cluster", str(SHOP / "complete-demo.yaml"), "--backend", backend, timeout=180)
        if not enforced(lab_state(lab)):
            pytest.fail("the lab started without its brain and agents: nothing would be enforced")
        lab.run("apply", "-f", str(SHOP / "policies"), "--wait")
        yield lab, backend
    finally:
        lab.run("down", check=False)


def _calls(lab: Lab) -> dict[Call, bool]:
    """The shop's 16 calls, each once, as the shop makes them: through its Services (kube-proxy
    DNATs them to the backend pod, where the policies judge the container port)."""
    st = lab_state(lab)
    assert st.plan is not None
    routes = demo.routes(st, demo.SHOP_FLOWS)
    results = demo.probe_flows(st, routes, PATIENT)
    out = {(r.src, r.dst, r.target): res.connected for r, res in zip(routes, results, strict=True)}
    assert len(out) == len(demo.SHOP_FLOWS) == 16
    return out


def _map(lab: Lab) -> dict[Cell, bool]:
    """`lab probe`: every source (each pod, the external host) to every pod's declared ports."""
    cells = json.loads(lab.run("probe", "--timeout", str(PATIENT), "-o", "json").stdout)["results"]
    out = {(c["from"], c["to"], c["protocol"], c["port"]): c["connected"] for c in cells}
    assert len(out) == len(cells)  # one result per cell
    return out


def _cli_json(lab: Lab, *args: str) -> dict[str, Any]:
    res = cli(lab, *args, "-o", "json")
    assert res.returncode == 0, f"stockade {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _dropped(lab: Lab) -> set[tuple[str, str, int, str]]:
    """The flows the brain's drop store counted (`stockade drops top`), grouped as suggest reads them."""
    by = "src_namespace,src,dst_namespace,dst_pod,protocol,dport"
    rows = _cli_json(lab, "drops", "top", "--window", "15m", "--by", by)["items"]
    keys = [r["key"] for r in rows]
    return {
        (f"{k['src_namespace']}/{k['src']}", f"{k['dst_namespace']}/{k['dst_pod']}", int(k["dport"]), k["protocol"])
        for k in keys
    }


def _flow(f: dict[str, Any]) -> Call:
    assert f["protocol"] == "TCP", f
    return f["from"], f["to"], f["port"]


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def _defaulted(policy: dict[str, Any]) -> dict[str, Any]:
    """A manifest as the API server stores it: ``policyTypes`` defaulted (Ingress, and Egress
    when it has egress rules), which the brain's copy of a mended policy carries."""
    spec = policy["spec"]
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
    return {**policy, "spec": {**spec, "policyTypes": types}}


def _kubectl(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for this test: it applies the suggestion"
    env = {**os.environ, "KUBECONFIG": str(lab.dir / "kubeconfig")}
    return subprocess.run([kubectl, *argv], env=env, text=True, capture_output=True, timeout=60, check=False)


def test_suggest_from_real_drops_admits_exactly_the_blocked_calls(shop: tuple[Lab, str]) -> None:
    lab, backend = shop
    t0 = time.monotonic()
    nodes = _cli_json(lab, "nodes")["items"]
    assert {n["backend"] for n in nodes} == {backend} and all(n["ready"] for n in nodes), nodes

    # 1. The shop's calls: exactly the 4 are blocked, and the brain has their drops.
    calls = _calls(lab)
    assert {c for c, ok in calls.items() if not ok} == BLOCKED
    want = {(*c, "TCP") for c in BLOCKED}
    dropped = poll(lambda: _dropped(lab), lambda d: d >= want, DROPS_WAIT)
    assert dropped == want  # nothing else was blocked: the drops are the 4 calls

    # 2. suggest online, from the drops: the 4 admitted, nothing else opened, nothing left blocked.
    res = cli(lab, "suggest", "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr == ""  # no drop skipped (every one is TCP to a pod)
    doc = json.loads(res.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("stockade.io/v1", "Suggestion")
    assert sorted(map(_flow, doc["admitted"])) == sorted(BLOCKED)
    assert doc["alsoOpens"] == [] and doc["notAdmitted"] == []
    assert doc["notFixable"] == doc["closes"] == doc["rejected"] == doc["alreadyAllowed"] == []
    assert {(c["action"], c["policy"]): set(map(_flow, c["admits"])) for c in doc["changes"]} == CHANGES
    manifests = [c["manifest"] for c in doc["changes"]]
    as_yaml = cli(lab, "suggest", "-o", "yaml")
    assert as_yaml.returncode == 0, as_yaml.stdout + as_yaml.stderr
    assert as_yaml.stdout.startswith("# stockade suggest\n# 3 changes admit 4 of the 4"), as_yaml.stdout
    assert [d for d in yaml.safe_load_all(as_yaml.stdout) if d] == manifests
    # the very suggestion `suggest -f` makes offline of the published manifests for those flows
    flows = lab.write("blocked-flows.yaml", "".join(f"- {s} -> {d}:{p}\n" for s, d, p in sorted(BLOCKED)))
    offline = cli(lab, "suggest", "-f", str(SHOP), "--flows", flows, "-o", "yaml")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert _comments(as_yaml.stdout) == _comments(offline.stdout)  # what each change is, why, what it admits
    assert manifests == [_defaulted(d) for d in yaml.safe_load_all(offline.stdout) if d]

    # 3. The map before the change (after suggest: its blocked cells drop too).
    before = _map(lab)
    assert len(before) >= 200, len(before)
    assert all(not before[(src, dst, "TCP", port)] for src, dst, port in BLOCKED)

    # 4. The YAML, as written, through the real kubectl; waited for until every node applied it.
    fix = lab.write("suggested.yaml", as_yaml.stdout)
    applied = _kubectl(lab, "apply", "-f", fix, "-o", "json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    out = json.loads(applied.stdout)
    items = out["items"] if out.get("kind") == "List" else [out]
    assert sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in items) == sorted(
        tuple(p.split("/")) for _, p in CHANGES
    )
    since = {"NetworkPolicy": max(int(i["metadata"]["resourceVersion"]) for i in items)}
    answer = realize.wait(lab_state(lab), since, REALIZED_WAIT, lab.dir)
    assert answer is not None and answer.get("realized"), answer

    # 5. Every call connects now; the map differs in exactly the 4 cells, now open.
    calls_after = _calls(lab)
    assert calls_after.keys() == calls.keys()
    assert all(calls_after.values()), sorted(c for c, ok in calls_after.items() if not ok)
    after = _map(lab)
    assert after.keys() == before.keys()
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {(src, dst, "TCP", port) for src, dst, port in BLOCKED}, sorted(changed)
    assert all(after[k] for k in changed)
    print(f"{backend}: {len(before)} cells, {sum(before.values())} open before, {time.monotonic() - t0:.1f} s")
