"""The kinds the brain watches, where the real client lists them, and the RBAC that needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WatchedKind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    api_class: str  # the kubernetes_asyncio.client class holding the list method
    list_method: str  # lists every object of the kind (all namespaces); also watches with watch=True
    # A custom resource: the API may not serve it (its CRD not installed, 404). The other kinds do
    # not wait for it; it is looked for again until it is served (see watcher.py).
    optional: bool = False
    custom: bool = False  # listed by CustomObjectsApi, which takes (group, version, plural) first

    @property
    def list_args(self) -> tuple[str, ...]:
        """The positional arguments of the list method."""
        return (self.group, self.version, self.plural) if self.custom else ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


NAMESPACE = WatchedKind("Namespace", "", "v1", "namespaces", False, "CoreV1Api", "list_namespace")
POD = WatchedKind("Pod", "", "v1", "pods", True, "CoreV1Api", "list_pod_for_all_namespaces")
NETWORK_POLICY = WatchedKind(
    "NetworkPolicy",
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    True,
    "NetworkingV1Api",
    "list_network_policy_for_all_namespaces",
)
NODE = WatchedKind("Node", "", "v1", "nodes", False, "CoreV1Api", "list_node")
# For lint (a policy naming a Service's port instead of its pods' container port); no rule depends on it.
SERVICE = WatchedKind("Service", "", "v1", "services", True, "CoreV1Api", "list_service_for_all_namespaces")

# network-policy-api's ClusterNetworkPolicy (deploy/crds/): cluster-scoped, CRD-backed, optional.
CLUSTER_NETWORK_POLICY = WatchedKind(
    "ClusterNetworkPolicy",
    "policy.networking.k8s.io",
    "v1alpha2",
    "clusternetworkpolicies",
    False,
    "CustomObjectsApi",
    "list_cluster_custom_object",
    optional=True,
    custom=True,
)

KINDS: tuple[WatchedKind, ...] = (NAMESPACE, POD, NETWORK_POLICY, NODE, SERVICE, CLUSTER_NETWORK_POLICY)

# What the sources need from the API server, as (apiGroup, resource, verbs): the deploy helper's RBAC
# must grant at least this, and its test checks that it does. The code lists and watches; "get" is
# granted too so an operator can debug with the brain's own service account.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (k.group, k.plural, ("get", "list", "watch")) for k in KINDS
)
