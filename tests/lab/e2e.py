"""Shared by the end-to-end suites (test_e2e.py, once per backend and lab mode).

End to end in the lab, modelled on upstream Kubernetes' NetworkPolicy e2e tests.

Namespaces x, y, z; pods a, b, c in each; ports 80 and 81 over TCP and UDP (SCTP: this kernel
has no SCTP sockets). For every case, the policies go to the lab's API server (`lab apply
--wait`), the brain compiles them, the agents program their nodes, and then every cell of the
9x9 matrix (plus the external host as a source) is probed with real packets and compared with
an independent evaluation of the spec (tests/engine/spec_oracle.py, which shares no code with
the engine). Label updates of pods and namespaces and policy deletion are cases too; the whole
suite runs on both backends.

As upstream's suite does, every case also probes through Services: each pod has one
(examples/lab/xyz.yaml), and every pod dials every port of every Service's ClusterIPs (both of
them in a dual-stack lab: the Services prefer dual-stack) with `lab probe --via-service`. Each
such cell must get the spec's verdict for the backend pod at the container port the Service
port leads to (8080 -> 80, 8081 -> 81): the lab's kube-proxy DNATs before the agents' rules
look, so a policy naming port 81 admits ClusterIP:8081 and nothing else. See `_pair` for a pod
reaching itself through its own Service.

It also runs in a dual-stack lab (every cell probed over IPv4 and over IPv6, each judged by the
oracle with the addresses of its family) and in a dual-stack lab whose pods sit on per-node
bridges (see `MODES` for which cases, and why).

Needs the brain and the agents: a lab without them fails (nothing would be enforced).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine.cnp_oracle import CNPOracle  # type: ignore[import-not-found]
from engine.spec_oracle import Oracle  # type: ignore[import-not-found]

from stockade.lab import kubeapi, manifests, state
from stockade.lab import lab as labcmd
from stockade.lab.config import LabConfig

from .labenv import Lab

XYZ = Path(__file__).resolve().parents[2] / "examples" / "lab" / "xyz.yaml"
Obj = dict[str, Any]


def pol(name: str, spec: Obj, ns: str = "x") -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


POD_A = {"matchLabels": {"pod": "a"}}
CASES: dict[str, list[Obj]] = {
    "default-deny-ingress": [pol("deny", {"podSelector": {}})],
    "default-deny-all": [pol("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "same-namespace-only": [pol("same", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
    "from-namespace-y-to-a": [
        pol(
            "from-y",
            {"podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]},
        )
    ],
    "pod-and-namespace-selector": [
        pol(
            "and",
            {
                "podSelector": POD_A,
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]
                                },
                                "podSelector": {"matchLabels": {"pod": "b"}},
                            }
                        ]
                    }
                ],
            },
        )
    ],
    "port-81-tcp-only": [pol("p81", {"podSelector": POD_A, "ingress": [{"ports": [{"port": 81}]}]})],
    "named-port-udp": [
        pol("named", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]})
    ],
    "egress-to-y-only": [
        pol(
            "egress",
            {
                "podSelector": POD_A,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            },
        )
    ],
    "ip-block-with-except": [
        pol(
            "cidr",
            {
                "podSelector": POD_A,
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.2.0/24"]}}]}],
            },
        )
    ],
    "external-only": [pol("ext", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.239.0.0/16"}}]}]})],
    # Both families: node-2's pods are the exception in each (an IPv4-only lab simply never
    # matches the IPv6 half; the IPv4-only "ip-block-with-except" above, in a dual-stack lab,
    # admits no IPv6 at all: a block of one family never matches the other).
    "ip-block-dual-with-except": [
        pol(
            "cidr",
            {
                "podSelector": POD_A,
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.2.0/24"]}},
                            {"ipBlock": {"cidr": "fd00:10::/32", "except": ["fd00:10:244:2::/64"]}},
                        ]
                    }
                ],
            },
        )
    ],
    "egress-ip-block-dual-with-except": [
        pol(
            "egress-cidr",
            {
                "podSelector": POD_A,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.3.0/24"]}},
                            {"ipBlock": {"cidr": "fd00:10:244::/48", "except": ["fd00:10:244:3::/64"]}},
                        ],
                        "ports": [{"port": 80}, {"port": "serve-81-udp", "protocol": "UDP"}],
                    }
                ],
            },
        )
    ],
    "external-only-dual": [
        pol(
            "ext",
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.239.0.0/16"}}, {"ipBlock": {"cidr": "fd00:10:239::/48"}}]}
                ],
            },
        )
    ],
}


def cnp(name: str, tier: str, priority: int, subject: Obj, **rules: Any) -> Obj:
    spec = {"tier": tier, "priority": priority, "subject": subject, **rules}
    return {"apiVersion": CNP_API, "kind": "ClusterNetworkPolicy", "metadata": {"name": name}, "spec": spec}


CNP_API = "policy.networking.k8s.io/v1alpha2"
NS_X = {"namespaces": {"matchLabels": {"ns": "x"}}}
NS_Y = {"namespaces": {"matchLabels": {"ns": "y"}}}
NS_Z = {"namespaces": {"matchLabels": {"ns": "z"}}}
TCP_80 = [{"tcp": {"destinationPort": {"number": 80}}}]
XA = {"pods": {"namespaceSelector": NS_X["namespaces"], "podSelector": POD_A}}
# ClusterNetworkPolicy (judged by tests/engine/cnp_oracle.py, which also runs the v1 tier):
CNP_CASES: dict[str, list[Obj]] = {
    # An Admin Deny that no namespace policy can reopen; an Admin Accept that overrides one.
    "cnp-admin-deny-beats-network-policy": [
        cnp("protect-x", "Admin", 10, NS_X, ingress=[{"name": "not-from-y", "action": "Deny", "from": [NS_Y]}]),
        cnp("z-out", "Admin", 20, NS_Z, egress=[{"name": "z-may-reach-x", "action": "Accept", "to": [NS_X]}]),
        pol("allow-all-in", {"podSelector": {}, "ingress": [{}]}),
        pol("z-deny-out", {"podSelector": {}, "policyTypes": ["Egress"]}, ns="z"),
    ],
    # Pass hands on to the NetworkPolicy tier; a later Admin Deny never sees what was passed;
    # the Baseline default-deny applies where no NetworkPolicy selects a pod.
    "cnp-pass-then-network-policy-then-baseline": [
        cnp("pass-y", "Admin", 1, NS_X, ingress=[{"action": "Pass", "from": [NS_Y]}]),
        cnp("deny-rest", "Admin", 2, NS_X, ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}]),
        pol("y-to-a-only", {"podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": NS_Y["namespaces"]}]}]}),
        cnp("baseline-z", "Baseline", 5, NS_Z, ingress=[{"action": "Deny", "from": [NS_X]}]),
    ],
    # Ports and rule order: TCP/80 from x is denied first, the rest of x accepted; egress from y
    # to x's pod=a by TCP/80 denied (the sender times out, never refused).
    "cnp-ports-and-order": [
        cnp(
            "order",
            "Admin",
            3,
            NS_Z,
            ingress=[
                {"action": "Deny", "from": [NS_X], "protocols": TCP_80},
                {"action": "Accept", "from": [NS_X]},
                {"action": "Deny", "from": [{"namespaces": {}}]},
            ],
        ),
        cnp(
            "y-no-web-to-xa",
            "Admin",
            4,
            NS_Y,
            egress=[{"action": "Deny", "to": [XA], "protocols": TCP_80}],
        ),
    ],
}
CASES.update(CNP_CASES)
SCENARIOS = ("label-updates-and-policy-deletion", "beta-default-deny-annotation")  # see test_e2e.py


@dataclass(frozen=True)
class Mode:
    ip_family: str  # --ip-family
    topology: str  # --topology
    cases: tuple[str, ...]  # of CASES and SCENARIOS


# The xyz pods are placed a->node-1, b->node-2, c->node-3 in every namespace, so each 9x9 matrix
# has same-node cells (x/a <-> y/a ...) and cross-node ones, in every mode. The IPv4 lab runs
# everything. A full matrix in a dual-stack lab is twice the probes, and each mode is one more
# lab per backend on a 2-core CI machine, so the new modes run a subset that still covers each
# way a policy can go wrong per family: ingress and egress isolation (default-deny-all),
# selectors across namespaces in egress (egress-to-y-only), named ports (named-port-udp),
# ipBlock with except in both families, ingress and egress, and an IPv4-only block that must
# admit no IPv6 (ip-block-*), the external host (external-only-dual), and label changes.
# On bridges, where same-node traffic is bridged rather than routed, the cases whose verdicts
# differ between same-node pairs (same-namespace-only: x/a refuses y/a beside it but admits
# x/b on another node; from-namespace-y-to-a: y/a in, z/a out, both beside x/a).
MODES = {
    "ipv4": Mode("ipv4", "routed", (*sorted(CASES), *SCENARIOS)),
    "dual": Mode(
        "dual",
        "routed",
        (
            "default-deny-all",
            "egress-to-y-only",
            "named-port-udp",
            "ip-block-with-except",
            "ip-block-dual-with-except",
            "egress-ip-block-dual-with-except",
            "external-only-dual",
            "label-updates-and-policy-deletion",
            "cnp-ports-and-order",
        ),
    ),
    "bridge": Mode(
        "dual",
        "bridge",
        (
            "default-deny-all",
            "same-namespace-only",
            "from-namespace-y-to-a",
            "named-port-udp",
            "ip-block-dual-with-except",
            "egress-ip-block-dual-with-except",
        ),
    ),
}


def lab_for(backend: str, tmp_path_factory: pytest.TempPathFactory, mode: str = "ipv4") -> Generator[Lab, None, None]:
    lab = Lab(tmp_path_factory.mktemp(f"e2e-{backend}-{mode}"), f"st-lab-e2e-{backend[:3]}-{mode[:2]}-")
    lab.run("down", check=False)
    m = MODES[mode]
    try:
        out = lab.run(
            "up",
            *("--nodes", "3", "--cluster", str(XYZ), "--backend", backend),
            *("--ip-family", m.ip_family, "--topology", m.topology),
            timeout=180,
        )
        if "policies are not enforced" in out.stdout or "not started" in out.stdout:
            pytest.fail("the lab started without its brain and agents: nothing would be enforced")
        yield lab
    finally:
        lab.run("down", check=False)


def _cfg(lab: Lab) -> LabConfig:
    lo, _, hi = lab.env["STOCKADE_LAB_PORTS"].partition("-")
    return LabConfig(lab.dir, lab.prefix, (int(lo), int(hi)))


def apply(lab: Lab, path: str) -> None:
    """`lab apply -f PATH --wait`, in this process (the CLI itself is tested in test_lab.py)."""
    labcmd.apply(_cfg(lab), [path], True, lambda _: None)


def delete(lab: Lab, path: str) -> None:
    labcmd.delete(_cfg(lab), [path], True, lambda _: None)


def _objects(lab: Lab) -> tuple[list[Obj], list[Obj], list[Obj], list[Obj]]:
    st = state.load(lab.dir / "state.json")
    assert st is not None
    cnps = list(st.cluster_policies.values())
    return list(st.namespaces.values()), list(st.pods.values()), list(st.policies.values()), cnps


Cell = tuple[str, str, str, str, int]  # family, from, to, protocol, port


def _as_family(pod: Obj, family: str) -> Obj:
    """The pod as the oracle should see it for a probe of `family`: its address of that family as
    its IP (the oracle, written from the spec, judges ipBlocks against one pod IP)."""
    ip = next(x["ip"] for x in pod["status"]["podIPs"] if (":" in x["ip"]) == (family == "ipv6"))
    return {**pod, "status": {**pod["status"], "podIP": ip, "podIPs": [{"ip": ip}]}}


@dataclass(frozen=True)
class Judge:
    """The oracle for one IP family, with the pods as it sees them (addresses of that family)."""

    oracle: Any
    pods: dict[str, Obj]  # "ns/name" -> pod
    external: str  # the external host's address of that family


def judges(lab: Lab, external: Obj, families: set[str]) -> dict[str, Judge]:
    namespaces, pods, policies, cnps = _objects(lab)
    nodes = kubeapi.Client(_api_url(lab)).list("Node") if cnps else []
    out = {}
    for family in families:
        seen = [_as_family(p, family) for p in pods]
        ext_ip = next(ip for ip in external["ips"] if (":" in ip) == (family == "ipv6"))
        by_key = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in seen}
        oracle: Any = (
            CNPOracle(namespaces, seen, nodes, policies, cnps, beta=True)
            if cnps
            else Oracle(namespaces, seen, policies, beta=True)
        )
        out[family] = Judge(oracle, by_key, ext_ip)
    return out


def expected(lab: Lab, external: Obj, cells: list[Obj]) -> dict[Cell, bool]:
    out = {}
    for family, j in judges(lab, external, {c["family"] for c in cells}).items():
        for c in (c for c in cells if c["family"] == family):
            src: Obj | str = j.external if c["from"] == "external" else j.pods[c["from"]]
            out[family, c["from"], c["to"], c["protocol"], c["port"]] = j.oracle.allowed(
                src, j.pods[c["to"]], c["protocol"], c["port"]
            )
    return out


def _target_port(port: Obj, pod: Obj) -> int | None:
    """The container port a Service port leads to on `pod` (None: the pod has no port of that
    name, so it is no endpoint of this port)."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for c in pod["spec"].get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and cp.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(cp["containerPort"])
    return None


