"""A naive evaluator of ClusterNetworkPolicy tiers, written from the API reference (v1alpha2).

It reads the typed policies `parse_cnp` returns (a policy it refuses is left out, alone) and
nothing else of the engine: selectors and CIDRs are matched here, clause by clause, and the
v1 NetworkPolicy tier is `spec_oracle.Oracle`. Slow and meant to be obviously correct:

* Each direction is decided on its own: the source pod's egress, the destination pod's ingress;
  a connection needs both. An egress Accept still leaves the destination's ingress to decide.
* Per direction: the Admin tier, then v1 NetworkPolicy, then the Baseline tier, then allow.
  Within a tier, policies whose subject selects the pod run by ascending priority, equal
  priorities by name (upstream leaves that undefined; Stockade's choice); their rules run in
  written order. The first rule that matches decides: Accept allows and Deny denies (final for
  the direction); Pass skips the rest of the tier. v1 NetworkPolicy decides (allow or deny)
  whenever it isolates the pod in that direction; otherwise evaluation goes on.
* Subjects and the namespaces/pods peers are endpoint pods only: running, with an IP, not host
  network. A host-network pod is never a subject: its traffic is judged only at the other end.
* Peers: namespaces = every pod of the matching namespaces; pods = the matching pods of the
  matching namespaces (no namespaceSelector: every namespace); nodes = the addresses in the
  matching nodes' status.addresses (host-network pods live there); networks = any address in a
  CIDR of its family, pods' and nodes' included.
* protocols absent: all traffic. A port entry: that protocol, number or inclusive range. A named
  port: the destination pod's container port of that name, with its own protocol (no pod: none).
* A rule with a peer or protocol entry of no known field fails closed (`Rule.unknown`): Accept
  matches nothing; Deny and Pass become "Deny all" (deny every connection that reaches them).
* A pod reaching its own address is always allowed.
* A pod's own node: the addresses of the node it runs on (its status.hostIP(s), its Node's
  status.addresses, the addresses of host-network pods on that node). v1 NetworkPolicy does not
  filter a pod's traffic to or from there ("traffic to and from the node where a Pod is running
  is always allowed"), but the tiers do not share that exemption: egress to the own node goes
  through the Admin tier as any egress, then, when v1 isolates the pod, is allowed (tier
  "NetworkPolicy": that tier is final, and its verdict there is allow), else the Baseline tier
  decides. Ingress from the own node is never filtered (tier "own node"): the node is no
  subject, and its packets to its pods never cross a pod's ingress rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine.cnp import (
    Action,
    ClusterNetworkPolicy,
    NamedPort,
    Namespaces,
    Networks,
    Nodes,
    Pods,
    PortRange,
    Rule,
    Tier,
)
from stockade.brain.engine.cnp_parse import parse_cnp
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.selectors import Selector

from .spec_oracle import Oracle as V1Oracle
from .spec_oracle import container_ports, family, is_endpoint, key_of, labels_of, name_of, ns_of, pod_ips

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    """One direction's verdict and who gave it."""

    allowed: bool
    tier: str  # "Admin", "NetworkPolicy", "Baseline", "default", "self", "not a subject", "own node"
    policy: str = ""  # the CNP that decided (its name)
    rule: int = -1  # the index of its rule that decided
    passed: tuple[str, ...] = ()  # "policy[index]" of every Pass that handed on


def selector_matches(sel: Selector, labels: Mapping[str, str]) -> bool:
    """Every requirement holds; no requirement matches everything."""
    for r in sel.requirements:
        if r.op == "In" and labels.get(r.key) not in r.values:
            return False
        if r.op == "NotIn" and r.key in labels and labels[r.key] in r.values:
            return False
        if r.op == "Exists" and r.key not in labels:
            return False
        if r.op == "DoesNotExist" and r.key in labels:
            return False
    return True


def node_addresses(node: Obj) -> list[str]:
    """The IPs of a node's status.addresses (a Hostname entry is not one)."""
    out = []
    for a in (node.get("status") or {}).get("addresses") or []:
        try:
            out.append(str(ipaddress.ip_address(a.get("address"))))
        except ValueError:
            continue
    return out


