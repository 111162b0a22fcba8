"""The Kubernetes objects the lab serves for what it built: nodes, and pods with their status."""

from __future__ import annotations

import copy
from typing import Any

from stockade.lab.manifests import Obj, container_ports
from stockade.lab.topology import NodePlan, Plan, PodPlan, PodRequest


def node_object(node: NodePlan) -> Obj:
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": list(node.pod_cidrs)},
        "status": {
            # One InternalIP per family, as the kubelet reports a dual-stack node's.
            "addresses": [
                *({"type": "InternalIP", "address": ip} for ip in node.ips),
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [ready],
        },
    }


def namespace_object(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod_request(pod: Obj) -> PodRequest:
    meta = pod["metadata"]
    return PodRequest(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        ports=container_ports(pod),
        node_name=(pod.get("spec") or {}).get("nodeName"),
        host_network=(pod.get("spec") or {}).get("hostNetwork") is True,
    )


def running_pod(pod: Obj, placed: PodPlan, plan: Plan) -> Obj:
    """The pod as the API serves it once scheduled and running: nodeName and status filled (a
    host-network pod's addresses are its node's, as the kubelet reports them)."""
    out: dict[str, Any] = copy.deepcopy(pod)
    out["metadata"]["namespace"] = placed.namespace
    spec = out.setdefault("spec", {})
    spec["nodeName"] = placed.node
    if placed.host_network:
        spec["hostNetwork"] = True
    node = plan.node(placed.node)
    out["status"] = {
        "phase": "Running",
        "podIP": placed.ip,  # the first family's: IPv4 in a dual-stack lab
        "podIPs": [{"ip": ip} for ip in placed.ips],
        "hostIP": node.ip,
        "hostIPs": [{"ip": ip} for ip in node.ips],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return out