def backends(service: Obj, port: Obj, pods: dict[str, Obj]) -> list[tuple[str, int]]:
    """(pod, container port) behind one port of a Service, from its selector and the pods'
    labels as the spec defines them (not from the lab's EndpointSlices: this is the check)."""
    ns, selector = service["metadata"]["namespace"], service["spec"].get("selector") or {}
    out = []
    for key, p in sorted(pods.items()):
        labels = p["metadata"].get("labels") or {}
        if p["metadata"]["namespace"] == ns and selector and all(labels.get(k) == v for k, v in selector.items()):
            target = _target_port(port, p)
            if target is not None:
                out.append((key, target))
    return out


def _pair(j: Judge, src: str, dst: str, protocol: str, port: int) -> bool:
    """The spec's verdict for a connection from pod `src` to pod `dst` at a container port.

    A pod reaching itself through its Service (hairpin) is the one case where this is not the
    oracle's `allowed`: the spec lets a pod talk to itself (over loopback, which no rule sees),
    but says nothing of the hairpin path, which leaves the pod, is DNATed back to it and crosses
    the node like any other connection; upstream's suite ignores those cells ("CNIs do different
    things"). Stockade judges the hairpin by the pod's policies, its egress and its ingress, as for
    a connection between two pods, and this is asserted, so a change of that choice is seen."""
    s, d = j.pods[src], j.pods[dst]
    if src != dst:
        return bool(j.oracle.allowed(s, d, protocol, port))
    ip = s["status"]["podIP"]  # the address of the family probed (see _as_family)
    if isinstance(j.oracle, CNPOracle):  # the tiers too, without the API's self exemption
        out = j.oracle.egress(s, ip, protocol, port, exempt_self=False)
        return bool(out.allowed and j.oracle.ingress(d, ip, protocol, port, exempt_self=False).allowed)
    return bool(j.oracle.egress_allows(s, ip, d, protocol, port) and j.oracle.ingress_allows(d, ip, s, protocol, port))


