"""Read-only queries over the engine's state, for admin, explain, drops, lint and the offline tools.

Nothing here changes state. `Engine` is a view with the changes added; code that only reads
(e.g. `lint`) takes an `EngineView`.
"""

from __future__ import annotations

from stockade.brain.engine.api import NotRealized, Rejection, RuleOrigin
from stockade.brain.engine.applied import AppliedTo
from stockade.brain.engine.chains import ChainCompiler
from stockade.brain.engine.cnp import ClusterNetworkPolicy
from stockade.brain.engine.objects import NamespaceInfo, NodeInfo, PodInfo, canonical_ip
from stockade.brain.engine.policy import Policy
from stockade.brain.engine.services import ServiceInfo
from stockade.brain.engine.sets import SetTable
from stockade.brain.engine.span import Span
from stockade.brain.engine.store import Store
from stockade.brain.engine.tiers import TierCompiler
from stockade.model import Direction, NodeModel, Protocol
from stockade.model.evaluate import ip_in


class EngineView:
    def __init__(
        self,
        store: Store,
        applied: AppliedTo,
        chains: ChainCompiler,
        sets: SetTable,
        span: Span,
        beta_default_deny: bool,
        tiers: TierCompiler,
    ) -> None:
        self.beta_default_deny = beta_default_deny
        self._tiers = tiers
        self._store = store
        self._applied = applied
        self._chains = chains
        self._sets = sets
        self._span = span

    # ---------------------------------------------------------------- nodes' models

    def model(self, node: str) -> NodeModel:
        m = self._span.models.get(node)
        return m.copy() if m is not None else NodeModel(node)

    def models(self) -> dict[str, NodeModel]:
        return {n: self.model(n) for n in self.nodes()}

    def nodes(self) -> list[str]:
        hosting = {place[0] for place in self._span.placement.values()}
        held = {n for n, m in self._span.models.items() if m.ingress or m.egress or m.has_tiers()}
        return sorted(self._store.node_objects | hosting | held)

    def not_realized(self) -> list[NotRealized]:
        """Accepted policies left out of some node's model, one record per (policy, node)."""
        agg: dict[tuple[str, str], NotRealized] = {}
        placement = self._span.placement
        for pod_key, policies in self._span.left_out.items():
            place = placement.get(pod_key)
            if place is None:
                continue
            for pkey, (limit, why) in policies.items():
                k = (pkey, place[0])
                prev = agg.get(k)
                agg[k] = (
                    NotRealized(pkey, place[0], limit, f"{why} (pod {pod_key})")
                    if prev is None
                    else NotRealized(pkey, place[0], prev.limit, prev.message, prev.pods + 1)
                )
        return [agg[k] for k in sorted(agg)]

    def set_contains(self, sid: str, ip: str) -> bool:
        return ip_in(ip, self._sets.elems.get(sid, ()))

    # ---------------------------------------------------------------- objects

    def rejections(self) -> list[Rejection]:
        s = self._store
        return (
            [s.rejected[k] for k in sorted(s.rejected)]
            + [s.cnp_rejected[k] for k in sorted(s.cnp_rejected)]
            + [s.ns_errors[k] for k in sorted(s.ns_errors)]
            + [s.refused[k] for k in sorted(s.refused)]
        )

    def cluster_policy_refusals(self) -> dict[str, str]:
        """The ClusterNetworkPolicies refused, by name as the rejection names them: "field: why"."""
        return {r.object.partition(" ")[2]: f"{r.field}: {r.message}" for r in self._store.cnp_rejected.values()}

    def cluster_policy(self, name: str) -> ClusterNetworkPolicy | None:
        return self._store.cnps.get(name)

    def cluster_policy_names(self) -> list[str]:
        return sorted(self._store.cnps)

    def cluster_policy_pods(self, name: str) -> list[str]:
        """The endpoint pods a ClusterNetworkPolicy's subject selects."""
        cnp = self._store.cnps.get(name)
        return sorted(self._tiers.selected(cnp)) if cnp is not None else []

    def node_info(self, name: str) -> NodeInfo | None:
        """A Node's labels and addresses, as ClusterNetworkPolicy ``nodes`` peers read them."""
        return self._store.node_info.get(name)

    def cluster_policy_nodes(self, name: str) -> set[str]:
        """The nodes hosting the endpoint pods a ClusterNetworkPolicy's subject selects."""
        return self._nodes_of(self.cluster_policy_pods(name))

    def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None:
        """The ClusterNetworkPolicy rule behind rule ``index`` of tier chain ``chain_id``
        (``node``: whose model holds it; None when unknown, e.g. a chain since replaced)."""
        del node  # tier chains are named by content: one id means the same rules on every node
        return self._tiers.origin(chain_id, index)

    def policy(self, namespace: str, name: str) -> Policy | None:
        return self._store.policies.get(f"{namespace}/{name}")

    def policy_keys(self) -> list[str]:
        return sorted(self._store.policies)

    def policy_pods(self, namespace: str, name: str) -> list[str]:
        pol = self._store.policies.get(f"{namespace}/{name}")
        if pol is None:
            return []
        return sorted(self._store.pods_matching(namespace, pol.pod_selector))

    def policy_nodes(self, namespace: str, name: str) -> set[str]:
        return self._nodes_of(self.policy_pods(namespace, name))

    def _nodes_of(self, pod_keys: list[str]) -> set[str]:
        """The nodes of those pods that are endpoints (running, with an address)."""
        out = set()
        for k in pod_keys:
            pod = self._store.pods.get(k)
            if pod is not None and k in self._store.endpoint and pod.node:
                out.add(pod.node)
        return out

    def pod_by_ip(self, ip: str) -> str | None:
        """The endpoint pod owning an address of either family (any spelling: ``FD00:0::5``)."""
        owners = self._store.ip_owner
        owner = owners.get(ip)
        if owner is None:
            try:
                owner = owners.get(canonical_ip(ip, "ip"))
            except ValueError:
                return None
        return owner

    def endpoint(self, namespace: str, name: str) -> PodInfo | None:
        """The endpoint pod with only the addresses it owns (None: not an endpoint)."""
        return self._store.endpoint.get(f"{namespace}/{name}")

    def pod_info(self, namespace: str, name: str) -> PodInfo | None:
        return self._store.pods.get(f"{namespace}/{name}")

    def pods(self) -> list[PodInfo]:
        pods = self._store.pods
        return [pods[k] for k in sorted(pods)]

    def host_network_pods(self) -> list[PodInfo]:
        """Running host-network pods with addresses (their node's) and a node: never subjects,
        but peers (``nodes`` and ``networks`` match their addresses)."""
        pods = self._store.pods
        return [
            p
            for k in sorted(pods)
            if (p := pods[k]).host_network and p.ips and p.node and not p.deny_all and p.problem == ""
        ]

    def is_endpoint(self, namespace: str, name: str) -> bool:
        return f"{namespace}/{name}" in self._store.endpoint

    def isolated(self, namespace: str, name: str) -> PodInfo | None:
        """The refused pod whose traffic is all denied, with the addresses it owns (None: not one)."""
        return self._store.isolated.get(f"{namespace}/{name}")

    def namespaces(self) -> list[NamespaceInfo]:
        ns = self._store.ns
        return [ns[k] for k in sorted(ns)]

    def namespace_info(self, name: str) -> NamespaceInfo:
        return self._store.namespace_info(name)

    def services(self) -> list[ServiceInfo]:
        svcs = self._store.services
        return [svcs[k] for k in sorted(svcs)]

    # ---------------------------------------------------------------- policies' effect on pods

    def policies_for_pod(self, namespace: str, name: str) -> dict[Direction, list[str]]:
        pod = self._store.pods.get(f"{namespace}/{name}")
        if pod is None or pod.deny_all:  # refused: no policy applies (its labels are unknown)
            return {Direction.INGRESS: [], Direction.EGRESS: []}
        ing, eg = self._applied.applying(pod)
        return {Direction.INGRESS: sorted(ing), Direction.EGRESS: sorted(eg)}

    def beta_isolated(self, namespace: str) -> bool:
        return self.beta_default_deny and self.namespace_info(namespace).beta_default_deny

    def rules_allowing(
        self, policy_key: str, direction: Direction, pod: PodInfo, peer_ip: str, protocol: Protocol, port: int
    ) -> list[int]:
        """Indexes of the policy's rules (in ``direction``, applied to ``pod``) that allow the peer."""
        pol = self._store.policies.get(policy_key)
        if pol is None:
            return []
        out = []
        for i, rule in enumerate((pol.ingress if direction is Direction.INGRESS else pol.egress) or ()):
            for r in self._chains.compile_rule(rule, direction, pod):
                if r.matches_port(protocol, port) and (r.peer is None or self.set_contains(r.peer, peer_ip)):
                    out.append(i)
                    break
        return out
