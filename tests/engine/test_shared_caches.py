"""The caches that only engage at scale, against a full recompute.

Many policies behind one podSelector (more than the group cache's 16) compile per policy, once,
and keep those rules across other policies' changes; a chain longer than 64 rules shared by
several nodes is scanned for its sets once. Random property tests stay far below both sizes:
here every change's deltas and models must still equal a fresh engine loaded with the result.
"""

from __future__ import annotations

import copy
from typing import Any

from stockade.brain.engine import Engine
from stockade.model import NodeModel

from .harness import apply_deltas, models_of
from .kube import namespace, pod, policy

Obj = dict[str, Any]
POLICIES = 80  # 80 distinct rules in one chain: over the span's 64, over the group cache's 16


def _policy(k: int, port: int | str) -> Obj:
    return policy(
        "ns",
        f"pol-{k:02d}",
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"a{k % 5}"}}}], "ports": [{"port": port}]}],
        },
    )


def _egress_named() -> Obj:
    return policy(
        "ns",
        "egress-named",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        },
    )


def _pod(i: int, app: str, http: int = 8080) -> Obj:
    return pod("ns", f"p{i}", {"app": app}, ip=f"10.0.0.{i + 1}", node=f"node-{i % 3}", ports=[("http", "TCP", http)])


def _nonempty(models: dict[str, NodeModel]) -> dict[str, NodeModel]:
    return {n: m for n, m in models.items() if m.sets or m.chains or m.ingress or m.egress}


class Cluster:
    def __init__(self) -> None:
        self.objs: dict[tuple[str, str], Obj] = {}
        self.engine = Engine()
        self.models: dict[str, NodeModel] = {}

    def load(self, objs: list[Obj]) -> None:
        for o in objs:
            self.objs[(o["kind"], o["metadata"]["name"])] = copy.deepcopy(o)
        self.engine.load(
            namespaces=[o for o in objs if o["kind"] == "Namespace"],
            pods=[o for o in objs if o["kind"] == "Pod"],
            policies=[o for o in objs if o["kind"] == "NetworkPolicy"],
        )
        self.models = models_of(self.engine)
        self.check()

    def upsert(self, obj: Obj) -> None:
        self.objs[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        apply_deltas(self.models, self.engine.upsert(obj))
        self.check()

    def delete(self, kind: str, name: str) -> None:
        del self.objs[(kind, name)]
        apply_deltas(self.models, self.engine.delete(kind, "ns", name))
        self.check()

    def check(self) -> None:
        fresh = Engine()
        objs = list(self.objs.values())
        fresh.load(
            namespaces=[o for o in objs if o["kind"] == "Namespace"],
            pods=[o for o in objs if o["kind"] == "Pod"],
            policies=[o for o in objs if o["kind"] == "NetworkPolicy"],
        )
        want = models_of(fresh)
        assert models_of(self.engine) == want
        # The agents' copies, from the deltas alone (a node with nothing left may linger empty).
        assert _nonempty(self.models) == _nonempty(want)


def test_many_policies_on_one_selector_change_one_at_a_time() -> None:
    c = Cluster()
    pods = [_pod(i, f"a{i % 5}") for i in range(9)]
    c.load([namespace("ns"), *pods, *(_policy(k, 1000 + k) for k in range(POLICIES)), _egress_named()])
    chain = next(iter(c.engine.model("node-0").chains.values()))
    assert len(chain.rules) > 64  # the long, shared chain the caches are for

    c.upsert(_policy(3, 3003))  # one policy among many changes
    c.upsert(_policy(4, "http"))  # ... to a named port: resolved per pod, never cached
    c.upsert(_pod(2, "a2", http=9090))  # the named port moves on one pod
    c.delete("NetworkPolicy", "pol-05")
    c.upsert(_pod(1, "a3"))  # relabelled: leaves one peer's set, joins another
    c.upsert(_policy(4, 1004))  # back to a number
    c.delete("Pod", "p7")
    for k in range(POLICIES):
        if k != 5:
            c.delete("NetworkPolicy", f"pol-{k:02d}")
    c.delete("NetworkPolicy", "egress-named")
    assert all(not m.chains and not m.sets for m in c.models.values())