def service_verdict(j: Judge, service: Obj, cell: Obj) -> tuple[bool, str]:
    """What the spec says of one probe through a ClusterIP, and why: the verdict for the backend
    pod at the container port the Service port leads to (policies see the packet after DNAT);
    blocked without a backend (the Service rejects). The e2e layout gives each Service backends
    that all get the same verdict; a cell that could go either way is a mistake in the test."""
    port = next(
        p
        for p in service["spec"]["ports"]
        if p["port"] == cell["service_port"] and p.get("protocol", "TCP") == cell["protocol"]
    )
    verdicts = {
        (_pair(j, cell["from"], pod, cell["protocol"], target), pod, target)
        for pod, target in backends(service, port, j.pods)
    }
    if not verdicts:
        return False, "no backend"
    assert len({v for v, _, _ in verdicts}) == 1, f"{cell}: the backends disagree: {sorted(verdicts)}"
    return next(iter(verdicts))[0], ", ".join(f"{pod}:{target}" for _, pod, target in sorted(verdicts))


# A probe gives up after probe.TIMEOUT (1 s); on a busy machine a connection the rules admit can
# take longer. An open cell is proof, a blocked one is not: a cell the spec says is open but was
# probed blocked is probed once more (a few at a time), with this much patience, before it counts
# as wrong.
PATIENT = 5.0
RECHECK_AT_MOST = 32


