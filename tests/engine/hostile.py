"""Hostile and malformed API objects from issue 11, next to a canary cluster they must not disturb.

``CANARY``: two namespaces, a web pod on node-1 and node-2, a client on node-2, and one policy
(web accepts only app=client on TCP 80). ``HOSTILE``: (object, the rejection's object text, the
field the rejection must name). Several hostile pods carry ``app: client`` so that, if they
were read, they would become peers of the canary policy on another node. (A valid address
spelt differently, ``FD00:0::63``, is not hostile: it is accepted as ``fd00::63``.)
"""

from __future__ import annotations

from typing import Any

from stockade.brain.engine import Engine
from stockade.model import Direction

Obj = dict[str, Any]


def _ns(name: str, **labels: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _pod(ns: str, name: str, node: str, ip: Any, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


CANARY: list[Obj] = [
    _ns("canary", team="blue"),
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-2"}},
    _pod("canary", "web-1", "node-1", "10.244.1.10", app="web"),
    _pod("canary", "web-2", "node-2", "10.244.2.10", app="web"),
    _pod("canary", "client", "node-2", "10.244.2.20", app="client"),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "canary", "namespace": "canary"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app": "client"}}},
                        {"namespaceSelector": {"matchLabels": {"team": "red"}}},
                    ],
                    "ports": [{"port": 80}],
                }
            ],
        },
    },
]

CLIENT_IP = "10.244.2.20"
REFERENCE_POD = CANARY[3]  # web-1


def _bad_pod(name: str, **fields: Any) -> Obj:
    obj = _pod("canary", name, "node-1", "10.244.1.99", app="client")
    obj.update(fields)
    return obj


HOSTILE: list[tuple[Obj, str, str]] = [
    (_bad_pod("spec-list", spec=[1]), "Pod canary/spec-list", "spec"),
    (_bad_pod("status-text", status="Running"), "Pod canary/status-text", "status"),
    (_pod("canary", "zeros", "node-1", "010.001.000.020", app="client"), "Pod canary/zeros", "status.podIPs[0].ip"),
    (_pod("canary", "zone", "node-1", "fe80::1%eth0", app="client"), "Pod canary/zone", "status.podIPs[0].ip"),
    (_pod("canary", "mapped", "node-1", "::ffff:10.244.1.5", app="client"), "Pod canary/mapped", "status.podIPs[0].ip"),
    (_pod("canary", "range", "node-1", "999.1.1.1", app="client"), "Pod canary/range", "status.podIPs[0].ip"),
    (
        _bad_pod("port-map", spec={"nodeName": "node-1", "containers": [{"ports": [{"containerPort": {"a": 1}}]}]}),
        "Pod canary/port-map",
        "spec.containers[0].ports[0].containerPort",
    ),
    (
        _bad_pod("proto-list", spec={"containers": [{"ports": [{"containerPort": 80, "protocol": ["TCP"]}]}]}),
        "Pod canary/proto-list",
        "spec.containers[0].ports[0].protocol",
    ),
    (
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "spec-text", "namespace": "canary"},
            "spec": "x",
        },
        "NetworkPolicy canary/spec-text",
        "spec",
    ),
    (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "labels-text", "labels": "team=red"}},
        "Namespace labels-text",
        "metadata.labels",
    ),
    (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "labels-list", "labels": {"team": ["red"]}}},
        "Namespace labels-list",
        "metadata.labels[team]",
    ),
    (
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-junk"}, "status": {"addresses": "garbage"}},
        "Node node-junk",
        "status.addresses",
    ),
    (
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-junk2"},
            "status": {"addresses": [{"type": "InternalIP", "address": ["10.0.0.1"]}, 7]},
        },
        "Node node-junk2",
        "status.addresses[0].address",
    ),
    (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ports-junk", "namespace": "canary"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": {"x": 1}}, 7]},
        },
        "Service canary/ports-junk",
        "spec.ports[0].port",
    ),
    (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ports-text", "namespace": "canary"},
            "spec": {"ports": "80"},
        },
        "Service canary/ports-text",
        "spec.ports",
    ),
]


def storage_of(kind: str) -> str:
    return {
        "Namespace": "namespaces",
        "Pod": "pods",
        "NetworkPolicy": "networkpolicies",
        "Node": "nodes",
        "Service": "services",
    }[kind]


CANARY_PODS = (("node-1", "10.244.1.10"), ("node-2", "10.244.2.10"), ("node-2", CLIENT_IP))


def canary_view(engine: Engine) -> dict[tuple[str, str, str], Any]:
    """What the canary's pods enforce: per pod address and direction, each rule's ports and the
    addresses its peer set holds (set ids aside: only what is allowed counts)."""
    out: dict[tuple[str, str, str], Any] = {}
    for node, ip in CANARY_PODS:
        model = engine.model(node)
        for d in Direction:
            cid = model.dispatch(d).get(ip)
            chain = model.chains.get(cid) if cid else None
            rules = []
            for r in chain.rules if chain is not None else ():
                peer = sorted(model.sets[r.peer]) if r.peer is not None else None
                rules.append((repr(r.ports), peer))
            out[(node, ip, d.value)] = (cid is not None, sorted(rules, key=repr))
    return out


def allowed(view: dict[tuple[str, str, str], Any], node: str, ip: str) -> list[str]:
    """The peer addresses the pod at ``ip`` accepts (any rule)."""
    return sorted({e for _, peer in view[(node, ip, "ingress")][1] for e in peer or ()})
