"""The lab's network plan: a pure function of the node count and the pods.

Layout (all inside the lab's own network namespaces; nothing touches the host's network):

* ``<prefix>fabric`` holds a bridge joining the nodes: node *i* (1-based) is ``10.240.0.(10+i)/24``
  on it, via its ``eth0``.
* Node *i* owns the pod range ``10.244.i.0/24``. Each pod is its own namespace with ``eth0``
  holding a /32 address and a default route via the node (``10.244.i.1``, which the node holds on
  every pod-facing veth). So pod-to-pod traffic, even on one node, crosses the node's forward hook,
  where the agent's rules are.
* Nodes route each other's pod ranges via the bridge, and forward.
* ``<prefix>external`` is a host outside the cluster (``10.239.0.2``), linked to the first node,
  which every other node routes it through.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_NODES = 200
NODE_NET = "10.240.0.0/24"
EXTERNAL_IP = "10.239.0.2"
EXTERNAL_GW = "10.239.0.1"


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class NodePlan:
    name: str  # the Kubernetes node name
    index: int  # 1-based
    netns: str
    ip: str  # on the fabric bridge
    pod_cidr: str
    gateway: str  # the node's address on its pod-facing veths
    fabric_veth: str  # the node's link's name on the fabric side


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    veth: str  # the node side of the pod's link
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[str, int]] = field(default_factory=list)  # declared (protocol, port)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ExternalPlan:
    netns: str
    ip: str = EXTERNAL_IP
    gateway: str = EXTERNAL_GW
    via_node: str = "node-1"
    veth: str = "ext0"  # on the node side


@dataclass(frozen=True)
class Plan:
    prefix: str
    fabric_netns: str
    nodes: list[NodePlan]
    pods: list[PodPlan]
    external: ExternalPlan

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise PlanError(f"no node {name!r} in this lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def pod(self, key: str) -> PodPlan | None:
        return next((p for p in self.pods if p.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Plan:
        return Plan(
            prefix=data["prefix"],
            fabric_netns=data["fabric_netns"],
            nodes=[NodePlan(**n) for n in data["nodes"]],
            pods=[PodPlan(**{**p, "ports": [tuple(x) for x in p["ports"]]}) for p in data["pods"]],
            external=ExternalPlan(**data["external"]),
        )


@dataclass(frozen=True)
class PodRequest:
    """What placement needs to know about a pod."""

    namespace: str
    name: str
    labels: dict[str, str]
    ports: list[tuple[str, int]]
    node_name: str | None = None  # spec.nodeName, honoured when set


def node_name(index: int) -> str:
    return f"node-{index}"


def pod_netns(prefix: str, namespace: str, name: str) -> str:
    # Namespace names cannot contain dots, so the first dot separates them unambiguously.
    return f"{prefix}pod.{namespace}.{name}"


def pod_veth(namespace: str, name: str) -> str:
    # Interface names are at most 15 bytes: a digest of the pod's key, stable across runs.
    return "v" + hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest()[:10]


def plan_nodes(prefix: str, count: int) -> list[NodePlan]:
    if not 1 <= count <= MAX_NODES:
        raise PlanError(f"--nodes must be between 1 and {MAX_NODES}, not {count}")
    base = ipaddress.ip_network(NODE_NET)
    return [
        NodePlan(
            name=node_name(i),
            index=i,
            netns=f"{prefix}{node_name(i)}",
            ip=str(base.network_address + 10 + i),
            pod_cidr=f"10.244.{i}.0/24",
            gateway=f"10.244.{i}.1",
            fabric_veth=f"n{i}",
        )
        for i in range(1, count + 1)
    ]


def empty_plan(prefix: str, nodes: int) -> Plan:
    node_plans = plan_nodes(prefix, nodes)
    return Plan(
        prefix=prefix,
        fabric_netns=f"{prefix}fabric",
        nodes=node_plans,
        pods=[],
        external=ExternalPlan(netns=f"{prefix}external", via_node=node_plans[0].name),
    )


def _free_ip(node: NodePlan, taken: set[str]) -> str:
    net = ipaddress.ip_network(node.pod_cidr)
    for host in list(net.hosts())[1:]:  # .1 is the node's gateway address
        if str(host) not in taken:
            return str(host)
    raise PlanError(f"{node.name}'s pod range {node.pod_cidr} is full")


def place(plan: Plan, requests: list[PodRequest]) -> Plan:
    """The plan with the requested pods added (already-planned pods are kept as they are).

    A pod with ``node_name`` goes there; others go, in order, to the node holding the fewest
    pods (the lowest-numbered on a tie), so placement is deterministic and spread out.
    """
    pods = list(plan.pods)
    keys = {p.key for p in pods}
    taken = {p.ip for p in pods}
    load = {n.name: 0 for n in plan.nodes}
    for p in pods:
        load[p.node] += 1
    for req in requests:
        key = f"{req.namespace}/{req.name}"
        if key in keys:
            raise PlanError(f"pod {key} is declared twice")
        node = plan.node(req.node_name) if req.node_name else min(plan.nodes, key=lambda n: (load[n.name], n.index))
        ip = _free_ip(node, taken)
        taken.add(ip)
        keys.add(key)
        load[node.name] += 1
        pods.append(
            PodPlan(
                namespace=req.namespace,
                name=req.name,
                node=node.name,
                ip=ip,
                netns=pod_netns(plan.prefix, req.namespace, req.name),
                veth=pod_veth(req.namespace, req.name),
                labels=dict(req.labels),
                ports=list(req.ports),
            )
        )
    return Plan(plan.prefix, plan.fabric_netns, plan.nodes, pods, plan.external)


def without(plan: Plan, keys: set[str]) -> Plan:
    return Plan(plan.prefix, plan.fabric_netns, plan.nodes, [p for p in plan.pods if p.key not in keys], plan.external)


def relabel(plan: Plan, labels: dict[str, dict[str, str]]) -> Plan:
    pods = [
        PodPlan(**{**asdict(p), "labels": labels[p.key], "ports": p.ports}) if p.key in labels else p for p in plan.pods
    ]
    return Plan(plan.prefix, plan.fabric_netns, plan.nodes, pods, plan.external)