@dataclass
class CNPOracle:
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)  # v1 NetworkPolicies
    cnps: list[dict[str, Any]] = field(default_factory=list)
    beta: bool = True

    def __post_init__(self) -> None:
        self.v1 = V1Oracle(self.namespaces, self.pods, self.policies, self.beta)
        self.accepted: list[ClusterNetworkPolicy] = []
        self.rejected: dict[str, PolicyError] = {}
        for obj in self.cnps:
            try:
                self.accepted.append(parse_cnp(obj))
            except PolicyError as e:
                self.rejected[name_of(obj)] = e

    # ------------------------------------------------------------ who is who

    def endpoint_at(self, ip: str) -> dict[str, Any] | None:
        """The endpoint pod (not host network) that holds ``ip``, if any."""
        for p in self.pods:
            if is_endpoint(p) and ip in pod_ips(p):
                return p
        return None

    def own_node_ips(self, pod: Obj) -> set[str]:
        """The addresses of the node ``pod`` runs on: its status.hostIP(s), the Node's
        status.addresses, and the addresses of the host-network pods on it (they are the node's)."""
        status = pod.get("status") or {}
        listed = [status.get("hostIP"), *(e.get("ip") for e in status.get("hostIPs") or [])]
        out = {str(ipaddress.ip_address(ip)) for ip in listed if ip}
        node = pod["spec"].get("nodeName")
        if not node:
            return out
        for n in self.nodes:
            if name_of(n) == node:
                out.update(node_addresses(n))
        for p in self.pods:
            if p["spec"].get("hostNetwork") and p["spec"].get("nodeName") == node:
                out.update(_listed(p))
        return out

    def subject_selects(self, cnp: ClusterNetworkPolicy, pod: Obj) -> bool:
        return is_endpoint(pod) and self._selection_matches(cnp.subject, pod)

    def _selection_matches(self, sel: Namespaces | Pods, pod: Obj) -> bool:
        if not selector_matches(sel.namespace_selector, self.v1.ns_labels(ns_of(pod))):
            return False
        return isinstance(sel, Namespaces) or selector_matches(sel.pod_selector, labels_of(pod))

    def _peer_matches(self, peer: Namespaces | Pods | Nodes | Networks, ip: str, pod: Obj | None) -> bool:
        if isinstance(peer, Networks):
            addr = ipaddress.ip_address(ip)
            return any(addr.version == (net := ipaddress.ip_network(c)).version and addr in net for c in peer.cidrs)
        if isinstance(peer, Nodes):
            return any(
                selector_matches(peer.node_selector, labels_of(n)) and ip in node_addresses(n) for n in self.nodes
            )
        return pod is not None and is_endpoint(pod) and self._selection_matches(peer, pod)

    @staticmethod
    def _port_matches(rule: Rule, protocol: str, port: int, dst: Obj | None) -> bool:
        if rule.protocols is None:
            return True
        for p in rule.protocols:
            if isinstance(p, PortRange):
                if p.protocol.value == protocol and p.start <= port <= p.end:
                    return True
            elif isinstance(p, NamedPort) and dst is not None and is_endpoint(dst):
                named = container_ports(dst)
                if any(n == p.name and pr == protocol and num == port for n, pr, num in named):
                    return True
        return False

    # ------------------------------------------------------------ tiers

    def _tier(
        self,
        tier: Tier,
        direction: str,
        subject: Obj,
        peer_ip: str,
        peer_pod: Obj | None,
        dst: Obj | None,
        protocol: str,
        port: int,
        passed: list[str],
    ) -> Decision | None:
        """The tier's verdict, or None when no rule decides (nothing matched, or a Pass)."""
        chosen = [c for c in self.accepted if c.tier == tier and self.subject_selects(c, subject)]
        for cnp in sorted(chosen, key=lambda c: (c.priority, c.name)):
            for rule in cnp.ingress if direction == "ingress" else cnp.egress:
                if rule.unknown:  # fails closed
                    if rule.action == Action.ACCEPT:
                        continue
                    return Decision(False, tier.value, cnp.name, rule.index, tuple(passed))
                if not any(self._peer_matches(p, peer_ip, peer_pod) for p in rule.peers):
                    continue
                if not self._port_matches(rule, protocol, port, dst):
                    continue
                if rule.action == Action.PASS:
                    passed.append(f"{cnp.name}[{rule.index}]")
                    return None
                return Decision(rule.action == Action.ACCEPT, tier.value, cnp.name, rule.index, tuple(passed))
        return None

    def egress(self, src: Obj, dst_ip: str, protocol: str, port: int, exempt_self: bool = True) -> Decision:
        """The source pod's egress verdict for a new connection to ``dst_ip`` (``exempt_self``
        False: a pod reaching itself is judged like any connection, as a Service hairpin is)."""
        if not is_endpoint(src):
            return Decision(True, "not a subject")
        dst = self.endpoint_at(dst_ip)
        if exempt_self and dst is not None and key_of(dst) == key_of(src):
            return Decision(True, "self")
        passed: list[str] = []
        found = self._tier(Tier.ADMIN, "egress", src, dst_ip, dst, dst, protocol, port, passed)
        if found is not None:
            return found
        if self.v1.egress_isolated(src) and dst_ip in self.own_node_ips(src):
            return Decision(True, "NetworkPolicy", passed=tuple(passed))  # v1's own-node exemption
        if self.v1.egress_isolated(src):
            allowed = self.v1.egress_allows(src, dst_ip, dst, protocol, port)
            return Decision(allowed, "NetworkPolicy", passed=tuple(passed))
        found = self._tier(Tier.BASELINE, "egress", src, dst_ip, dst, dst, protocol, port, passed)
        return found if found is not None else Decision(True, "default", passed=tuple(passed))

    def ingress(self, dst: Obj, src_ip: str, protocol: str, port: int, exempt_self: bool = True) -> Decision:
        """The destination pod's ingress verdict for a new connection from ``src_ip``."""
        if not is_endpoint(dst):
            return Decision(True, "not a subject")
        src = self.endpoint_at(src_ip)
        if exempt_self and src is not None and key_of(src) == key_of(dst):
            return Decision(True, "self")
        if src_ip in self.own_node_ips(dst):
            return Decision(True, "own node")
        passed: list[str] = []
        found = self._tier(Tier.ADMIN, "ingress", dst, src_ip, src, dst, protocol, port, passed)
        if found is not None:
            return found
        if self.v1.ingress_isolated(dst):
            allowed = self.v1.ingress_allows(dst, src_ip, src, protocol, port)
            return Decision(allowed, "NetworkPolicy", passed=tuple(passed))
        found = self._tier(Tier.BASELINE, "ingress", dst, src_ip, src, dst, protocol, port, passed)
        return found if found is not None else Decision(True, "default", passed=tuple(passed))

    def decide(self, src: Obj | str, dst: Obj | str, protocol: str, port: int) -> tuple[Decision, Decision]:
        """(egress, ingress) for a new connection from a pod or an address to a pod or an address.

        A pod's address is its ``status.podIP`` (a host-network pod's is its node's); an
        address given as text is judged as whoever holds it (a pod, a node, or nobody)."""
        dst_ip = dst if isinstance(dst, str) else self._address(dst)
        src_ip = src if isinstance(src, str) else self._address(src, family(dst_ip))
        src_pod = self.endpoint_at(src_ip) if isinstance(src, str) else src
        dst_pod = self.endpoint_at(dst_ip) if isinstance(dst, str) else dst
        out = Decision(True, "not a subject") if src_pod is None else self.egress(src_pod, dst_ip, protocol, port)
        into = Decision(True, "not a subject") if dst_pod is None else self.ingress(dst_pod, src_ip, protocol, port)
        return out, into

    def allowed(self, src: Obj | str, dst: Obj | str, protocol: str, port: int) -> bool:
        out, into = self.decide(src, dst, protocol, port)
        return out.allowed and into.allowed

    @staticmethod
    def _address(pod: Obj, version: int | None = None) -> str:
        for ip in _listed(pod):
            if version is None or family(ip) == version:
                return ip
        raise AssertionError(f"{key_of(pod)} has no IPv{version or ''} address")


def _listed(pod: Obj) -> Iterable[str]:
    """A pod's addresses as its status lists them (host-network pods included)."""
    status = pod.get("status") or {}
    listed = [e.get("ip") for e in status.get("podIPs") or []] or [status.get("podIP")]
    return [str(ipaddress.ip_address(ip)) for ip in listed if ip]
