"""ClusterNetworkPolicy in the engine at the Antrea benchmark's shape.

The cluster of `engine_scale.py antrea` (25,000 namespaces, 100,000 pods, 75,000 NetworkPolicies,
1,000 nodes), compiled cold with and without 1,000 ClusterNetworkPolicies (500 Admin, 500
Baseline; each selects the namespaces of one of 100 teams and has an ingress and an egress rule),
each run in a fresh subprocess, alternating, three of each. Prints the median cold compute
(wall and CPU seconds) of both and their ratio to the target (CNPs <= 1.2x NetworkPolicy-only),
then the latency of one ClusterNetworkPolicy change (median, p99) in the CNP cluster.

usage: python benchmarks/engine_cnp.py [--runs N] [--namespaces N]   (default 3 runs, 25,000)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import engine_scale  # beside this script: on the path when run as one

TARGET_RATIO = 1.2
API = "policy.networking.k8s.io/v1alpha2"


def team(k: int) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"team": f"t{k % 100}"}}}


def cnp(k: int, tier: str, variant: int = 0) -> dict[str, Any]:
    if tier == "Admin":
        spec = {
            "tier": "Admin",
            "priority": k % 1000,
            "subject": team(k),
            "ingress": [{"name": "other-teams", "action": "Deny", "from": [team(k + 1 + variant)]}],
            "egress": [
                {
                    "name": "own-apps",
                    "action": "Accept",
                    "to": [{"pods": {"namespaceSelector": team(k)["namespaces"], "podSelector": {}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 8080 + variant}}}],
                }
            ],
        }
    else:
        spec = {
            "tier": "Baseline",
            "priority": k % 1000,
            "subject": team(k),
            "ingress": [{"name": "default-deny", "action": "Deny", "from": [{"namespaces": {}}]}],
            "egress": [{"name": "no-metadata", "action": "Deny", "to": [{"networks": [f"169.254.{variant}.0/24"]}]}],
        }
    return {
        "apiVersion": API,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"{tier.lower()}-{k}"},
        "spec": spec,
    }


def cnps() -> list[dict[str, Any]]:
    return [cnp(k, "Admin") for k in range(500)] + [cnp(k, "Baseline") for k in range(500)]


def child(with_cnps: bool, namespaces: int) -> dict[str, Any]:
    from stockade.brain.engine import Engine

    nss, pods, pols = engine_scale.cluster(namespaces, 1000)
    extra = cnps() if with_cnps else []
    gc.collect()
    eng = Engine()
    gc.disable()
    t0, c0 = time.perf_counter(), time.process_time()
    eng.load(nss, pods, pols, cluster_policies=extra)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.enable()
    out: dict[str, Any] = {"cold_s": wall, "cold_cpu_s": cpu, "rejected": len(eng.rejections())}
    if with_cnps:
        sample = eng.model(eng.nodes()[0])
        out["tier_entries_node0"] = len(sample.admin_ingress) + len(sample.baseline_ingress)
        lat = []
        for k in range(60):
            t = time.perf_counter()
            eng.upsert(cnp(k * 7 % 500, "Admin", variant=1 + k % 2))
            lat.append((time.perf_counter() - t) * 1000)
        out["cnp_change_median_ms"] = statistics.median(lat)
        out["cnp_change_p99_ms"] = sorted(lat)[min(len(lat) - 1, int(0.99 * len(lat)))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--namespaces", type=int, default=25_000)
    ap.add_argument("--child", choices=["np", "cnp"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "cnp", args.namespaces)))
        return
    results: dict[str, list[dict[str, Any]]] = {"np": [], "cnp": []}
    for i in range(args.runs):
        for kind in ("np", "cnp") if i % 2 == 0 else ("cnp", "np"):
            cmd = [sys.executable, __file__, f"--child={kind}", f"--namespaces={args.namespaces}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{kind}: failed\n{proc.stderr}", file=sys.stderr)
                sys.exit(1)
            results[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  run {i + 1} {kind:3}: cold {results[kind][-1]['cold_s']:.2f} s", flush=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    np_wall, cnp_wall = med("np", "cold_s"), med("cnp", "cold_s")
    np_cpu, cnp_cpu = med("np", "cold_cpu_s"), med("cnp", "cold_cpu_s")
    pods = args.namespaces * 4
    print(
        f"== cold compute, {pods:,} pods, {args.namespaces * 3:,} NetworkPolicies, 1,000 nodes (median of {args.runs})"
    )
    print(f"NetworkPolicy only:          {np_wall:.2f} s wall, {np_cpu:.2f} s CPU")
    print(f"+ 500 Admin + 500 Baseline:  {cnp_wall:.2f} s wall, {cnp_cpu:.2f} s CPU")
    ratio = cnp_cpu / np_cpu
    print(f"ratio (CPU): {ratio:.3f}  (target <= {TARGET_RATIO}: {ratio / TARGET_RATIO:.2f} of it)")
    print(f"ratio (wall): {cnp_wall / np_wall:.3f}")
    last = results["cnp"][-1]
    print(
        f"one ClusterNetworkPolicy change: median {med('cnp', 'cnp_change_median_ms'):.1f} ms, "
        f"p99 {med('cnp', 'cnp_change_p99_ms'):.1f} ms; tier dispatch entries on node-0: {last['tier_entries_node0']}"
    )
    if any(r["rejected"] for r in results["cnp"]):
        print("WARNING: some objects were rejected", file=sys.stderr)


if __name__ == "__main__":
    main()