@dataclass(frozen=True)
class Probed:
    what: str  # the cell, in words
    connected: bool
    want: bool
    again: Callable[[], bool]  # probe this cell once more, patiently


def check_matrix(lab: Lab) -> None:
    """Probe every cell in every IP family of the lab, to the pods' IPs and through the pods'
    Services' ClusterIPs (both probes at once: each mostly waits out the drops' timeouts); each
    must be as the spec says."""
    cfg = _cfg(lab)
    listing = labcmd.pods_json(cfg)
    services = {manifests.key(s): s for s in kubeapi.Client(_api_url(lab)).list("Service")}
    sources = sorted({p["namespace"] for p in listing["pods"]})  # every pod; not the external host
    with ThreadPoolExecutor(2) as pool:  # each its own event loop; a thread's setns is its own
        to_pods = pool.submit(labcmd.run_probe, cfg, [80, 81], ["TCP", "UDP"], None, say=_quiet)
        to_services = pool.submit(labcmd.run_service_probe, cfg, None, ["TCP", "UDP"], sources, say=_quiet)
        pod_cells = [r.to_json() for r in to_pods.result()]
        service_cells = [r.to_json() for r in to_services.result()]
    probed = _pod_cells(lab, cfg, listing, pod_cells) + _service_cells(lab, cfg, listing, services, service_cells)
    # The second looks run side by side too, and only for a few cells: many blocked where the
    # spec says open is a dataplane that drops what it should not, not a slow machine, and must
    # fail at once rather than after a patient look at each.
    doubtful = [p for p in probed if p.want and not p.connected]
    open_now: dict[int, bool] = {}
    if len(doubtful) <= RECHECK_AT_MOST:
        with ThreadPoolExecutor(16) as pool:
            open_now = dict(zip(map(id, doubtful), pool.map(lambda p: p.again(), doubtful), strict=True))
    wrong = [
        f"{p.what}: probed {'open' if p.connected else 'blocked'}, the spec says {'open' if p.want else 'blocked'}"
        for p in probed
        if p.connected != p.want and not open_now.get(id(p), False)
    ]
    if doubtful:  # shown with the test's output
        print(
            f"{len(doubtful)} cells blocked where the spec says open; {sum(open_now.values())} open when probed again"
        )
    assert not wrong, f"{len(wrong)} cells differ:\n" + "\n".join(wrong[:40])


