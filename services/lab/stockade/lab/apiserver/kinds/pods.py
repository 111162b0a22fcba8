"""Pods: the real server's checks of container names and ports (``validateContainers``,
``validateContainerPorts``, with the port protocol defaulted to TCP first, as
``SetDefaults_ContainerPort``), and the ``kubectl get pods`` columns (NAME READY STATUS RESTARTS
AGE; wide: IP NODE NOMINATED NODE READINESS GATES), as ``printPod``.

Deliberately not checked (the lab's pods and its tests' omit them): that a pod has containers and
each an image; the rest of the pod spec and the status are stored as given.
"""

from __future__ import annotations

from typing import Any

from ..fieldchecks import port_name_errors, port_num_errors
from ..fielderrors import FieldError, InvalidError, duplicate, invalid, not_supported, required
from ..validation import dns1123_label
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age, since

PROTOCOLS = ("SCTP", "TCP", "UDP")


def _dicts(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _default_ports(spec: Obj) -> None:
    for key in ("containers", "initContainers"):
        for c in _dicts(spec.get(key)):
            for port in _dicts(c.get("ports")):
                if not port.get("protocol"):
                    port["protocol"] = "TCP"


def _container_errors(spec: Obj) -> list[FieldError]:
    out: list[FieldError] = []
    names: set[str] = set()
    for key in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(key) or []):
            c = c if isinstance(c, dict) else {}
            path = f"spec.{key}[{i}]"
            name = c.get("name") or ""
            if not name:
                out.append(required(f"{path}.name"))
            elif bad := dns1123_label(name):
                out += [invalid(f"{path}.name", name, m) for m in bad]
            elif name in names:
                out.append(duplicate(f"{path}.name", name))
            names.add(name)
            out += _port_errors(c.get("ports") or [], f"{path}.ports")
    return out


def _port_errors(ports: list[Any], path: str) -> list[FieldError]:
    out: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        port = port if isinstance(port, dict) else {}
        at = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            if bad := port_name_errors(name):
                out += [invalid(f"{at}.name", name, m) for m in bad]
            elif name in names:
                out.append(duplicate(f"{at}.name", name))
            names.add(name)
        number = port.get("containerPort") or 0
        if not number:
            out.append(required(f"{at}.containerPort"))
        else:
            out += [invalid(f"{at}.containerPort", number, m) for m in port_num_errors(number)]
        if port.get("hostPort"):
            out += [invalid(f"{at}.hostPort", port["hostPort"], m) for m in port_num_errors(port["hostPort"])]
        protocol = port.get("protocol") or ""
        if not protocol:
            out.append(required(f"{at}.protocol"))
        elif protocol not in PROTOCOLS:
            out.append(not_supported(f"{at}.protocol", protocol, PROTOCOLS))
    return out


def _ready(statuses: list[Obj], containers: list[Any], conditions: list[Obj]) -> int:
    # The lab's pods carry a Ready condition and no container statuses: all ready, then.
    if not statuses:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return len(containers) if ready else 0
    return sum(1 for c in statuses if c.get("ready"))


def _reason(obj: Obj, status: Obj, statuses: list[Obj]) -> str:
    reason = status.get("reason") or status.get("phase") or "Pending"
    for c in reversed(statuses):
        state: Obj = c["state"] if isinstance(c.get("state"), dict) else {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if isinstance(waiting, dict) and waiting.get("reason"):
            reason = waiting["reason"]
        elif isinstance(terminated, dict):
            if terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Signal:{terminated['signal']}"
            else:
                reason = f"ExitCode:{terminated.get('exitCode') or 0}"
    if (obj.get("metadata") or {}).get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return str(reason)


def _restarts(statuses: list[Obj]) -> str:
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    finished = [
        str(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or "")
        for c in statuses
        if isinstance(c.get("lastState"), dict)
    ]
    last = max((f for f in finished if f), default="")
    return f"{restarts} ({since(last)} ago)" if restarts and last else str(restarts)


class PodBehaviour(KindBehaviour):
    def _check(self, obj: Obj) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        _default_ports(spec)
        errors = _container_errors(spec)
        if errors:
            raise InvalidError("Pod", obj["metadata"]["name"], errors)

    def on_create(self, obj: Obj) -> None:
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
            ("Status", "string", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "string", "The number of times the containers in this pod have been restarted.", 0),
            AGE_COLUMN,
            ("IP", "string", "The IP address assigned to the pod.", 1),
            ("Node", "string", "The name of the node the pod is assigned to.", 1),
            ("Nominated Node", "string", "The node the scheduler nominated for the pod.", 1),
            ("Readiness Gates", "string", "The readiness gates of the pod, and how many are met.", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        containers = spec.get("containers") or []
        statuses = _dicts(status.get("containerStatuses"))
        conditions = _dicts(status.get("conditions"))
        ips = _dicts(status.get("podIPs"))
        gates = [g.get("conditionType") for g in _dicts(spec.get("readinessGates"))]
        met = sum(1 for g in gates if any(c.get("type") == g and c.get("status") == "True" for c in conditions))
        return [
            obj["metadata"]["name"],
            f"{_ready(statuses, containers, conditions)}/{len(containers)}",
            _reason(obj, status, statuses),
            _restarts(statuses),
            age(obj),
            (ips[0].get("ip") if ips else None) or status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            f"{met}/{len(gates)}" if gates else "<none>",
        ]
