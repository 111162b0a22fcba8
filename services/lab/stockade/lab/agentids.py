"""The lab's agents prove their node as deployed agents do: with a ServiceAccount token.

deploy/agent.yaml runs one agent pod per node whose projected token (audience ``stockade``) the
brain checks with TokenReview. The lab does what the DaemonSet controller and the kubelet do:
it creates a pod ``stockade-system/stockade-agent-<node>`` bound to each node (hostNetwork, so
the engine leaves it out of every rule, as it does the real ones), asks the lab API server's
TokenRequest for that pod's token and writes it where the agent reads it (``tokens/<node>``).
The kubelet renews a token at 80% of its life; the lab mints tokens valid for a week instead
(a lab lives hours), and the agent re-reads the file at every connect either way. Nodes join
with the startup taint, which the brain removes once their agent enforces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .kubeapi import ApiError, Client
from .topology import Plan

NAMESPACE = "stockade-system"
SERVICE_ACCOUNT = "stockade-agent"
AUDIENCE = "stockade"  # the brain's default --agent-audience, and deploy/agent.yaml's
LIFETIME = 7 * 86400
STARTUP_TAINT = "stockade.io/agent-not-ready"  # the brain's stockade.brain.taints.TAINT_KEY

Obj = dict[str, Any]


def pod_name(node: str) -> str:
    return f"stockade-agent-{node}"


def objects(plan: Plan) -> list[Obj]:
    """The agents' namespace and pods, as the API holds them once the DaemonSet ran."""
    out: list[Obj] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for node in plan.nodes:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name(node.name),
                    "namespace": NAMESPACE,
                    "labels": {"app.kubernetes.io/name": "stockade-agent", "app.kubernetes.io/part-of": "stockade"},
                },
                "spec": {
                    "nodeName": node.name,
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "hostNetwork": True,
                    "containers": [{"name": "agent", "image": "stockade"}],
                },
                "status": {
                    "phase": "Running",
                    "hostIP": node.ip,
                    "podIP": node.ip,  # a hostNetwork pod has its node's address
                    "podIPs": [{"ip": ip} for ip in node.ips],
                },
            }
        )
    return out


def with_startup_taint(obj: Obj) -> Obj:
    """A Node as it registers when the kubelet has ``--register-with-taints`` (issue 13 item 2):
    the brain removes the taint once the node's agent enforces (stockade.brain.taints)."""
    if obj.get("kind") != "Node":
        return obj
    spec = dict(obj.get("spec") or {})
    spec["taints"] = [*(spec.get("taints") or []), {"key": STARTUP_TAINT, "effect": "NoSchedule"}]
    return {**obj, "spec": spec}


def tokens_dir(state_dir: Path) -> Path:
    return state_dir / "tokens"


def token_file(state_dir: Path, node: str) -> Path:
    return tokens_dir(state_dir) / node


def write_tokens(api: Client, plan: Plan, state_dir: Path) -> None:
    """Each node's agent pod's token, from the API's TokenRequest (the API server must be up)."""
    folder = tokens_dir(state_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    for node in plan.nodes:
        pod = api._call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name(node.name)}")
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [AUDIENCE],
                "expirationSeconds": LIFETIME,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod_name(node.name),
                    "uid": pod["metadata"]["uid"],
                },
            },
        }
        answer = api._call("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token", body)
        token = answer.get("status", {}).get("token")
        if not token:
            raise ApiError(500, f"TokenRequest for {pod_name(node.name)} returned no token")
        path = token_file(state_dir, node.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.chmod(0o600)
        os.replace(tmp, path)  # atomic, as the kubelet swaps a projected volume's files
