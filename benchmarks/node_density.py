"""Per-node apply at high pod density (issue 16, target 4): one node holding 500 pods of a
10,000-pod cluster with 2,000 policies; one pod's delta ≤ 10 ms median, a full snapshot ≤ 1 s.

The node's model comes from the real engine (not built by hand): 10,000 pods on 20 nodes (500
on node-1), 2,000 NetworkPolicies of four shapes per namespace (`engine_scale.py`'s three: pod
peers on a port, a team's namespaces on a named port, egress to the namespace and to DNS past
an ipBlock with an except; and d to c on a port), in variants on other ports. The cluster is cut
three ways (`--shape`): spread (500 namespaces, one pod of each on a node), dense (125
namespaces, 16 policies each) and packed (25 namespaces, 80 policies each, 20 pods of each on
a node: long chains). The deltas are the engine's own for node-1, as a cluster sends them: a pod
created on node-1 and deleted again, of two kinds, alternating so machine noise hits both alike:

  joins    the pod is selected like a pod already on the node: its address joins sets and the
           dispatch maps (element-only)
  new      no pod of its namespace on the node is selected like it: its chains are new (and go
           when it goes)

"Receipt to kernel" = `apply_delta(delta, model)` called with the delta in hand until it returns
(render + transaction committed); the process's CPU seconds are printed beside it. The snapshot
is a fresh backend's `apply_snapshot` into an empty namespace (read back, render, one
transaction). Both backends; iptables is informational.

Run as root: `.venv/bin/python benchmarks/node_density.py [--shape spread|dense|packed|all] [--deltas N]
[--rounds N] [--skip-iptables]`
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

from dataplane_models import netns, ratio_line
from engine_scale import ns_obj, pod_obj, policies_for

from stockade.agent.backends import nft_render
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.brain.engine import Engine
from stockade.model import NodeDelta, NodeModel, apply

DELTA_TARGET_MS, SNAPSHOT_TARGET_S = 10.0, 1.0
PODS, POLICIES, NODES, NODE, HERE = 10_000, 2_000, 20, "node-1", 1
Backend = NftablesBackend | IptablesBackend
Objects = list[dict[str, Any]]


@dataclass(frozen=True)
class Shape:
    """How the cluster's 10,000 pods and 2,000 policies are cut: ``namespaces`` of equal size,
    ``per_node`` of each namespace's pods on each node, ``variants`` copies (on other ports) of
    the four policy shapes per namespace."""

    name: str
    namespaces: int
    per_node: int
    variants: int
    about: str

    @property
    def pods_per_ns(self) -> int:
        return PODS // self.namespaces


SHAPES = {
    "spread": Shape("spread", 500, 1, 1, "500 namespaces of 20 pods, one of each on every node; 4 policies each"),
    "dense": Shape(
        "dense",
        125,
        4,
        4,
        "125 namespaces of 80 pods, four of each on every node (on node-1 three of the four apps); 16 policies each",
    ),
    "packed": Shape(
        "packed",
        25,
        20,
        20,
        "25 namespaces of 400 pods, twenty of each on every node (five per app; on node-1 none of one app, "
        "ten of d); 80 policies each",
    ),
}


def apps_on(shape: Shape, i: int, node: int) -> list[str]:
    """The apps of namespace i's pods on ``node``: a-d in turn, except that in the dense and
    packed shapes node-1 lacks one app per namespace (a pod of it there has new chains)."""
    if shape.per_node == 1:
        return ["abcd"[(i + node) % 4]]
    each = list("abcd") * (shape.per_node // 4)
    if node != HERE:
        return each
    missing, twice = "abc"[i % 3], "d"  # no policy selects d for ingress: a d pod would join
    return [twice if a == missing else a for a in each]


def cluster(shape: Shape) -> tuple[Objects, Objects, Objects]:
    nss = [ns_obj(i) for i in range(shape.namespaces)]
    pods = []
    for i in range(shape.namespaces):
        j = 0
        for round_ in range(shape.pods_per_ns // (NODES * shape.per_node)):
            for node in range(NODES):
                for app in apps_on(shape, i, (node + round_) % NODES):
                    pods.append(pod(shape, i, j, (node + round_) % NODES, app))
                    j += 1
    pols = [p for i in range(shape.namespaces) for v in range(shape.variants) for p in policies(i, v)]
    assert len(pods) == PODS and len(pols) == POLICIES, (len(pods), len(pols))
    return nss, pods, pols


def pod(shape: Shape, i: int, j: int, node: int, app: str, ip: str | None = None) -> dict[str, Any]:
    n = i * shape.pods_per_ns + j
    obj = pod_obj(i, j, node, app=app, ip=ip or f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}")
    obj["metadata"]["name"] = f"pod-{j}"
    return obj


def policies(i: int, variant: int) -> Objects:
    """`policies_for`'s three (b to a on a port, a team's c pods to b, egress to the namespace
    and DNS) and d to c on a port; variants other than 0 on other ports, under other names."""
    out = [*policies_for(i, variant), d_to_c(i, variant)]
    if variant:
        for p in out:
            p["metadata"]["name"] += f"-v{variant}"
        out[1]["spec"]["ingress"][0]["ports"] = [{"port": 8000 + variant}]
        out[2]["spec"]["egress"][1]["ports"] = [{"protocol": "UDP", "port": 5300 + variant}]
    return out


def d_to_c(i: int, variant: int) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-d-to-c", "namespace": f"ns-{i}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "c"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "d"}}}], "ports": [{"port": 9090 + variant}]}
            ],
        },
    }


def node_deltas(eng: Engine, shape: Shape, count: int) -> dict[str, list[NodeDelta]]:
    """Per kind: ``count`` (create, delete) pairs of node-1's deltas, in order."""
    out: dict[str, list[NodeDelta]] = {"joins": [], "new": []}
    k = 0
    for i in range(shape.namespaces * 8):
        if min(len(v) for v in out.values()) >= 2 * count:
            break
        ns = i % shape.namespaces
        held = apps_on(shape, ns, HERE)
        # labelled like a pod of its namespace on the node (selected alike: joins, element-only),
        # and like none of them (its chains are new, unless a pod elsewhere shares them)
        fresh = next(a for a in "acbd" if a not in held)
        for app in (held[i // shape.namespaces % len(held)], fresh):
            extra = pod(shape, ns, 0, HERE, app, ip=f"172.20.{k >> 8}.{k & 255}")
            extra["metadata"]["name"] = f"extra-{k}"
            k += 1
            created = eng.upsert(extra).get(NODE)
            deleted = eng.delete("Pod", f"ns-{ns}", f"extra-{k - 1}").get(NODE)
            assert created is not None and deleted is not None, f"ns-{ns}: a pod on {NODE} changed nothing there"
            kind = "joins" if nft_render.is_element_only(created) else "new"
            if len(out[kind]) < 2 * count:
                out[kind] += [created, deleted]
    return out


def measure(backend: Backend, model: NodeModel, deltas: dict[str, list[NodeDelta]]) -> dict[str, list[float]]:
    """Per kind: (wall ms, CPU ms) per delta; kinds alternate pair by pair."""
    backend.apply_snapshot(model)
    current = model
    times: dict[str, list[float]] = {f"{k}{s}": [] for k in deltas for s in ("", "_cpu")}
    pairs = max(len(v) for v in deltas.values()) // 2
    for i in range(pairs):
        for kind, ds in deltas.items():
            for delta in ds[2 * i : 2 * i + 2]:
                nxt = apply(current, delta)
                start, cpu = time.perf_counter(), time.process_time()
                backend.apply_delta(delta, nxt)
                times[kind].append((time.perf_counter() - start) * 1000)
                times[f"{kind}_cpu"].append((time.process_time() - cpu) * 1000)
                current = nxt
    assert backend.verify(model) == [], "the deltas did not return the kernel to the model"
    return times


def snapshots(make: type[Backend], model: NodeModel, rounds: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(rounds):
        with netns("st-density-snap") as ns:
            backend = make(ns)
            start, c0 = time.perf_counter(), time.process_time()
            backend.apply_snapshot(model)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - c0)
            assert backend.verify(model) == []
    return wall, cpu


def report(name: str, model: NodeModel, deltas: dict[str, list[NodeDelta]], rounds: int, main: bool) -> list[float]:
    """Prints the figures; returns (snapshot s, delta median ms) for the summary."""
    make: type[Backend] = NftablesBackend if name == "nftables" else IptablesBackend
    suffix = "" if main else " (informational)"
    wall, cpu = snapshots(make, model, rounds)
    snap = statistics.median(wall)
    print(f"  {name} snapshot: median {snap:.3f} s wall, {statistics.median(cpu):.3f} s CPU over {rounds}{suffix}")
    if main:
        print("  " + ratio_line(f"{name} snapshot s", snap, SNAPSHOT_TARGET_S, lower_is_better=True))
    with netns("st-density-delta") as ns:
        times = measure(make(ns), model, deltas)
    for kind in deltas:
        ms = times[kind]
        create, delete = ms[0::2], ms[1::2]
        print(
            f"  {name} one-pod delta, {kind}: median {statistics.median(ms):.2f} ms "
            f"(create {statistics.median(create):.2f}, delete {statistics.median(delete):.2f}; "
            f"CPU {statistics.median(times[kind + '_cpu']):.2f} ms) over {len(ms)}{suffix}"
        )
    med = max(statistics.median(times[k]) for k in deltas)
    if main:
        print("  " + ratio_line(f"{name} one-pod delta ms (the slower kind's median)", med, DELTA_TARGET_MS, True))
    else:
        print(
            f"  {name} one-pod delta (the slower kind's median) {med:.2f} ms, {med / DELTA_TARGET_MS:.2f}x the target"
        )
    return [snap, med]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deltas", type=int, default=100, help="create+delete pairs per kind (default 100)")
    ap.add_argument("--rounds", type=int, default=5, help="snapshots per backend (default 5)")
    ap.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    worst: dict[str, list[float]] = {}
    for shape in SHAPES.values() if args.shape == "all" else [SHAPES[args.shape]]:
        eng = Engine()
        gc.disable()
        t0 = time.perf_counter()
        eng.load(*cluster(shape))
        gc.enable()
        model = eng.model(NODE)
        deltas = node_deltas(eng, shape, args.deltas)
        rules = sum(len(c.rules) for c in model.chains.values())
        elems = sum(len(s) for s in model.sets.values())
        pods = len(set(model.ingress) | set(model.egress))
        print(f"{shape.name}: {shape.about} (engine load {time.perf_counter() - t0:.1f} s)")
        print(
            f"  {NODE}: {pods} pods isolated, {len(model.chains)} chains, {rules} rules, "
            f"{len(model.sets)} sets, {elems} set elements; deltas: "
            + ", ".join(f"{len(v)} {k}" for k, v in deltas.items())
        )
        for name in ("nftables", *(() if args.skip_iptables else ("iptables",))):
            main_ = name == "nftables"
            got = report(name, model, deltas, args.rounds if main_ else max(args.rounds // 2, 1), main_)
            worst[name] = [max(a, b) for a, b in zip(worst.get(name, got), got, strict=True)]
    snap, delta = worst["nftables"]
    print(
        f"nftables, worst shape: snapshot {snap:.3f} s ({snap / SNAPSHOT_TARGET_S:.2f}x of 1 s), "
        f"one-pod delta {delta:.2f} ms ({delta / DELTA_TARGET_MS:.2f}x of 10 ms) -> "
        + ("PASS" if snap <= SNAPSHOT_TARGET_S and delta <= DELTA_TARGET_MS else "FAIL")
    )


if __name__ == "__main__":
    main()
