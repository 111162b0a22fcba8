"""The lab's network plan: a pure function of the node count, the pods, the IP families and the
topology.

Layout (all inside the lab's own network namespaces; nothing touches the host's network). Each
family the lab has (``--ip-family ipv4|ipv6|dual``) gets the same layout, and a host has the same
host number in both (``10.244.1.5`` and ``fd00:10:244:1::5``):

* ``<prefix>fabric`` holds a bridge joining the nodes: node *i* (1-based) is ``10.240.0.(10+i)/24``
  and ``fd00:10:240::<hex(10+i)>/64`` on it, via its ``eth0``.
* Node *i* owns the pod ranges ``10.244.i.0/24`` and ``fd00:10:244:<hex(i)>::/64``, gateways
  ``10.244.i.1`` and ``fd00:10:244:<hex(i)>::1``. Each pod is its own namespace with an ``eth0``.
  - ``routed`` (the default, as Calico does it): the pod's addresses are host routes (/32, /128)
    and its default route points at the gateway, which the node holds on every pod-facing veth.
    So pod-to-pod traffic, even on one node, is routed by the node, through its forward hook.
  - ``bridge`` (as weave, flannel and the bridge CNI plugin do it): the node's pod-facing veths
    are ports of one Linux bridge holding the gateways; pods hold their range's prefix, so two
    pods of one node talk across the bridge, seen by the rules only through br_netfilter.
* Nodes route each other's pod ranges via the fabric, and forward.
* A host-network pod (``spec.hostNetwork: true``) has no namespace, link or address of its own: it
  is its node's namespace, at its node's addresses, as the kubelet runs one. It takes no host
  number, and two of them on one node cannot declare the same protocol and port.
* ``<prefix>external`` is a host outside the cluster (``10.239.0.2`` / ``fd00:10:239::2``), linked
  to the first node, which every other node routes it through.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_NODES = 200
IP_FAMILIES = {"ipv4": ("ipv4",), "ipv6": ("ipv6",), "dual": ("ipv4", "ipv6")}  # --ip-family -> families
TOPOLOGIES = ("routed", "bridge")
POD_BRIDGE = "cni0"  # in each node's namespace, with the bridge topology

# Per family: the fabric's network, the base of the nodes' pod ranges and their prefix length,
# the external host's network (its address is host 2, its gateway host 1).
_FABRIC = {"ipv4": "10.240.0.0/24", "ipv6": "fd00:10:240::/64"}
_EXTERNAL_NET = {"ipv4": "10.239.0.0/24", "ipv6": "fd00:10:239::/64"}
NODE_NET = _FABRIC["ipv4"]
EXTERNAL_IP = "10.239.0.2"
EXTERNAL_GW = "10.239.0.1"
EXTERNAL_IP6 = "fd00:10:239::2"
EXTERNAL_GW6 = "fd00:10:239::1"


class PlanError(ValueError):
    pass


def family_of(ip: str) -> str:
    return "ipv6" if ":" in ip else "ipv4"


def pod_range(family: str, index: int) -> str:
    return f"10.244.{index}.0/24" if family == "ipv4" else f"fd00:10:244:{index:x}::/64"


def prefix_len(family: str) -> int:
    """The prefix length of a pod range, a fabric address and (bridge) a pod's address."""
    return 24 if family == "ipv4" else 64


def host_len(family: str) -> int:
    """The prefix length of one host: a routed pod's address, a gateway on a veth."""
    return 32 if family == "ipv4" else 128


@dataclass(frozen=True)
class NodePlan:
    name: str  # the Kubernetes node name
    index: int  # 1-based
    netns: str
    ips: tuple[str, ...]  # on the fabric bridge, one per family of the lab (IPv4 first)
    pod_cidrs: tuple[str, ...]  # same order
    gateways: tuple[str, ...]  # the node's address facing its pods (veths, or the pod bridge), same order
    fabric_veth: str  # the node's link's name on the fabric side

    @property
    def ip(self) -> str:
        return self.ips[0]

    @property
    def pod_cidr(self) -> str:
        return self.pod_cidrs[0]

    @property
    def gateway(self) -> str:
        return self.gateways[0]


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    ips: tuple[str, ...]  # one per family of the lab, IPv4 first; the same host number in each
    netns: str
    veth: str  # the node side of the pod's link ("" for a host-network pod: it has none)
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[str, int]] = field(default_factory=list)  # declared (protocol, port)
    host_network: bool = False  # spec.hostNetwork: ips and netns are its node's

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        """The first family's address (IPv4 in a dual-stack lab), as ``status.podIP``."""
        return self.ips[0]

    def ip_of(self, family: str) -> str | None:
        return next((ip for ip in self.ips if family_of(ip) == family), None)


