"""Builders for the Kubernetes objects the engine tests feed in (camelCase dicts, as manifests)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Obj = dict[str, Any]
PortDecl = tuple[str, str, int]  # (name, protocol, containerPort)

BETA_DENY = json.dumps({"ingress": {"isolation": "DefaultDeny"}})


def namespace(name: str, labels: Mapping[str, str] | None = None, beta_deny: bool = False) -> Obj:
    md: Obj = {"name": name, "labels": dict(labels or {})}
    if beta_deny:
        md["annotations"] = {"net.beta.kubernetes.io/network-policy": BETA_DENY}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": md}


def pod(
    ns: str,
    name: str,
    labels: Mapping[str, str] | None = None,
    ip: str | Sequence[str] | None = None,  # one address, or every address (podIPs) in order
    node: str | None = "node-1",
    ports: Iterable[PortDecl] = (),
    phase: str = "Running",
    host_network: bool = False,
) -> Obj:
    spec: Obj = {
        "containers": [
            {
                "name": "main",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                "ports": [{"name": n, "protocol": proto, "containerPort": num} for n, proto, num in ports],
            }
        ]
    }
    if node is not None:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    status: Obj = {"phase": phase}
    ips = [ip] if isinstance(ip, str) else list(ip or [])
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": a} for a in ips]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
        "spec": spec,
        "status": status,
    }


def policy(ns: str, name: str, spec: Obj, api_version: str = "networking.k8s.io/v1") -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
