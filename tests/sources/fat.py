"""Objects as a real API server returns them (managedFields, env, volumes, statuses): what the
brain must slim without changing what it computes."""

from __future__ import annotations

from typing import Any

from stockade.brain.engine.objects import BETA_ANNOTATION
from stockade.brain.taints import TAINT_EFFECT, TAINT_KEY

Obj = dict[str, Any]
T = "2026-11-30T10:00:00Z"
MANAGED = [
    {
        "manager": "kubectl",
        "operation": "Update",
        "apiVersion": "v1",
        "time": T,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {"f:containers": {}}},
    },
]


def container(name: str, ports: list[Obj] | None) -> Obj:
    c: Obj = {
        "name": name,
        "image": f"registry.example.com/{name}:1.0",
        "env": [{"name": f"V{k}", "value": "x" * 30} for k in range(8)],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
    }
    if ports is not None:
        c["ports"] = ports
    return c


def pod(ns: str, name: str, ip: str, node: str, app: str, *, phase: str = "Running", **extra_spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": f"{app}-",
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "creationTimestamp": T,
            "labels": {"app": app, "pod-template-hash": "abc123"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": T, "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-abc123", "uid": "rs"}],
            "managedFields": MANAGED,
            "finalizers": ["example.com/keep"],
        },
        "spec": {
            "nodeName": node,
            "initContainers": [container("init", [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}])],
            "containers": [
                container(
                    "app",
                    [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    ],
                ),
                container("sidecar", None),
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "serviceAccountName": "default",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
            **extra_spec,
        },
        "status": {
            "phase": phase,
            "hostIP": "192.168.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": T}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "state": {"running": {}}}],
            "qosClass": "Burstable",
        },
    }


def node(name: str, *, tainted: bool = False) -> Obj:
    taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    if tainted:
        taints.append({"key": TAINT_KEY, "effect": TAINT_EFFECT})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            "managedFields": MANAGED,
        },
        "spec": {"podCIDR": "10.0.0.0/24", "providerID": f"cloud://{name}", "taints": taints},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
            "capacity": {"cpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "images": [{"names": ["registry.example.com/app:1.0"], "sizeBytes": 1000}],
            "nodeInfo": {"kubeletVersion": "v1.31.0"},
        },
    }


def namespace(name: str, *, beta_deny: bool = False) -> Obj:
    ann = {"owner": "team-a"}
    if beta_deny:
        ann[BETA_ANNOTATION] = '{"ingress":{"isolation":"DefaultDeny"}}'
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"team": "a"}, "annotations": ann, "managedFields": MANAGED},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def service(ns: str, name: str, app: str, ip: str = "10.96.0.10") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "managedFields": MANAGED, "annotations": {"a": "b"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": app},
            "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            "clusterIP": ip,
            "clusterIPs": [ip],
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def policy(ns: str, name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": ns,
            "generation": 1,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}' * 50},
            "managedFields": MANAGED,
        },
        "spec": spec,
    }


def cluster() -> list[Obj]:
    """Namespaces (two with the beta default-deny, one of them with no policy), nodes (one with the startup taint), pods
    with named ports in containers and init containers, a finished pod, a host-network pod,
    services and policies naming ports by name."""
    objs: list[Obj] = [namespace("shop"), namespace("legacy", beta_deny=True), namespace("frozen", beta_deny=True)]
    objs += [node("node-1"), node("node-2", tainted=True)]
    objs += [
        pod("shop", "web-0", "10.244.1.10", "node-1", "web"),
        pod("shop", "web-1", "10.244.2.11", "node-2", "web"),
        pod("shop", "db-0", "10.244.1.12", "node-1", "db"),
        pod("shop", "job-0", "10.244.2.13", "node-2", "job", phase="Succeeded"),
        pod("shop", "agent-0", "192.168.0.2", "node-2", "agent", hostNetwork=True),
        pod("legacy", "old-0", "10.244.1.14", "node-1", "old"),
        pod("frozen", "ice-0", "10.244.2.15", "node-2", "ice"),  # isolated by the beta annotation alone
    ]
    objs += [service("shop", "web", "web"), service("legacy", "old", "old", "10.96.0.11")]
    objs += [
        policy(
            "shop",
            "db",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}],
            },
        ),
        policy(
            "shop",
            "web-egress",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                        "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "metrics"}],
                    }
                ],
            },
        ),
        policy(
            "legacy",
            "allow-shop",
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 8080}]}],
            },
        ),
    ]
    return objs
