"""Policy engine at scale, in the shape of Antrea's published controller benchmark.

Scenarios (each in a fresh subprocess so RSS is its own):
  antrea   25,000 namespaces, 100,000 pods (4 each), 75,000 policies (3 each), 1,000 nodes
  1k       1,000 pods   (250 namespaces, 750 policies, 10 nodes)
  10k      10,000 pods  (2,500 namespaces, 7,500 policies, 100 nodes)
  wide     one namespace of 10,000 pods, 10,000 policies each selecting every pod, 100 nodes
  10k-dual the 10k cluster with every pod dual-stack (an IPv4 and an IPv6 address each)

Prints the cold compute time, peak RSS, per-change delta latency (median and p99 for one pod
added, one pod relabelled, one policy changed) and sustained pod events per second, each with
its ratio to the target (Antrea: 5.8-6.4 s and 1.5-1.7 GB for the large cluster; 10.7 s and
1.16 GB for `wide`).

usage: python benchmarks/engine_scale.py [antrea|1k|10k|10k-dual|wide ...]   (default: all but 10k-dual)
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

TARGETS = {
    "antrea": {"cold_s": 6.4, "rss_mb": 1700},
    "wide": {"cold_s": 10.7, "rss_mb": 1160},
}
DELTA_MEDIAN_MS, DELTA_P99_MS, EVENTS_PER_S = 5.0, 20.0, 1000.0


def ns_obj(i: int) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": f"ns-{i}", "labels": {"team": f"t{i % 100}"}}}


DUAL = False  # set for 10k-dual: every pod also gets the IPv6 address with the same host number


def pod_obj(ns: int, j: int, node: int, app: str | None = None, ip: str | None = None) -> dict[str, Any]:
    n = ns * 4 + j
    ip = ip or f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    ips = [ip]
    if DUAL:
        a, b, c, d = (int(x) for x in ip.split("."))
        ips.append(f"fd00:{a:x}:{b:x}:{c:x}::{d:x}")
    return {
        "kind": "Pod",
        "metadata": {"name": f"pod-{j}", "namespace": f"ns-{ns}", "labels": {"app": app or "abcd"[j % 4], "tier": "x"}},
        "spec": {"nodeName": f"node-{node}", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": a} for a in ips], "phase": "Running"},
    }


def policies_for(i: int, variant: int = 0) -> list[dict[str, Any]]:
    ns = f"ns-{i}"
    meta = lambda name: {"name": name, "namespace": ns}  # noqa: E731
    return [
        {
            "kind": "NetworkPolicy",
            "metadata": meta("allow-b-to-a"),
            "spec": {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80 + variant}]}
                ],
            },
        },
        {
            "kind": "NetworkPolicy",
            "metadata": meta("allow-team-to-b"),
            "spec": {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": f"t{i % 100}"}},
                                "podSelector": {"matchLabels": {"app": "c"}},
                            }
                        ],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        },
        {
            "kind": "NetworkPolicy",
            "metadata": meta("egress-dns-and-ns"),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"podSelector": {}}]},
                    {
                        "to": [{"ipBlock": {"cidr": "10.96.0.0/12", "except": ["10.96.0.0/24"]}}],
                        "ports": [{"protocol": "UDP", "port": 53}],
                    },
                ],
            },
        },
    ]


def cluster(namespaces: int, nodes: int) -> tuple[list, list, list]:  # type: ignore[type-arg]
    nss = [ns_obj(i) for i in range(namespaces)]
    pods = [pod_obj(i, j, (i * 4 + j) % nodes) for i in range(namespaces) for j in range(4)]
    pols = [p for i in range(namespaces) for p in policies_for(i)]
    return nss, pods, pols


def wide_cluster(pods: int, policies: int, nodes: int) -> tuple[list, list, list]:  # type: ignore[type-arg]
    nss = [{"kind": "Namespace", "metadata": {"name": "ns-0"}}]
    podl = [
        pod_obj(0, j, j % nodes, app=f"app-{j % 50}", ip=f"10.{j >> 16}.{(j >> 8) & 255}.{j & 255}")
        for j in range(pods)
    ]
    for j, p in enumerate(podl):
        p["metadata"]["name"] = f"pod-{j}"
    pols = [
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": f"pol-{k}", "namespace": "ns-0"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": f"app-{k % 50}"}}}],
                        "ports": [{"port": 1000 + k}],
                    }
                ],
            },
        }
        for k in range(policies)
    ]
    return nss, podl, pols


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(name: str) -> dict[str, Any]:
    global DUAL
    from stockade.brain.engine import Engine

    DUAL = name.endswith("-dual")
    name = name.removesuffix("-dual")
    if name == "antrea":
        nss, pods, pols, nodes = *cluster(25_000, 1000), 1000
    elif name == "1k":
        nss, pods, pols, nodes = *cluster(250, 10), 10
    elif name == "10k":
        nss, pods, pols, nodes = *cluster(2500, 100), 100
    else:
        nss, pods, pols, nodes = *wide_cluster(10_000, 10_000, 100), 100
    gc.collect()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    eng = Engine()
    gc.disable()  # the engine allocates many small long-lived objects; a full GC pass helps nothing here
    t0, c0 = time.perf_counter(), time.process_time()
    eng.load(nss, pods, pols)
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.enable()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_ns = len(nss)
    out: dict[str, Any] = {
        "scenario": name,
        "pods": len(pods),
        "policies": len(pols),
        "namespaces": n_ns,
        "nodes": nodes,
        "cold_s": round(cold, 3),
        "cold_cpu_s": round(cold_cpu, 3),
        "rss_peak_mb": round(peak),
        "rss_input_mb": round(base_rss),
        "sets_total": sum(len(eng.model(n).sets) for n in eng.nodes()[:10]),
    }
    # Per-change latency
    add, relabel, polchg = [], [], []
    for k in range(300):
        i = (k * 7919) % n_ns
        p = pod_obj(i, 4 + k, k % nodes, ip=f"172.16.{k >> 8}.{k & 255}")
        if name == "wide":
            p["metadata"]["name"] = f"extra-{k}"
        t = time.perf_counter()
        eng.upsert(p)
        add.append((time.perf_counter() - t) * 1000)
        p2 = json.loads(json.dumps(p))
        p2["metadata"]["labels"]["app"] = "b" if name != "wide" else "app-7"
        t = time.perf_counter()
        eng.upsert(p2)
        relabel.append((time.perf_counter() - t) * 1000)
        if name == "wide":
            pol = {
                "kind": "NetworkPolicy",
                "metadata": {"name": f"pol-{k}", "namespace": "ns-0"},
                "spec": {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": f"app-{k % 50}"}}}],
                            "ports": [{"port": 3000 + k}],
                        }
                    ],
                },
            }
        else:
            pol = policies_for(i, variant=1 + k % 2)[0]
        t = time.perf_counter()
        eng.upsert(pol)
        polchg.append((time.perf_counter() - t) * 1000)
    for label, xs in (("pod_add", add), ("pod_relabel", relabel), ("policy_change", polchg)):
        out[f"{label}_median_ms"] = round(statistics.median(xs), 3)
        out[f"{label}_p99_ms"] = round(pct(xs, 0.99), 3)
    # Sustained pod events: relabel churn
    n_ev = 3000
    t = time.perf_counter()
    for k in range(n_ev):
        i = (k * 104729) % n_ns
        j = k % 4
        if name == "wide":
            p = pods[(k * 13) % len(pods)]
            p = json.loads(json.dumps(p))
            p["metadata"]["labels"]["app"] = f"app-{k % 50}"
        else:
            p = pod_obj(i, j, (i * 4 + j) % nodes, app="abcd"[(j + k) % 4])
        eng.upsert(p)
    out["pod_events_per_s"] = round(n_ev / (time.perf_counter() - t))
    return out


def main() -> None:
    names = sys.argv[1:] or ["1k", "10k", "antrea", "wide"]
    if any(n in ("-h", "--help") for n in names):
        print(__doc__)
        return
    unknown = [
        n for n in names if n not in ("antrea", "1k", "10k", "10k-dual", "wide") and not n.startswith("--child=")
    ]
    if unknown:
        print(f"unknown scenario {unknown[0]!r}; see --help", file=sys.stderr)
        sys.exit(2)
    if len(names) == 1 and names[0].startswith("--child="):
        print(json.dumps(run(names[0].split("=", 1)[1])))
        return
    for name in names:
        proc = subprocess.run([sys.executable, __file__, f"--child={name}"], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        tgt = TARGETS.get(name)
        print(
            f"== {name}: {r['pods']} pods, {r['policies']} policies, {r['namespaces']} namespaces, {r['nodes']} nodes"
        )
        line = (
            f"  cold compute {r['cold_s']:.2f} s (CPU {r['cold_cpu_s']:.2f} s), "
            f"peak RSS {r['rss_peak_mb']} MB (inputs alone {r['rss_input_mb']} MB)"
        )
        if tgt:
            ratio_t, ratio_m = r["cold_s"] / tgt["cold_s"], r["rss_peak_mb"] / tgt["rss_mb"]
            line += f"  | ratio to target: time {ratio_t:.2f}x, memory {ratio_m:.2f}x"
        print(line)
        for label in ("pod_add", "pod_relabel", "policy_change"):
            med, p99 = r[f"{label}_median_ms"], r[f"{label}_p99_ms"]
            print(
                f"  {label:14s} median {med:7.3f} ms ({med / DELTA_MEDIAN_MS:.2f}x of 5 ms)"
                f"  p99 {p99:7.3f} ms ({p99 / DELTA_P99_MS:.2f}x of 20 ms)"
            )
        eps = r["pod_events_per_s"]
        print(f"  sustained pod events {eps}/s ({eps / EVENTS_PER_S:.2f}x of 1,000/s)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
