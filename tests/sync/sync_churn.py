"""Random churn of Kubernetes objects (namespaces, pods, labels, policies) for an Engine."""

from __future__ import annotations

import copy
import random
from typing import Any

Obj = dict[str, Any]
APPS = ["web", "db", "cache", "api", "batch"]
TEAMS = ["red", "blue", "green"]


class ClusterChurn:
    def __init__(self, nodes: list[str], seed: int, namespaces: int = 6, pods: int = 150, policies: int = 15):
        self.rng = random.Random(seed)
        self.nodes = nodes
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        self._ip = 0
        self._n = 0
        self.pending: list[tuple[str, str | None, str]] = []
        for n in nodes:
            self.objects[("Node", None, n)] = {"kind": "Node", "metadata": {"name": n}}
        for i in range(namespaces):
            self._put(self._namespace(f"ns-{i}"))
        for _ in range(pods):
            self._put(self._pod())
        for _ in range(policies):
            self._put(self._policy())

    # ---- object makers -------------------------------------------------------------------

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n}"

    def _namespace(self, name: str) -> Obj:
        labels = {"team": self.rng.choice(TEAMS)}
        meta: Obj = {"name": name, "labels": labels}
        if self.rng.random() < 0.15:
            meta["annotations"] = {"net.beta.kubernetes.io/network-policy": '{"ingress":{"isolation":"DefaultDeny"}}'}
        return {"kind": "Namespace", "apiVersion": "v1", "metadata": meta}

    def _namespaces(self) -> list[str]:
        return sorted(name for kind, _, name in self.objects if kind == "Namespace")

    def _pod(self) -> Obj:
        self._ip += 1
        ns = self.rng.choice(self._namespaces())
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": self._name("pod"), "namespace": ns, "labels": {"app": self.rng.choice(APPS)}},
            "spec": {
                "nodeName": self.rng.choice(self.nodes),
                "containers": [
                    {
                        "name": "c",
                        "ports": [{"name": "http", "containerPort": self.rng.choice([80, 8080]), "protocol": "TCP"}],
                    }
                ],
            },
            "status": {
                "phase": "Running",
                "podIP": f"10.{100 + self._ip // 65536}.{self._ip // 256 % 256}.{self._ip % 256}",
            },
        }

    def _peer(self) -> Obj:
        r = self.rng.random()
        if r < 0.37:
            return {"podSelector": {"matchLabels": {"app": self.rng.choice(APPS)}}}
        if r < 0.67:
            return {
                "namespaceSelector": {"matchLabels": {"team": self.rng.choice(TEAMS)}},
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": self.rng.sample(APPS, 2)}]
                },
            }
        if r < 0.85:
            return {"namespaceSelector": {}}
        return {"ipBlock": {"cidr": "10.100.0.0/16", "except": ["10.100.1.0/24"]}}

    def _ports(self) -> list[Obj]:
        return self.rng.choice(
            [
                [{"protocol": "TCP", "port": 80}],
                [{"port": "http"}],
                [{"protocol": "TCP", "port": 8000, "endPort": 8100}, {"protocol": "UDP", "port": 53}],
                [],
            ]
        )

    def _policy(self, ns: str | None = None, name: str | None = None) -> Obj:
        types = self.rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        spec: Obj = {
            "podSelector": {"matchLabels": {"app": self.rng.choice(APPS)}} if self.rng.random() < 0.8 else {},
            "policyTypes": types,
        }
        for t in types:
            rules = []
            for _ in range(self.rng.randrange(0, 3)):
                rule: Obj = {
                    ("from" if t == "Ingress" else "to"): [self._peer() for _ in range(self.rng.randrange(1, 3))]
                }
                ports = self._ports()
                if ports:
                    rule["ports"] = ports
                rules.append(rule)
            spec[t.lower()] = rules
        return {
            "kind": "NetworkPolicy",
            "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": name or self._name("np"), "namespace": ns or self.rng.choice(self._namespaces())},
            "spec": spec,
        }

    # ---- churn ---------------------------------------------------------------------------

    def _put(self, obj: Obj) -> Obj:
        m = obj["metadata"]
        self.objects[(obj["kind"], m.get("namespace"), m["name"])] = obj
        return obj

    def _pick(self, kind: str) -> Obj | None:
        keys = sorted((k for k in self.objects if k[0] == kind), key=str)
        return self.objects[self.rng.choice(keys)] if keys else None

    def step(self) -> tuple[str, Any]:
        """One random change, applied to ``objects``: ("upsert", obj) or ("delete", (kind, ns, name)).

        Deleting a namespace comes as the deletes of its objects first, one per step, as the
        API server's garbage collection does."""
        if self.pending:
            key = self.pending.pop(0)
            del self.objects[key]
            return "delete", key
        r = self.rng.random()
        if r < 0.25:
            return "upsert", self._put(self._pod())
        if r < 0.37:
            pod = self._pick("Pod")
            if pod is not None:
                key = ("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])
                del self.objects[key]
                return "delete", key
        if r < 0.57:
            pod = self._pick("Pod")
            if pod is not None:
                pod = copy.deepcopy(pod)
                pod["metadata"]["labels"] = {"app": self.rng.choice(APPS)}
                return "upsert", self._put(pod)
        if r < 0.67:
            ns = self._pick("Namespace")
            if ns is not None:
                ns = copy.deepcopy(ns)
                ns["metadata"]["labels"] = {"team": self.rng.choice(TEAMS)}
                return "upsert", self._put(ns)
        if r < 0.85:
            old = self._pick("NetworkPolicy")
            if old is not None and self.rng.random() < 0.5:
                m = old["metadata"]
                return "upsert", self._put(self._policy(m["namespace"], m["name"]))
            return "upsert", self._put(self._policy())
        if r < 0.91:
            pol = self._pick("NetworkPolicy")
            if pol is not None:
                key = ("NetworkPolicy", pol["metadata"]["namespace"], pol["metadata"]["name"])
                del self.objects[key]
                return "delete", key
        if r < 0.98:
            name = self._name("ns")
            return "upsert", self._put(self._namespace(name))
        # Delete a namespace and everything in it (what the API server does).
        ns = self._pick("Namespace")
        if ns is None:
            return self.step()
        name = ns["metadata"]["name"]
        self.pending = [k for k in sorted(self.objects, key=str) if k[1] == name] + [("Namespace", None, name)]
        return self.step()

    def by_kind(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {"Namespace": [], "Pod": [], "NetworkPolicy": [], "Node": []}
        for (kind, _, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0])):
            out[kind].append(obj)
        return out
