"""Reading Kubernetes manifests into API-shaped objects (for `reach`, the lab and dry-run)."""

from stockade.manifests.loader import (
    IP_FAMILIES,
    Cluster,
    Document,
    ManifestError,
    assign_addresses,
    build_cluster,
    complete_nodes,
    declared_ports,
    expand_workload,
    node_address,
    node_names,
    node_pod_cidr,
    node_pod_cidr6,
    read_documents,
)

__all__ = [
    "IP_FAMILIES",
    "Cluster",
    "Document",
    "ManifestError",
    "assign_addresses",
    "build_cluster",
    "complete_nodes",
    "declared_ports",
    "expand_workload",
    "node_address",
    "node_names",
    "node_pod_cidr",
    "node_pod_cidr6",
    "read_documents",
]
