"""Pods: strategic-merge keys (so ``kubectl apply`` of a changed pod merges its lists as Kubernetes
does) and the ``kubectl get pods`` columns. No defaulting or validation beyond the generic."""

from __future__ import annotations

from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age


class PodBehaviour(KindBehaviour):
    merge_keys = {
        "spec.containers": "name",
        "spec.initContainers": "name",
        "spec.containers.ports": "containerPort",
        "spec.initContainers.ports": "containerPort",
        "spec.containers.env": "name",
        "spec.volumes": "name",
        "spec.containers.volumeMounts": "mountPath",
        "status.conditions": "type",
        "status.podIPs": "ip",
    }

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
            ("Status", "string", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "string", "The number of times the containers in this pod have been restarted.", 0),
            AGE_COLUMN,
            ("IP", "string", "The IP address assigned to the pod.", 1),
            ("Node", "string", "The name of the node the pod is assigned to.", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        containers = spec.get("containers") or []
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        if not statuses and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        ):
            ready = len(containers)
        return [
            obj["metadata"]["name"],
            f"{ready}/{len(containers)}",
            status.get("phase") or "Pending",
            str(sum(int(c.get("restartCount") or 0) for c in statuses)),
            age(obj),
            status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>",
        ]
