"""Reading Kubernetes manifests into API-shaped objects (for `reach`, the lab and dry-run)."""

from stockade.manifests.loader import (
    Cluster,
    Document,
    ManifestError,
    assign_addresses,
    build_cluster,
    declared_ports,
    expand_workload,
    node_names,
    node_pod_cidr,
    read_documents,
)

__all__ = [
    "Cluster",
    "Document",
    "ManifestError",
    "assign_addresses",
    "build_cluster",
    "declared_ports",
    "expand_workload",
    "node_names",
    "node_pod_cidr",
    "read_documents",
]
