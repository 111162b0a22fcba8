"""Soak churn for the bounded-state tests (issue 17, item 6): policies made and deleted, pods
made, relabelled and deleted, through the real `Brain`'s event path; and a census of what the
brain's (or an agent's) structures hold, to show deleted objects leave nothing behind.

The policy shapes between them reach every kind of state a policy makes: pod and namespace
selectors (one a new label for every policy), ipBlocks with excepts, port ranges, named ports
resolved per pod (ingress) and per peer group (egress, also inside an ipBlock), select-all, and
a malformed policy the brain refuses. Pods take addresses from a small pool (IPs are reused, as
in a cluster) and declare a named port whose number varies.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator
from typing import Any

from stockade.brain.main import Brain, BrainConfig
from stockade.brain.sources import SYNCED, SourceEvent
from stockade.brain.sources.events import EventType

Obj = dict[str, Any]
Op = tuple[str, Obj]  # ("upsert" | "delete", the object: its last state for a delete)

NAMESPACES = {"soak-a": "t0", "soak-b": "t1"}  # name -> team label
APPS = ("web", "db", "cache", "api")
BASE_PODS = 12  # per node, never deleted
IP_POOL = 24  # addresses the churned pods take turns with
PORTS = (8080, 8081, 9000)  # what the churned pods' named port "http" resolves to


def namespace(name: str, team: str | None = None) -> Obj:
    labels = {"team": team or NAMESPACES[name]}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def pod(ns: str, name: str, app: str, node: str, ip: str, port: int = 8080) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "run": name}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


SHAPES = 8


def malformed(i: int) -> bool:
    """Whether policy ``i`` is the malformed shape (an API server's validation refuses it too)."""
    return i % SHAPES == SHAPES - 1


def policy(i: int, name: str | None = None, namespace: str | None = None, distinct: int = 0) -> Obj:
    """Policy number ``i``: its shape is ``i`` modulo the shapes. Two shapes hold a value of
    their own (a label, an except): each policy's (``distinct`` 0), or one of ``distinct``
    values the policies of that shape take in turn, as a cluster's policies repeat."""
    app, peer = APPS[i % len(APPS)], APPS[(i + 1) % len(APPS)]
    k = i % 7
    own = i if not distinct else i // SHAPES % distinct
    own_except = f"10.{200 + own // 256 % 50}.{own % 256}.0/24"
    shapes: list[Obj] = [
        {  # pod selector peer, one port
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": peer}}}], "ports": [{"port": 80 + k}]}],
        },
        {  # namespace selector + expression, a port range and UDP
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "t1"}},
                            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [peer]}]},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}, {"protocol": "UDP", "port": 53}],
                }
            ],
        },
        {  # an ipBlock with an except (an interval set on the node)
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": f"10.{100 + k}.0.0/16", "except": [f"10.{100 + k}.1.0/24"]}}]}],
        },
        {  # egress to a named port, resolved per peer group
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": peer}}}], "ports": [{"port": "http"}]}],
        },
        {  # egress to a named port inside an ipBlock of its own, and ingress to a named port (per pod)
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"port": "http"}]}],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [own_except]}}],
                    "ports": [{"port": "http"}],
                }
            ],
        },
        {  # a namespace selector with a label of its own (an index anchor only this policy has)
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"soak": f"p{own}"}}}]}],
        },
        {  # everything from everywhere, both directions
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
            "egress": [{}],
        },
        {  # malformed: refused by the brain, reported, then deleted
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}],
        },
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name or f"soak-{i}", "namespace": namespace or ("soak-a" if i % 3 else "soak-b")},
        "spec": shapes[i % SHAPES],
    }


