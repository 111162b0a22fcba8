"""The upstream ClusterNetworkPolicy conformance suite with real packets, in the lab, on both backends.

The same data as the offline run through `reach` (tests/engine/data/cnp_conformance.yaml: every
test, subtest step and probe of kubernetes-sigs/network-policy-api's conformance/tests, with the
verdicts its Go code expects). The lab holds the suite's cluster: its five namespaces, its eight
pods on the two workers (kind-worker is lab node-2, kind-worker2 node-3; node-1 stands for the
control plane, with no pods), each listening where the suite's servers do (TCP 80 and 8080,
UDP 53 and 5353; the named ports web and dns declared as upstream), and its two host-network
centaur pods, one per worker, in their node's namespace at their node's addresses, listening
where the suite's host-network servers do (TCP 34345 and 34346, UDP 34347 and 34349, as they
declare). The lab's Nodes carry ``kubernetes.io/os: linux``, by which the node peers select them.

Each test starts from the cluster's namespaces with the test's policies applied through the
lab's API server (`lab apply --wait`: realized on every node); each change the Go code makes (a
rule swapped, a field set, a rule prepended, a namespace relabelled, a policy deleted) goes the
same way before the probes after it, which dial the destination pod's IP (a centaur's: its
node's) with real packets. A probe upstream expects to connect must connect; one it expects to
time out must get no answer (a REFUSED fails too: the probe counts only a completed connection
or reply as connected). Six of the seven probes to a centaur come from a pod of its own node:
traffic that node delivers to itself rather than forwards (see README); the seventh crosses nodes.

Not probed here, and counted so the figure cannot shrink unnoticed: the SCTP probes (this
kernel has no SCTP sockets, as for the other lab suites). They run offline through `reach`
(tests/cli/test_reach_cnp.py). The prepended `networks` rule names pod IPs: the lab's addresses
of the same pods replace the suite's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine.cnp_conformance import Probe, Replay, load  # type: ignore[import-not-found]

from stockade.lab import lab as labcmd
from stockade.lab import manifests
from stockade.lab import probe as labprobe

from .e2e import PATIENT, _cfg
from .labenv import Lab

pytestmark = pytest.mark.root

DATA = load()
NODES = {"kind-control-plane": "node-1", "kind-worker": "node-2", "kind-worker2": "node-3"}
EXTRA_PORTS = [{"protocol": "TCP", "containerPort": 8080}, {"protocol": "UDP", "containerPort": 5353}]
SYNCED = ("Namespace", "NetworkPolicy", "ClusterNetworkPolicy")  # what a step can change
Obj = dict[str, Any]
# Probes per reason they are not run here (see the module docstring); pinned so that a change in
# the data or in the selection is seen.
NOT_IN_LAB = {"SCTP": 90}


def why_not(replay: Replay, p: Probe) -> str | None:
    return "SCTP" if p.protocol == "SCTP" else None


def lab_pods() -> list[Obj]:
    """The suite's pods, placed on the lab's nodes; the host-network ones (the centaurs) keep
    their own ports, which are those their probes dial."""
    pods = []
    for obj in DATA["cluster"]:
        if obj["kind"] == "Pod":
            pod = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
            pod["spec"]["nodeName"] = NODES[pod["spec"]["nodeName"]]
            if not pod["spec"].get("hostNetwork"):
                pod["spec"]["containers"][0]["ports"] += EXTRA_PORTS
            pods.append(pod)
    return pods


def cluster_file(tmp: Path) -> Path:
    """The suite's namespaces and pods, placed on the lab's nodes."""
    docs = [copy.deepcopy(o) for o in DATA["cluster"] if o["kind"] == "Namespace"] + lab_pods()
    path = tmp / "conformance-cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def conformance_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"cnp-conf-{backend}")
    lab = Lab(tmp, f"st-lab-cnpc-{backend[:3]}-")
    lab.run("down", check=False)
    try:
        out = lab.run("up", "--nodes", "3", "--cluster", str(cluster_file(tmp)), "--backend", backend, timeout=180)
        if "policies are not enforced" in out.stdout or "not started" in out.stdout:
            pytest.fail("the lab started without its brain and agents: nothing would be enforced")
        yield lab
    finally:
        lab.run("down", check=False)


class LabSync:
    """Keeps the lab's namespaces and policies equal to a replay's objects, applying and deleting
    only what differs (each with `--wait`)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cfg = _cfg(lab)
        pods = labcmd.pods_json(self.cfg)["pods"]
        lab_ip = {f"{p['namespace']}/{p['name']}": p["ip"] for p in pods}
        self.ips = {  # the suite's pod IPs -> the lab's (a centaur's: its node's), for the networks rules
            o["status"]["podIP"]: lab_ip[f"{o['metadata']['namespace']}/{o['metadata']['name']}"]
            for o in DATA["cluster"]
            if o["kind"] == "Pod"
        }
        self.held: dict[tuple[str, str, str], Obj] = {}
        self.n = 0

    def translated(self, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        for rule in out.get("spec", {}).get("egress", []) if obj["kind"] == "ClusterNetworkPolicy" else []:
            for peer in rule.get("to", []):
                if "networks" in peer:
                    peer["networks"] = [self._net(n) for n in peer["networks"]]
        return out

    def _net(self, cidr: str) -> str:
        ip, _, length = cidr.partition("/")
        return f"{self.ips[ip]}/{length}" if ip in self.ips and length == "32" else cidr

    def sync(self, objects: list[Obj]) -> None:
        want = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): self.translated(o)
            for o in objects
            if o["kind"] in SYNCED
        }
        gone = [o for k, o in self.held.items() if k not in want]
        changed = [o for k, o in want.items() if self.held.get(k) != o]
        self.n += 1
        if gone:
            path = self.lab.write(f"gone-{self.n}.yaml", yaml.safe_dump_all(gone))
            labcmd.delete(self.cfg, [path], True, lambda _: None)
        if changed:
            path = self.lab.write(f"apply-{self.n}.yaml", yaml.safe_dump_all(changed))
            labcmd.apply(self.cfg, [path], True, lambda _: None)
        self.held = want

    def probe(self, probes: list[Probe]) -> list[str]:
        """The probes with real packets, one `lab probe` per protocol and port (its connections
        side by side); a connection expected that did not come is looked at again, patiently.
        What disagrees with the suite."""
        got: dict[Probe, bool] = {}
        for proto, port in sorted({(p.protocol, p.port) for p in probes}):
            batch = [p for p in probes if (p.protocol, p.port) == (proto, port)]
            results = labcmd.run_probe(
                self.cfg,
                [port],
                [proto],
                sorted({p.src for p in batch}),
                sorted({p.dst for p in batch}),
                labprobe.TIMEOUT,
                lambda _: None,
            )
            seen = {(r.src, r.dst): r.connected for r in results}
            got |= {p: seen[p.src, p.dst] for p in batch}
        for p in probes:
            if p.connect and not got[p]:
                results = labcmd.run_probe(self.cfg, [p.port], [p.protocol], [p.src], [p.dst], PATIENT, lambda _: None)
                got[p] = results[0].connected
        return [f"{p}: {'connected' if got[p] else 'timed out'}" for p in probes if got[p] != p.connect]


