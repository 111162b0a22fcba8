"""Shared by the end-to-end suites (test_e2e.py, once per backend).

End to end in the lab, modelled on upstream Kubernetes' NetworkPolicy e2e tests.

Namespaces x, y, z; pods a, b, c in each; ports 80 and 81 over TCP and UDP (SCTP: this kernel
has no SCTP sockets). For every case, the policies go to the lab's API server (`lab apply
--wait`), the brain compiles them, the agents program their nodes, and then every cell of the
9x9 matrix (plus the external host as a source) is probed with real packets and compared with
an independent evaluation of the spec (tests/engine/spec_oracle.py, which shares no code with
the engine). Label updates of pods and namespaces and policy deletion are cases too; the whole
suite runs on both backends.

Needs the brain and the agents: skipped while this build has no `stockade brain`/`agent`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine.spec_oracle import Oracle  # type: ignore[import-not-found]

from stockade.lab import lab as labcmd
from stockade.lab import state
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
}


def lab_for(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp(f"e2e-{backend}"), f"st-lab-e2e-{backend[:3]}-")
    lab.run("down", check=False)
    out = lab.run("up", "--nodes", "3", "--cluster", str(XYZ), "--backend", backend, timeout=120)
    try:
        if "policies are not enforced" in out.stdout or "not started" in out.stdout:
            pytest.fail("the lab started without its brain and agents: nothing would be enforced")
        yield lab
    finally:
        lab.run("down", check=False)


def _cfg(lab: Lab) -> LabConfig:
    return LabConfig(lab.dir, lab.prefix, (24000, 24999))


def apply(lab: Lab, path: str) -> None:
    """`lab apply -f PATH --wait`, in this process (the CLI itself is tested in test_lab.py)."""
    labcmd.apply(_cfg(lab), [path], True, lambda _: None)


def delete(lab: Lab, path: str) -> None:
    labcmd.delete(_cfg(lab), [path], True, lambda _: None)


def _objects(lab: Lab) -> tuple[list[Obj], list[Obj], list[Obj]]:
    st = state.load(lab.dir / "state.json")
    assert st is not None
    return list(st.namespaces.values()), list(st.pods.values()), list(st.policies.values())


def expected(lab: Lab, ext_ip: str, cells: list[Obj]) -> dict[tuple[str, str, str, int], bool]:
    namespaces, pods, policies = _objects(lab)
    oracle = Oracle(namespaces, pods, policies, beta=True)
    by_key = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
    out = {}
    for c in cells:
        src: Obj | str = ext_ip if c["from"] == "external" else by_key[c["from"]]
        out[c["from"], c["to"], c["protocol"], c["port"]] = oracle.allowed(
            src, by_key[c["to"]], c["protocol"], c["port"]
        )
    return out


def check_matrix(lab: Lab) -> None:
    ext_ip = labcmd.pods_json(_cfg(lab))["external"]["ip"]
    results = labcmd.run_probe(_cfg(lab), [80, 81], ["TCP", "UDP"], None, say=lambda _: None)
    cells: list[dict[str, Any]] = [r.to_json() for r in results]
    assert len(cells) == 10 * 9 * 4
    want = expected(lab, ext_ip, cells)
    wrong = [
        f"{c['from']} -> {c['to']} {c['protocol']}/{c['port']}: probed "
        f"{'open' if c['connected'] else 'blocked'}, the spec says "
        f"{'open' if want[c['from'], c['to'], c['protocol'], c['port']] else 'blocked'}"
        for c in cells
        if c["connected"] != want[c["from"], c["to"], c["protocol"], c["port"]]
    ]
    assert not wrong, f"{len(wrong)} cells differ:\n" + "\n".join(wrong[:40])


def file(lab: Lab, name: str, objs: list[Obj]) -> str:
    return lab.write(name, yaml.safe_dump_all(objs))


def pod(ns: str, name: str, label: str) -> Obj:
    docs = [d for d in yaml.safe_load_all(XYZ.read_text()) if d and d["kind"] == "Pod"]
    pod = next(d for d in docs if d["metadata"]["name"] == name and d["metadata"]["namespace"] == ns)
    return json.loads(json.dumps({**pod, "metadata": {**pod["metadata"], "labels": {"pod": label}}}))