def base_objects(nodes: list[str]) -> list[Obj]:
    """The cluster the churn starts from (and comes back to): namespaces, nodes, pods, one policy."""
    out = [namespace(n) for n in NAMESPACES] + [node(n) for n in nodes]
    for j in range(BASE_PODS * len(nodes)):  # every app in both namespaces on every node
        ns, app, on = "soak-a" if j % 2 else "soak-b", APPS[j // 4 % len(APPS)], nodes[j // 2 % len(nodes)]
        out.append(pod(ns, f"base-{j}", app, on, f"10.76.0.{j + 1}"))
    out.append(policy(0, name="base-policy"))
    return out


def cycle(i: int, nodes: list[str], *, extras: bool = True) -> list[Op]:
    """One soak cycle: a policy made, a pod made, relabelled and deleted, the policy deleted.
    With ``extras``: every tenth cycle makes its policy again under the previous cycle's name
    first; every fourth puts its pod on a node of its own, there for that pod only (a node
    added and drained); every twentieth makes a namespace with a pod and a policy and deletes
    them all again."""
    ops: list[Op] = []
    if extras and i % 10 == 5:
        again = policy(i, name=f"soak-{i - 1}")
        ops += [("upsert", again), ("delete", again)]
    pol = policy(i)
    ip = f"10.77.0.{i % IP_POOL + 1}"
    transient = extras and i % 4 == 2
    on = f"soak-node-{i}" if transient else nodes[i % len(nodes)]
    p = pod("soak-a" if i % 2 else "soak-b", f"churn-{i}", APPS[i % len(APPS)], on, ip)
    relabelled = copy.deepcopy(p)
    relabelled["metadata"]["labels"]["app"] = APPS[(i + 2) % len(APPS)]
    relabelled["spec"]["containers"][0]["ports"][0]["containerPort"] = PORTS[i % len(PORTS)]
    ops += [("upsert", pol), ("upsert", p), ("upsert", relabelled), ("delete", relabelled), ("delete", pol)]
    if transient:
        ops = [("upsert", node(on)), *ops, ("delete", node(on))]
    if extras and i % 20 == 10:
        ns = f"soak-ns-{i}"
        made = [namespace(ns, f"t{i}"), pod(ns, "p", "web", nodes[0], "10.77.1.1"), policy(i, namespace=ns)]
        ops += [("upsert", o) for o in made] + [("delete", o) for o in reversed(made)]
    return ops


def event(op: str, obj: Obj) -> SourceEvent:
    meta = obj["metadata"]
    kind: EventType = "upsert" if op == "upsert" else "delete"
    return SourceEvent(kind, obj["kind"], meta.get("namespace") or "", meta["name"], obj)


async def started_brain(nodes: list[str]) -> Brain:
    """The real brain object, its cold start done over the base cluster (no API server: the
    events are the ones its sources would hand it)."""
    brain = Brain(BrainConfig(insecure=True, events=False, remove_startup_taints=False))
    for obj in base_objects(nodes):
        await brain.on_event(event("upsert", obj))
    await brain.on_event(SYNCED)
    assert brain.ready
    return brain


# -- census ------------------------------------------------------------------------------------

_CONTAINERS = (dict, set, frozenset, list, deque)


def census(root: object, name: str = "") -> dict[str, int]:
    """Entries held by every dict, set, list and deque reachable from ``root`` through Stockade
    objects' attributes, by path (``brain.engine._span.models[*].chains``: summed over every
    model). Shared objects count under every path that reaches them, so the result does not
    depend on the order things were made in."""
    out: dict[str, int] = {}
    for path, size in _walk(root, name or type(root).__name__, []):
        out[path] = out.get(path, 0) + size
    return out


def _walk(obj: object, path: str, stack: list[int]) -> Iterator[tuple[str, int]]:
    if id(obj) in stack:
        return
    stack.append(id(obj))
    try:
        if isinstance(obj, _CONTAINERS):
            yield path, len(obj)
            items = obj.values() if isinstance(obj, dict) else obj
            for item in items:
                if isinstance(item, _CONTAINERS) or _ours(item):
                    yield from _walk(item, f"{path}[*]", stack)
            return
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:
            slots = getattr(type(obj), "__slots__", ())
            attrs = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
        for attr, value in attrs.items():
            if isinstance(value, _CONTAINERS) or _ours(value):
                yield from _walk(value, f"{path}.{attr}", stack)
    finally:
        stack.pop()


def _ours(value: object) -> bool:
    return type(value).__module__.startswith("stockade.") and not callable(value)


def bounded(brain: Brain, nodes: list[str]) -> dict[str, int]:
    """What in the brain may hold more at the end than at the start, each up to what bounds it
    (for `grown`)."""
    history = brain.config.history * len(nodes)  # each feed's window of deltas: a deque of that length
    return {
        "feeds[*].history": history,
        "sessions[*].feed.history": history,
        # compiled chains, cleared at every policy change: one per (selectors matched, ports) in use
        "._chains._chain_cache": 64,
    }


def grown(before: dict[str, int], after: dict[str, int], bounded: dict[str, int] | None = None) -> dict[str, str]:
    """What holds more than it did. ``bounded``: the most a cache may hold, by the end of its
    path (``._chains._chain_cache``: the cache by whichever path it is reached)."""
    out = {}
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path, 0), after.get(path, 0)
        cap = max((n for end, n in (bounded or {}).items() if path.endswith(end)), default=was)
        if now > max(was, cap):
            out[path] = f"{was} -> {now}"
    return out
