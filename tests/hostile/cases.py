"""The hostile objects of test_hostile_lab.py: the shapes of issue 11, fixed and generated.

Every object lives in namespace ``hostile`` (or is cluster-scoped and named ``hx-*``). The
victims are API-only pods (no network namespace) on every node, selected by a standing policy
whose peers are any pod labelled ``peer: "yes"``: a hostile pod with that label becomes part of
every node's model, as the issue's "peer of another policy" did.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
NODES = ("node-1", "node-2", "node-3")


def victims() -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"victim-{i}", "namespace": "hostile", "labels": {"app": "victim"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": f"10.244.{i}.200", "podIPs": [{"ip": f"10.244.{i}.200"}]},
        }
        for i, node in enumerate(NODES, start=1)
    ]


def policy(name: str, spec: Obj, namespace: str = "hostile") -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


VICTIM_POLICY = policy(
    "victims-from-peers",
    {
        "podSelector": {"matchLabels": {"app": "victim"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"peer": "yes"}}}]}],
    },
)
# The canary: web pods take TCP/80 from role=good only; FRESH, toggled by every case, opens
# TCP/8080 to role=bad, so a node whose updates stopped is seen at once.
CANARY_POLICY = policy(
    "canary-base",
    {
        "podSelector": {"matchLabels": {"role": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "good"}}}], "ports": [{"port": 80}]}],
    },
    "canary",
)
FRESH_POLICY = policy(
    "canary-fresh",
    {
        "podSelector": {"matchLabels": {"role": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "bad"}}}], "ports": [{"port": 8080}]}],
    },
    "canary",
)


def pod(name: str, node: str = "node-1", **fields: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "hostile", "labels": {"peer": "yes"}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running"},
    }
    obj.update(fields)
    return obj


def pod_with_ip(name: str, ip: str, node: str) -> Obj:
    return pod(name, node, status={"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]})


@dataclass
class Case:
    name: str
    objects: list[Obj]
    # The "Kind namespace/name" the brain must report as refused (rejection list or policies); empty:
    # the objects are valid (if heavy) and must simply be enforced without harm.
    reported: list[str] = field(default_factory=list)
    # Object name → the code the API server's normal path must refuse it with (400: the JSON does
    # not fit the Go types; 422: invalid metadata), as the real one does. Those objects reach the
    # brain through the server's fault injection (what a buggy or newer API server could serve).
    refused: dict[str, int] = field(default_factory=dict)


def _victim_policy(name: str, ingress: list[Obj]) -> Obj:
    return policy(name, {"podSelector": {"matchLabels": {"app": "victim"}}, "ingress": ingress})


def fixed_cases() -> list[Case]:
    many_ports = _victim_policy("ports-1001", [{"ports": [{"port": p} for p in range(1, 1002)]}])
    many_rules = _victim_policy("rules-10001", [{"ports": [{"port": i % 65535 + 1}]} for i in range(10_001)])
    excepts = _victim_policy(
        "v6-excepts",
        [{"from": [{"ipBlock": {"cidr": "::/0", "except": [f"2001:db8:{i:x}::/48" for i in range(1000)]}}]}],
    )
    return [
        Case("policy-1001-ports", [many_ports], ["NetworkPolicy hostile/ports-1001"]),
        Case("policy-10001-rules", [many_rules], ["NetworkPolicy hostile/rules-10001"]),
        Case("ipv6-all-1000-excepts", [excepts]),
        Case("pod-ip-leading-zeros", [pod_with_ip("ip-zeros", "010.001.000.020", "node-1")], ["Pod hostile/ip-zeros"]),
        Case("pod-ip-non-canonical-v6", [pod_with_ip("ip-v6", "FD00:0::63", "node-2")]),
        Case("pod-ip-out-of-range", [pod_with_ip("ip-999", "999.1.1.1", "node-3")], ["Pod hostile/ip-999"]),
        Case("pod-spec-list", [pod("spec-list", spec=[1])], ["Pod hostile/spec-list"], {"spec-list": 400}),
        Case(
            "pod-status-string",
            [pod("status-str", status="Running")],
            ["Pod hostile/status-str"],
            {"status-str": 400},
        ),
        Case(
            "pod-labels-list",
            [{**pod("labels-list"), "metadata": {"name": "labels-list", "namespace": "hostile", "labels": ["peer"]}}],
            ["Pod hostile/labels-list"],
            {"labels-list": 400},
        ),
        Case(
            # Strings, but not labels the real server admits: the brain just matches them as strings.
            "pod-labels-invalid",
            [
                {
                    **pod("labels-bad"),
                    "metadata": {
                        "name": "labels-bad",
                        "namespace": "hostile",
                        "labels": {"peer": "yes", "a/b/c": "not valid!", "k": "v" * 300},
                    },
                }
            ],
            refused={"labels-bad": 422},
        ),
        Case(
            "namespace-labels-not-strings",
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hx-ns", "labels": {"a": {"b": [1]}}}}],
            ["Namespace hx-ns"],
            {"hx-ns": 400},
        ),
        Case(
            "namespace-labels-list",
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hx-ns-list", "labels": ["peer"]}}],
            ["Namespace hx-ns-list"],
            {"hx-ns-list": 400},
        ),
        Case(
            "node-garbage",
            [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": "hx-node"},
                    "spec": "garbage",
                    "status": {"addresses": "x", "conditions": [1, None]},
                }
            ],
            ["Node hx-node"],
            {"hx-node": 400},
        ),
        Case(
            "service-garbage-ports",
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "hx-svc", "namespace": "hostile"},
                    "status": "garbage",
                    "spec": {
                        "selector": {"app": "victim"},
                        "garbage": {"x": [1]},
                        "ports": [
                            {"name": "a", "port": 80, "targetPort": "no-such-port", "extra": [1, 2]},
                            {"name": "b", "port": 81, "targetPort": 0, "protocol": "SCTP"},
                        ],
                    },
                }
            ],
            refused={"hx-svc": 400},  # status is not an object
        ),
        Case(
            "service-ports-not-a-list",
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "hx-svc-ports", "namespace": "hostile"},
                    "spec": {"selector": {"app": "victim"}, "ports": {"port": 80}, "clusterIP": 7},
                }
            ],
            refused={"hx-svc-ports": 400},
        ),
    ]


# -- generated --------------------------------------------------------------------------------------


def _junk(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 65536, 2**63, 80])
    if pick == 3:
        return rng.choice([1.5, -0.0, 1e308])
    if pick in (4, 5):
        return rng.choice(["", "x", "TCP", "10.0.0.0/8", "::/0", "999.1.1.1", "a\nb", "\x1b[2J", "é" * 40])
    if pick in (6, 7):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "port", "ip", "cidr", "matchLabels", ""]): _junk(rng, depth + 1) for _ in range(3)}


_KEEP = {(), ("kind",), ("apiVersion",), ("metadata",), ("metadata", "name"), ("metadata", "namespace")}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``obj`` but those that decide where the object is stored."""
    out = [] if prefix in _KEEP else [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def generated(seed: int, count: int) -> list[Obj]:
    """``count`` skeletons (pod, namespace labels, policy, node) with a random subtree replaced by junk."""
    rng = random.Random(seed)
    skeletons = [
        pod_with_ip("gen", "10.244.1.210", "node-1"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hx-gen", "labels": {"peer": "yes"}}},
        _victim_policy(
            "gen",
            [
                {
                    "from": [{"podSelector": {"matchLabels": {"peer": "yes"}}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}],
                    "ports": [{"port": 80, "protocol": "TCP"}, {"port": "http"}],
                }
            ],
        ),
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "hx-gen", "labels": {"a": "b"}},
            "spec": {"podCIDR": "10.250.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]},
        },
    ]
    out = []
    for i in range(count):
        obj = copy.deepcopy(skeletons[i % len(skeletons)])
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-{i}"
        for _ in range(rng.randrange(1, 3)):
            path = rng.choice(_paths(obj))
            parent = obj
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = _junk(rng)
        out.append(obj)
    return out
