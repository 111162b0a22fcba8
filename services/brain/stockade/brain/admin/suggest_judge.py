"""Which side of a connection blocks it, and why: what `stockade suggest` has to change.

A flow names its ends as pods (``ns/name``) or addresses (a source outside the cluster, or an
egress destination outside it). It is judged as the compiled node models decide it, over every
IP family its ends share: blocked when any family is. Each blocking side (the source's egress,
the destination's ingress) says whether a NetworkPolicy can open it and, when not, why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stockade.brain.admin.endpoints import address, find_endpoint
from stockade.brain.admin.reachability import own_node, shared_versions
from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo
from stockade.model import Direction, NodeModel, Protocol, Tier
from stockade.model.evaluate import decide, ip_version


@dataclass(frozen=True, order=True)
class Flow:
    src: str  # "ns/pod" or an address
    dst: str  # "ns/pod" or an address (an egress to outside the cluster)
    port: int
    protocol: str = "TCP"

    def text(self) -> str:
        return f"{self.src} -> {self.dst} {self.protocol}/{self.port}"

    def as_json(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "port": self.port, "protocol": self.protocol}


MAX_REF = 317  # a namespace (63), "/", a pod name (253)


def flow(src: str, dst: str, port: int, protocol: str = "TCP") -> Flow:
    """A flow as asked for, checked: each end named, the port a port, the protocol one of ours."""
    for what, ref in (("from", src), ("to", dst)):
        if not ref or len(ref) > MAX_REF or not ref.isprintable() or ref != ref.strip():
            raise ValueError(f"{what}: {ref[:40]!r}: name a pod as namespace/name, or give an IP address")
    if not 1 <= port <= 65535:
        raise ValueError(f"{src} -> {dst}: port {port}: must be from 1 to 65535")
    proto = (protocol or "TCP").upper()
    if proto not in ("TCP", "UDP", "SCTP"):
        raise ValueError(f"{src} -> {dst}: protocol {protocol!r}: one of TCP, UDP, SCTP")
    return Flow(src, dst, port, proto)


class FlowError(ValueError):
    """A flow that cannot be judged as written (no such pod, two addresses, no shared family)."""


End = PodInfo | str  # a pod (an endpoint) or an address outside the cluster's pods


@dataclass(frozen=True)
class Blocked:
    """One side that blocks the flow over one family."""

    direction: Direction
    pod: PodInfo  # the side's pod: the source (egress) or the destination (ingress)
    peer: End  # the other end
    family: int
    # "" when an ingress (egress) rule in a NetworkPolicy opens it; else why none can.
    unfixable: str = ""
    policies: tuple[str, ...] = ()  # the NetworkPolicies isolating the side ("ns/name")
    beta: bool = False  # isolated (also) by its namespace's DefaultDeny annotation


def resolve(engine: Engine, ref: str) -> End:
    """``ref`` as an end: the endpoint pod it names, or an address that is no pod's."""
    addr = address(ref)
    if addr is None:
        return find_endpoint(engine, ref, FlowError)
    owner = engine.pod_by_ip(addr)
    return find_endpoint(engine, owner, FlowError) if owner is not None else addr


def _versions(src: End, dst: End) -> list[int]:
    if isinstance(src, PodInfo) and isinstance(dst, PodInfo):
        return shared_versions(src, dst)
    if isinstance(src, str) and isinstance(dst, str):
        return []
    pod, ip = (src, dst) if isinstance(src, PodInfo) else (dst, src)
    assert isinstance(pod, PodInfo) and isinstance(ip, str)
    v = ip_version(ip)
    return [v] if pod.address(v) else []


def _ip(end: End, version: int) -> str:
    return end if isinstance(end, str) else str(end.address(version))


def blocked_sides(engine: Engine, models: dict[str, NodeModel], flow: Flow) -> list[Blocked]:
    """Every side blocking ``flow`` over each family its ends share (empty: allowed)."""
    src, dst = resolve(engine, flow.src), resolve(engine, flow.dst)
    if isinstance(src, str) and isinstance(dst, str):
        raise FlowError(f"{flow.text()}: neither end is a pod of the cluster")
    if isinstance(src, PodInfo) and isinstance(dst, PodInfo) and src.key == dst.key:
        return []  # a pod talking to itself is never filtered
    versions = _versions(src, dst)
    if not versions:
        raise FlowError(f"{flow.text()}: the two ends share no IP family")
    proto = Protocol(flow.protocol)
    out = []
    for v in versions:
        own = isinstance(src, PodInfo) and isinstance(dst, PodInfo) and own_node(src, dst)
        for direction, pod, peer in ((Direction.EGRESS, src, dst), (Direction.INGRESS, dst, src)):
            if not isinstance(pod, PodInfo):
                continue  # an address outside the cluster: no policy of ours filters it
            assert pod.node
            model = models.get(pod.node) or NodeModel("")
            verdict = decide(model, direction, _ip(pod, v), _ip(peer, v), proto, flow.port, own)
            if not verdict.allowed:
                out.append(_side(engine, direction, pod, peer, v, verdict.tier))
    return out


def _side(engine: Engine, direction: Direction, pod: PodInfo, peer: End, version: int, tier: Tier | None) -> Blocked:
    policies = tuple(engine.policies_for_pod(pod.namespace, pod.name)[direction])
    beta = direction is Direction.INGRESS and engine.beta_isolated(pod.namespace)
    why = ""
    if pod.deny_all:
        why = f"the brain refused pod {pod.key} ({pod.problem}): fix the pod, then its policies apply"
    elif tier is Tier.ADMIN:
        why = "an Admin-tier ClusterNetworkPolicy denies it, and no NetworkPolicy can override that"
    elif tier is Tier.BASELINE:
        why = (
            "a Baseline-tier ClusterNetworkPolicy denies it; a NetworkPolicy selecting "
            f"{pod.key} would replace that tier for the pod and isolate it: change the ClusterNetworkPolicy"
        )
    elif not policies and not beta:
        why = "no NetworkPolicy isolates it, yet it is blocked (a limit of the brain: see `stockade lint`)"
    elif any(r.node == pod.node and r.policy in policies for r in engine.not_realized()):
        why = f"a policy of {pod.key} is not realized on its node (a limit): see `stockade policies`"
    return Blocked(direction, pod, peer, version, why, policies, beta)
