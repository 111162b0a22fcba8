"""Nodes: strategic-merge keys come from the schema; this is the ``kubectl get nodes`` columns
(NAME STATUS ROLES AGE VERSION; wide: INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION
CONTAINER-RUNTIME), as ``printNode``."""

from __future__ import annotations

from typing import Any

from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

ROLE_PREFIX = "node-role.kubernetes.io/"
ROLE_LABEL = "kubernetes.io/role"


def _dicts(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def roles(labels: dict[str, Any]) -> list[str]:
    out = {k[len(ROLE_PREFIX) :] for k in labels if k.startswith(ROLE_PREFIX) and k[len(ROLE_PREFIX) :]}
    if labels.get(ROLE_LABEL):
        out.add(str(labels[ROLE_LABEL]))
    return sorted(out)


def _address(status: Obj, kind: str) -> str:
    return next((a.get("address") or "" for a in _dicts(status.get("addresses")) if a.get("type") == kind), "<none>")


class NodeBehaviour(KindBehaviour):
    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Status", "string", "The status of the node", 0),
            ("Roles", "string", "The roles of the node", 0),
            AGE_COLUMN,
            ("Version", "string", "Kubelet Version reported by the node.", 0),
            ("Internal-IP", "string", "The node's first InternalIP address.", 1),
            ("External-IP", "string", "The node's first ExternalIP address.", 1),
            ("OS-Image", "string", "OS Image reported by the node from /etc/os-release.", 1),
            ("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r'.", 1),
            ("Container-Runtime", "string", "ContainerRuntime Version reported by the node.", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        ready = next((c for c in _dicts(status.get("conditions")) if c.get("type") == "Ready"), None)
        state = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
        if spec.get("unschedulable"):
            state.append("SchedulingDisabled")
        info = status.get("nodeInfo") or {}
        return [
            obj["metadata"]["name"],
            ",".join(state),
            ",".join(roles((obj.get("metadata") or {}).get("labels") or {})) or "<none>",
            age(obj),
            info.get("kubeletVersion") or "",
            _address(status, "InternalIP"),
            _address(status, "ExternalIP"),
            info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>",
        ]