@dataclass(frozen=True)
class ExternalPlan:
    netns: str
    ips: tuple[str, ...] = (EXTERNAL_IP,)
    gateways: tuple[str, ...] = (EXTERNAL_GW,)  # on the node side of its link
    via_node: str = "node-1"
    veth: str = "ext0"  # on the node side

    @property
    def ip(self) -> str:
        return self.ips[0]

    @property
    def gateway(self) -> str:
        return self.gateways[0]

    def ip_of(self, family: str) -> str | None:
        return next((ip for ip in self.ips if family_of(ip) == family), None)


@dataclass(frozen=True)
class Plan:
    prefix: str
    fabric_netns: str
    nodes: list[NodePlan]
    pods: list[PodPlan]
    external: ExternalPlan
    families: tuple[str, ...] = ("ipv4",)  # IPv4 first in a dual-stack lab
    topology: str = "routed"  # routed | bridge

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise PlanError(f"no node {name!r} in this lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def pod(self, key: str) -> PodPlan | None:
        return next((p for p in self.pods if p.key == key), None)

    @property
    def ip_family(self) -> str:
        """The --ip-family the lab was built with."""
        return next(k for k, v in IP_FAMILIES.items() if v == self.families)

    def with_pods(self, pods: list[PodPlan]) -> Plan:
        return Plan(self.prefix, self.fabric_netns, self.nodes, pods, self.external, self.families, self.topology)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Plan:
        def tuples(d: dict[str, Any], *keys: str) -> dict[str, Any]:
            return {**d, **{k: tuple(d[k]) for k in keys}}

        return Plan(
            prefix=data["prefix"],
            fabric_netns=data["fabric_netns"],
            nodes=[NodePlan(**tuples(n, "ips", "pod_cidrs", "gateways")) for n in data["nodes"]],
            pods=[PodPlan(**{**tuples(p, "ips"), "ports": [tuple(x) for x in p["ports"]]}) for p in data["pods"]],
            external=ExternalPlan(**tuples(data["external"], "ips", "gateways")),
            families=tuple(data["families"]),
            topology=data["topology"],
        )


@dataclass(frozen=True)
class PodRequest:
    """What placement needs to know about a pod."""

    namespace: str
    name: str
    labels: dict[str, str]
    ports: list[tuple[str, int]]
    node_name: str | None = None  # spec.nodeName, honoured when set
    host_network: bool = False  # spec.hostNetwork


def node_name(index: int) -> str:
    return f"node-{index}"


def pod_netns(prefix: str, namespace: str, name: str) -> str:
    # Namespace names cannot contain dots, so the first dot separates them unambiguously.
    return f"{prefix}pod.{namespace}.{name}"


def pod_veth(namespace: str, name: str) -> str:
    # Interface names are at most 15 bytes: a digest of the pod's key, stable across runs.
    return "v" + hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest()[:10]


def _host(net: str, number: int) -> str:
    return str(ipaddress.ip_network(net).network_address + number)


def families_for(ip_family: str) -> tuple[str, ...]:
    try:
        return IP_FAMILIES[ip_family]
    except KeyError:
        raise PlanError(f"--ip-family must be one of {', '.join(IP_FAMILIES)}, not {ip_family!r}") from None


def plan_nodes(prefix: str, count: int, families: tuple[str, ...] = ("ipv4",)) -> list[NodePlan]:
    if not 1 <= count <= MAX_NODES:
        raise PlanError(f"--nodes must be between 1 and {MAX_NODES}, not {count}")
    return [
        NodePlan(
            name=node_name(i),
            index=i,
            netns=f"{prefix}{node_name(i)}",
            ips=tuple(_host(_FABRIC[f], 10 + i) for f in families),
            pod_cidrs=tuple(pod_range(f, i) for f in families),
            gateways=tuple(_host(pod_range(f, i), 1) for f in families),
            fabric_veth=f"n{i}",
        )
        for i in range(1, count + 1)
    ]


def empty_plan(prefix: str, nodes: int, ip_family: str = "ipv4", topology: str = "routed") -> Plan:
    families = families_for(ip_family)
    if topology not in TOPOLOGIES:
        raise PlanError(f"--topology must be one of {', '.join(TOPOLOGIES)}, not {topology!r}")
    node_plans = plan_nodes(prefix, nodes, families)
    external = ExternalPlan(
        netns=f"{prefix}external",
        ips=tuple(_host(_EXTERNAL_NET[f], 2) for f in families),
        gateways=tuple(_host(_EXTERNAL_NET[f], 1) for f in families),
        via_node=node_plans[0].name,
    )
    return Plan(
        prefix=prefix,
        fabric_netns=f"{prefix}fabric",
        nodes=node_plans,
        pods=[],
        external=external,
        families=families,
        topology=topology,
    )


def _free_host(node: NodePlan, taken: set[int]) -> int:
    """The lowest free host number of the node's pod range (1 is the gateway). One number serves
    every family, so it is free only if free in all; IPv4's /24 is the smaller range."""
    size = ipaddress.ip_network(node.pod_cidr).num_addresses
    for host in range(2, min(size, 256) - 1):  # never the IPv4 broadcast address
        if host not in taken:
            return host
    raise PlanError(f"{node.name}'s pod range {', '.join(node.pod_cidrs)} is full")


def _host_number(pod: PodPlan, node: NodePlan) -> int:
    return int(ipaddress.ip_address(pod.ip)) - int(ipaddress.ip_network(node.pod_cidr).network_address)


Holders = dict[tuple[str, str, int], str]  # (node, protocol, port) -> the host-network pod listening there


def _port_holders(pods: list[PodPlan]) -> Holders:
    return {(p.node, proto, port): p.key for p in pods if p.host_network for proto, port in p.ports}


def _check_host_ports(holders: Holders, key: str, node: str, ports: list[tuple[str, int]]) -> None:
    """A host-network pod's ports are its node's: refused where another one holds them, as the
    kubelet refuses a host-port conflict."""
    for proto, port in ports:
        other = holders.get((node, proto, port))
        if other and other != key:
            raise PlanError(
                f"host-network pods {other} and {key} both declare {proto}/{port} on {node}: "
                "a node's port serves one pod (the kubelet refuses the second)"
            )
        holders[node, proto, port] = key


def place(plan: Plan, requests: list[PodRequest]) -> Plan:
    """The plan with the requested pods added (already-planned pods are kept as they are).

    A pod with ``node_name`` goes there; others go, in order, to the node holding the fewest
    pods (the lowest-numbered on a tie), so placement is deterministic and spread out. A pod
    gets the lowest host number free on its node, the same in every family; a host-network pod
    gets its node's addresses and namespace instead. Nothing is placed if any request fails.
    """
    pods = list(plan.pods)
    keys = {p.key for p in pods}
    taken: dict[str, set[int]] = {n.name: set() for n in plan.nodes}
    load = {n.name: 0 for n in plan.nodes}
    for p in pods:
        load[p.node] += 1
        if not p.host_network:
            taken[p.node].add(_host_number(p, plan.node(p.node)))
    holders = _port_holders(pods)
    for req in requests:
        key = f"{req.namespace}/{req.name}"
        if key in keys:
            raise PlanError(f"pod {key} is declared twice")
        node = plan.node(req.node_name) if req.node_name else min(plan.nodes, key=lambda n: (load[n.name], n.index))
        keys.add(key)
        load[node.name] += 1
        if req.host_network:
            _check_host_ports(holders, key, node.name, req.ports)
            ips, netns, veth = node.ips, node.netns, ""
        else:
            host = _free_host(node, taken[node.name])
            taken[node.name].add(host)
            ips = tuple(_host(cidr, host) for cidr in node.pod_cidrs)
            netns, veth = pod_netns(plan.prefix, req.namespace, req.name), pod_veth(req.namespace, req.name)
        pods.append(
            PodPlan(
                namespace=req.namespace,
                name=req.name,
                node=node.name,
                ips=ips,
                netns=netns,
                veth=veth,
                labels=dict(req.labels),
                ports=list(req.ports),
                host_network=req.host_network,
            )
        )
    return plan.with_pods(pods)


def without(plan: Plan, keys: set[str]) -> Plan:
    return plan.with_pods([p for p in plan.pods if p.key not in keys])


def relabel(plan: Plan, labels: dict[str, dict[str, str]]) -> Plan:
    pods = [
        PodPlan(**{**asdict(p), "ips": p.ips, "labels": labels[p.key], "ports": p.ports}) if p.key in labels else p
        for p in plan.pods
    ]
    return plan.with_pods(pods)
