"""The manifests a lab is built from, read with the shared loader (`stockade.manifests`):
Namespaces, Pods, Deployments and other workloads (one pod per replica, named as `stockade
reach` names them), NetworkPolicies, ClusterNetworkPolicies and Services (the lab's kube-proxy
serves them). Other kinds (Nodes included: the lab makes its own) are counted and set aside."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade import manifests as shared

Obj = dict[str, Any]
ManifestError = shared.ManifestError

POLICY_API = "networking.k8s.io/v1"
# The seed article's API; the lab serves it as its v1 equivalent, as Kubernetes did.
LEGACY_POLICY_APIS = {"extensions/v1beta1", "networking.k8s.io/v1beta1"}


@dataclass
class Objects:
    namespaces: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    policies: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    cluster_policies: list[Obj] = field(default_factory=list)  # ClusterNetworkPolicies
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> count


def key(obj: Obj) -> str:
    """``ns/name`` (or just ``name`` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def as_v1_policy(pol: Obj) -> Obj:
    out = copy.deepcopy(pol)
    if out.get("apiVersion") in LEGACY_POLICY_APIS:
        out["apiVersion"] = POLICY_API
    return out


def load_files(paths: Iterable[str | Path]) -> Objects:
    docs = shared.read_documents(paths)
    cluster = shared.build_cluster(docs)
    # Only namespaces the files declare: the loader also invents the ones their objects live in,
    # and applying those would wipe a real namespace's labels and annotations.
    declared = {d.obj["metadata"]["name"] for d in docs if d.obj.get("kind") == "Namespace"}
    skipped: dict[str, int] = {}
    for entry in cluster.ignored:  # "Kind name"
        kind = entry.split(" ", 1)[0]
        skipped[kind] = skipped.get(kind, 0) + 1
    namespaces = [n for n in cluster.namespaces if n["metadata"]["name"] in declared]
    policies = [as_v1_policy(p) for p in cluster.policies]
    if cluster.nodes:
        skipped["Node"] = len(cluster.nodes)
    return Objects(namespaces, cluster.pods, policies, cluster.services, cluster.cluster_policies, skipped)


def container_ports(pod: Obj) -> list[tuple[str, int]]:
    """Every declared (protocol, containerPort) of the pod, sorted, without duplicates."""
    return sorted({(proto.upper(), port) for port, proto in shared.declared_ports(pod)})
