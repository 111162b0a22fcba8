"""The cluster of upstream Kubernetes' NetworkPolicy e2e tests, compiled with the engine.

Namespaces x, y, z (labelled ``ns: <name>``); pods a, b, c in each (labelled ``pod: <name>``),
each serving ports 80 and 81 on TCP, UDP and SCTP under the names upstream uses
(``serve-80-tcp``...); pods spread over three nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stockade.brain.engine import Engine
from stockade.model import NodeModel

from .harness import Reach, apply_deltas, differences, model_verdicts, models_of, oracle_verdicts
from .kube import namespace, node, pod
from .spec_oracle import Oracle, key_of, name_of, ns_of

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP", "SCTP")
NODES = ("node-1", "node-2", "node-3")
ALL = [f"{n}/{p}" for n in NAMESPACES for p in POD_NAMES]

Obj = dict[str, Any]
Expect = Reach | Callable[[str, int], Reach]


def ip(key: str) -> str:
    ns, name = key.split("/")
    return f"10.1.{NAMESPACES.index(ns) + 1}.{POD_NAMES.index(name) + 11}"


def reach(default: bool) -> Reach:
    return Reach(ALL, default)


def upstream_namespaces() -> list[Obj]:
    return [namespace(n, {"ns": n}) for n in NAMESPACES]


def upstream_pods() -> list[Obj]:
    serve = [(f"serve-{port}-{proto.lower()}", proto, port) for port in PORTS for proto in PROTOCOLS]
    return [
        pod(ns, p, {"pod": p}, ip(f"{ns}/{p}"), NODES[(i + j) % len(NODES)], serve)
        for i, ns in enumerate(NAMESPACES)
        for j, p in enumerate(POD_NAMES)
    ]


def _ident(obj: Obj) -> tuple[str, str | None, str]:
    kind = obj["kind"]
    return (kind, ns_of(obj) if kind in ("Pod", "NetworkPolicy") else None, name_of(obj))


class Cluster:
    """One Engine over the upstream cluster, and the node models its deltas build up."""

    def __init__(self, *policies: Obj, beta: bool = True) -> None:
        self.beta = beta
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        for obj in [*upstream_namespaces(), *upstream_pods(), *policies, *(node(n) for n in NODES)]:
            self.objects[_ident(obj)] = obj
        self.eng = Engine(beta_default_deny=beta)
        self.eng.load(
            namespaces=self.of("Namespace"),
            pods=self.of("Pod"),
            policies=self.of("NetworkPolicy"),
            nodes=self.of("Node"),
        )
        self.models: dict[str, NodeModel] = models_of(self.eng)

    def of(self, kind: str) -> list[Obj]:
        return [o for (k, _, _), o in self.objects.items() if k == kind]

    def get(self, kind: str, key: str) -> Obj:
        ns, _, name = key.rpartition("/")
        return self.objects[(kind, ns or None, name)]

    def upsert(self, obj: Obj) -> None:
        self.objects[_ident(obj)] = obj
        apply_deltas(self.models, self.eng.upsert(obj))

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        del self.objects[(kind, namespace, name)]
        apply_deltas(self.models, self.eng.delete(kind, namespace, name))

    def relabel(self, kind: str, key: str, labels: dict[str, str]) -> None:
        obj = self.get(kind, key)
        new = {**obj, "metadata": {**obj["metadata"], "labels": labels}}
        self.upsert(new)

    def check(self, expect: Expect, protocols: Iterable[str] = PROTOCOLS, ports: Iterable[int] = PORTS) -> None:
        """The full 9x9 matrix: the expectation, the oracle and the compiled models all agree."""
        protocols, ports = list(protocols), list(ports)
        pods = sorted(self.of("Pod"), key=key_of)
        want = {}
        for proto in protocols:
            for port in ports:
                table = expect if isinstance(expect, Reach) else expect(proto, port)
                for s in pods:
                    for d in pods:
                        want[(key_of(s), key_of(d), proto, port, 4)] = table.allows(key_of(s), key_of(d))
        oracle = Oracle(self.of("Namespace"), pods, self.of("NetworkPolicy"), beta=self.beta)
        diff = differences(oracle_verdicts(oracle, pods, protocols, ports), want)
        assert not diff, f"the spec oracle disagrees with the expected matrix:\n{diff}"
        diff = differences(model_verdicts(self.models, pods, protocols, ports), want)
        assert not diff, f"the compiled models (as built by deltas) disagree with the expected matrix:\n{diff}"
        # The delta-built models are exactly what the engine holds, and what a fresh engine computes.
        fresh = Engine(beta_default_deny=self.beta)
        fresh.load(
            namespaces=self.of("Namespace"),
            pods=self.of("Pod"),
            policies=self.of("NetworkPolicy"),
            nodes=self.of("Node"),
        )
        for n in set(self.models) | set(self.eng.nodes()) | set(fresh.nodes()):
            held = self.models.get(n, NodeModel(n))
            assert held == self.eng.model(n), f"deltas for {n} did not build the engine's model"
            assert held == fresh.model(n), f"deltas for {n} did not reach a full recompute"
            assert held.check() == [], f"model of {n} is inconsistent: {held.check()}"
