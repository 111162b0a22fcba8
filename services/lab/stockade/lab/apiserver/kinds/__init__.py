"""Per-kind behaviour of the API server: one module per kind that needs more than generic storage.

``behaviours(...)`` builds them for one server (allocators hold that server's state); the store
calls their hooks on create, update and delete, and the HTTP layer asks them for ``kubectl get``
columns and strategic-merge keys. A kind not listed behaves as ``KindBehaviour``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .allocators import IPAllocator, PortAllocator, parse_cidrs, parse_port_range
from .base import KindBehaviour
from .clusternetworkpolicies import ClusterNetworkPolicyBehaviour
from .crds import CustomResourceDefinitionBehaviour
from .endpointslices import EndpointSliceBehaviour
from .events import EventBehaviour
from .leases import LeaseBehaviour
from .namespaces import NamespaceBehaviour
from .networkpolicies import NetworkPolicyBehaviour
from .nodes import NodeBehaviour
from .pods import PodBehaviour
from .rbac import ClusterRoleBehaviour, ClusterRoleBindingBehaviour, RoleBehaviour, RoleBindingBehaviour
from .services import ServiceBehaviour

DEFAULT_SERVICE_CIDRS = ("10.96.0.0/16", "fd00:10:96::/112")
DEFAULT_NODE_PORTS = "30000-32767"


def behaviours(
    service_cidrs: Sequence[str] = DEFAULT_SERVICE_CIDRS, node_port_range: str = DEFAULT_NODE_PORTS
) -> dict[str, KindBehaviour]:
    """Storage name → behaviour, for one server. Raises ValueError on a bad range."""
    first, last = parse_port_range(node_port_range)
    return {
        "services": ServiceBehaviour(parse_cidrs(service_cidrs), PortAllocator(first, last)),
        "endpointslices": EndpointSliceBehaviour(),
        "pods": PodBehaviour(),
        "events": EventBehaviour(),
        "leases": LeaseBehaviour(),
        "networkpolicies": NetworkPolicyBehaviour(),
        "nodes": NodeBehaviour(),
        "namespaces": NamespaceBehaviour(),
        "customresourcedefinitions": CustomResourceDefinitionBehaviour(),
        "clusternetworkpolicies": ClusterNetworkPolicyBehaviour(),
        "clusterroles": ClusterRoleBehaviour(),
        "clusterrolebindings": ClusterRoleBindingBehaviour(),
        "roles": RoleBehaviour(),
        "rolebindings": RoleBindingBehaviour(),
    }


__all__ = [
    "DEFAULT_NODE_PORTS",
    "DEFAULT_SERVICE_CIDRS",
    "ClusterNetworkPolicyBehaviour",
    "ClusterRoleBehaviour",
    "ClusterRoleBindingBehaviour",
    "CustomResourceDefinitionBehaviour",
    "EndpointSliceBehaviour",
    "EventBehaviour",
    "IPAllocator",
    "KindBehaviour",
    "LeaseBehaviour",
    "NamespaceBehaviour",
    "NetworkPolicyBehaviour",
    "NodeBehaviour",
    "PodBehaviour",
    "PortAllocator",
    "RoleBehaviour",
    "RoleBindingBehaviour",
    "ServiceBehaviour",
    "behaviours",
]
