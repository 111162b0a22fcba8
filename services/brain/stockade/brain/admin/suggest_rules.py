"""Rules that admit blocked flows: a peer for each pod or address, grouped per policy and port.

A pod peer is selected by the fewest of its labels that tell it apart in its namespace (the
smallest set selecting no more pods than all its labels do), with a namespaceSelector on the
namespace's name when the policy is in another namespace; an address outside the cluster is an
ipBlock of just it. When no selector can be narrower (replicas, or pods sharing every label),
the note says which other pods it selects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine.objects import NAME_LABEL, PodInfo
from stockade.model.evaluate import ip_version

PREFERRED = ("app.kubernetes.io/name", "name", "app", "k8s-app", "component")


@dataclass(frozen=True)
class Peer:
    """One peer of a rule, as the manifest writes it, and what else it selects."""

    json: str  # canonical text of ``spec``: peers are compared and deduplicated by it
    spec: Mapping[str, Any]
    also: tuple[str, ...] = ()  # other pods it selects ("ns/name")


def _rank(key: str) -> tuple[int, str]:
    return (PREFERRED.index(key) if key in PREFERRED else len(PREFERRED), key)


def distinguishing(pod: PodInfo, pods: Sequence[PodInfo]) -> tuple[dict[str, str], list[str]]:
    """The fewest labels (one at least) of ``pod`` selecting as few of ``pods`` (its namespace's) as
    all its labels do; and the other pods those select (none unless no selector can be narrower)."""
    labels = dict(pod.labels)
    if not labels:
        return {}, sorted(p.key for p in pods if p.key != pod.key)

    def selected(match: Mapping[str, str]) -> set[str]:
        return {p.key for p in pods if all(p.labels.get(k) == v for k, v in match.items())}

    target = selected(labels)
    chosen: dict[str, str] = {}
    while not chosen or selected(chosen) != target:  # one label at least: pods to come are not let in
        k = min(
            (k for k in labels if k not in chosen),
            key=lambda k: (len(selected({**chosen, k: labels[k]})), _rank(k)),
        )
        chosen[k] = labels[k]
    return dict(sorted(chosen.items())), sorted(target - {pod.key})


def pod_peer(pod: PodInfo, policy_namespace: str, pods: Sequence[PodInfo]) -> Peer:
    """A peer selecting ``pod`` from a policy of ``policy_namespace``."""
    match, also = distinguishing(pod, [p for p in pods if p.namespace == pod.namespace])
    spec: dict[str, Any] = {"podSelector": {"matchLabels": match} if match else {}}
    if pod.namespace != policy_namespace:
        spec = {"namespaceSelector": {"matchLabels": {NAME_LABEL: pod.namespace}}, **spec}
    return Peer(_canon(spec), spec, tuple(also))


def address_peer(ip: str) -> Peer:
    spec = {"ipBlock": {"cidr": f"{ip}/{32 if ip_version(ip) == 4 else 128}"}}
    return Peer(_canon(spec), spec)


def _canon(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


@dataclass
class RuleDraft:
    """One rule to add: its peers and ports, and the flows it is for."""

    peers: dict[str, Peer] = field(default_factory=dict)  # by Peer.json, in order of arrival
    ports: list[tuple[str, int]] = field(default_factory=list)  # (protocol, port)
    flows: list[Any] = field(default_factory=list)

    def spec(self, direction: str) -> dict[str, Any]:
        key = "from" if direction == "ingress" else "to"
        ports = [{"protocol": proto, "port": port} for proto, port in sorted(self.ports)]
        return {key: [dict(p.spec) for p in self.peers.values()], "ports": ports}


def merge_by_peers(drafts: Sequence[RuleDraft]) -> list[RuleDraft]:
    """Drafts (of one policy and direction) with the same peers become one rule with their ports."""
    out: dict[tuple[str, ...], RuleDraft] = {}
    for d in drafts:
        key = tuple(sorted(d.peers))
        if key in out:
            into = out[key]
            into.ports.extend(p for p in d.ports if p not in into.ports)
            into.flows.extend(f for f in d.flows if f not in into.flows)
        else:
            out[key] = RuleDraft(dict(d.peers), list(d.ports), list(d.flows))
    return list(out.values())
