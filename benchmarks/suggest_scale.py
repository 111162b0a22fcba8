"""`stockade suggest` and `dry-run` on larger clusters: CPU-seconds, and dry-run's comparison of the
affected pairs only against comparing every pair (the baseline, measured in the same run).

The cluster: N pods over 10 namespaces on one node, each namespace default-deny for ingress
with a policy whose subject has a typo (`app: ap0x`), pods labelled `app: appK` (20 groups, so
peers share labels); 50 blocked flows inside the namespaces. `suggest` then mends the typos that
admit some flows and writes new policies for the rest, and lists what else they open.
Run: `.venv/bin/python benchmarks/suggest_scale.py [--pods 100,300,1000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from stockade.brain.admin.dryrun import compile_objects, dry_run
from stockade.brain.admin.reachability import reach
from stockade.brain.admin.suggest import suggest
from stockade.brain.admin.suggest_judge import Flow

NAMESPACES = 10


def cluster(pods: int) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [{"kind": "Node", "metadata": {"name": "node-1"}}]
    for n in range(NAMESPACES):
        ns = f"ns{n}"
        objs.append({"kind": "Namespace", "metadata": {"name": ns}})
        objs.append(_np(ns, "deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
        peer = {"podSelector": {"matchLabels": {"app": "app1"}}}
        objs.append(_np(ns, "typo", {"podSelector": {"matchLabels": {"app": "ap0x"}}, "ingress": [{"from": [peer]}]}))
    for i in range(pods):
        objs.append(
            {
                "kind": "Pod",
                "metadata": {
                    "namespace": f"ns{i % NAMESPACES}",
                    "name": f"p{i}",
                    "labels": {"app": f"app{(i // 10) % 20}"},
                },
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
                "status": {"phase": "Running", "podIP": f"10.{i // 250}.{i % 250}.5"},
            }
        )
    return objs


def _np(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec}


def flows() -> list[Flow]:
    return [Flow(f"ns{i % NAMESPACES}/p{i + NAMESPACES}", f"ns{i % NAMESPACES}/p{i}", 80) for i in range(50)]


def every_pair(objects: list[dict[str, Any]], changes: list[dict[str, Any]]) -> int:
    """The baseline: both engines, every pair compared (what dry-run did before)."""
    before, after = compile_objects(objects), compile_objects(objects)
    for c in changes:
        after.upsert(c)
    old = {(p.src, p.dst, p.port, p.family): p.allowed for p in reach(before)}
    new = {(p.src, p.dst, p.port, p.family): p.allowed for p in reach(after)}
    return sum(1 for k, was in old.items() if new[k] != was)


def cpu(fn: Any, *args: Any) -> tuple[float, Any]:
    t = time.process_time()
    out = fn(*args)
    return time.process_time() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", default="100,300,1000", help="cluster sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    head = f"{'pods':>5} {'suggest s':>10} {'changes':>8} {'also opens':>10}"
    print(f"{head} {'dry-run s':>10} {'every pair s':>13} {'ratio':>6}")
    for n in (int(x) for x in a.pods.split(",")):
        objs = cluster(n)
        s_times, d_times, b_times = [], [], []
        for _ in range(a.runs):
            t, got = cpu(suggest, objs, flows())
            s_times.append(t)
            changes = [c.manifest for c in got.changes]
            t, dry = cpu(dry_run, objs, changes)
            d_times.append(t)
            t, differing = cpu(every_pair, objs, changes)
            b_times.append(t)
            assert differing == len(dry.opened) + len(dry.closed), "the affected pairs missed a change"
            assert sorted(got.admitted) == sorted(flows()), "a flow was not admitted"
        s, d, b = (statistics.median(x) for x in (s_times, d_times, b_times))
        print(f"{n:>5} {s:>10.2f} {len(got.changes):>8} {len(got.also_opens):>10} {d:>10.2f} {b:>13.2f} {d / b:>6.2f}")
    print("CPU-seconds of this process, medians; ratio: dry-run of the suggestion / every pair compared")


if __name__ == "__main__":
    main()