def steps(test: dict[str, Any]) -> Iterator[tuple[list[Obj], list[Probe]]]:
    """A test's probes that run in the lab, in runs that see the same objects, with those objects."""
    replay = Replay(DATA, test)
    run: list[Probe] = []
    state: list[Obj] | None = None
    for p in replay.run():
        if why_not(replay, p):
            continue
        now = [o for o in replay.objects if o["kind"] in SYNCED]
        if state is not None and now != state:
            yield state, run
            run = []
        state = copy.deepcopy(now)
        run.append(p)
    if state is not None:
        yield state, run


def test_the_probes_left_out_are_only_sctp_and_the_others_dial_served_ports() -> None:
    left: dict[str, int] = {}
    served = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in lab_pods()}
    unserved = set()
    for test in DATA["tests"]:
        replay = Replay(DATA, test)
        for p in replay.run():
            if reason := why_not(replay, p):
                left[reason] = left.get(reason, 0) + 1
            elif (p.protocol, p.port) not in manifests.container_ports(served[p.dst]):
                unserved.add((p.dst, p.protocol, p.port))
    assert left == NOT_IN_LAB
    assert not unserved  # a probe to a port its pod does not declare would find nothing listening


@pytest.fixture(scope="module")
def sync(conformance_lab: Lab) -> LabSync:
    return LabSync(conformance_lab)  # one per lab: it knows what the lab holds from test to test


# Tests with a probe the lab runs (the others' probes are all SCTP: counted above).
IN_LAB = sorted(t["name"] for t in DATA["tests"] if any(run for _, run in steps(t)))


@pytest.mark.parametrize("name", IN_LAB)
def test_conformance_with_real_packets(sync: LabSync, name: str) -> None:
    test = next(t for t in DATA["tests"] if t["name"] == name)
    wrong: list[str] = []
    probed = 0
    for objects, probes in steps(test):
        sync.sync(objects)
        wrong += sync.probe(probes)
        probed += len(probes)
    assert not wrong, f"{len(wrong)} of {probed} probes differ from the suite:\n" + "\n".join(wrong)