def _quiet(_: str) -> None:
    pass


def _one(results: list[Any]) -> bool:
    assert len(results) == 1, results
    return bool(results[0].connected)


def _pod_cells(lab: Lab, cfg: LabConfig, listing: Obj, cells: list[Obj]) -> list[Probed]:
    families = listing["ipFamilies"]
    assert len(cells) == 10 * 9 * 4 * len(families) and {c["family"] for c in cells} == set(families)
    want = expected(lab, listing["external"], cells)

    def again(c: Obj) -> Callable[[], bool]:
        return lambda: _one(
            labcmd.run_probe(cfg, [c["port"]], [c["protocol"]], [c["from"]], [c["to"]], PATIENT, _quiet, [c["family"]])
        )

    return [
        Probed(
            f"{c['from']} -> {c['to']} {c['protocol']}/{c['port']} over {c['family']}",
            c["connected"],
            want[c["family"], c["from"], c["to"], c["protocol"], c["port"]],
            again(c),
        )
        for c in cells
    ]


def _service_cells(lab: Lab, cfg: LabConfig, listing: Obj, services: dict[str, Obj], cells: list[Obj]) -> list[Probed]:
    """Every pod to every port of every Service's ClusterIPs (one per family of the lab: the
    Services prefer dual-stack), as `lab probe --via-service` probes them."""
    families = listing["ipFamilies"]
    assert services and all(len(s["spec"]["clusterIPs"]) == len(families) for s in services.values()), (
        "each Service has a ClusterIP of each family of the lab (PreferDualStack)"
    )
    assert {c["via"] for c in cells} == {"ClusterIP"} and {c["family"] for c in cells} == set(families)
    assert len(cells) == len(listing["pods"]) * sum(len(s["spec"]["ports"]) * len(families) for s in services.values())
    js = judges(lab, listing["external"], set(families))

    def again(c: Obj) -> Callable[[], bool]:
        def probe() -> bool:
            results = labcmd.run_service_probe(
                cfg, [c["port"]], [c["protocol"]], [c["from"]], [c["service"]], PATIENT, _quiet, [c["family"]]
            )
            return _one([r for r in results if r.address == c["address"]])

        return probe

    out = []
    for c in cells:
        ok, why = service_verdict(js[c["family"]], services[c["service"]], c)
        what = f"{c['from']} -> {c['to']} at {c['address']} {c['protocol']}/{c['port']} (to {why}) over {c['family']}"
        out.append(Probed(what, c["connected"], ok, again(c)))
    return out


def _api_url(lab: Lab) -> str:
    st = state.load(lab.dir / "state.json")
    assert st is not None
    return f"http://127.0.0.1:{st.ports['apiserver']}"


def file(lab: Lab, name: str, objs: list[Obj]) -> str:
    return lab.write(name, yaml.safe_dump_all(objs))


def pod(ns: str, name: str, label: str) -> Obj:
    docs = [d for d in yaml.safe_load_all(XYZ.read_text()) if d and d["kind"] == "Pod"]
    pod = next(d for d in docs if d["metadata"]["name"] == name and d["metadata"]["namespace"] == ns)
    return json.loads(json.dumps({**pod, "metadata": {**pod["metadata"], "labels": {"pod": label}}}))
