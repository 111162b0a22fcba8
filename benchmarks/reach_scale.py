"""`stockade reach` on 10,000 pods (issue 14 item 5: ≤ 30 s and ≤ 1 GB on any number of nodes).

Generates a realistic cluster: 40 namespaces (team/env labels), 320 Deployments whose replicas
sum to 10,000 (app/tier/version labels, one or two container ports, some named), and a few
hundred NetworkPolicies (a default deny per namespace, tier-to-tier allows by pod and namespace
selectors, named ports, ipBlocks with excepts, egress to DNS). Then runs the real CLI,
`stockade reach -f FILE -o json` with the JSON going to /dev/null, once per node count, and
prints the wall time and the child's peak RSS with their ratios to the targets.

Run: .venv/bin/python benchmarks/reach_scale.py [--pods 10000] [--nodes 3,100,1000]
"""

from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

TARGET_S, TARGET_MB = 30.0, 1024.0
TIERS = ("web", "api", "worker", "cache", "db")


def cluster(pods: int, namespaces: int = 40, deployments: int = 320, seed: int = 14) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(namespaces):
        labels = {"team": f"team-{n % 8}", "env": ("prod", "staging")[n % 2], "kubernetes.io/metadata.name": f"ns-{n}"}
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}", "labels": labels}})
    base, extra = divmod(pods, deployments)
    for d in range(deployments):
        ns, tier = f"ns-{d % namespaces}", TIERS[d % len(TIERS)]
        ports: list[dict[str, Any]] = [{"containerPort": 8080 + TIERS.index(tier), "name": f"{tier}-port"}]
        if d % 3 == 0:
            ports.append({"containerPort": 9090, "name": "metrics"})
        labels = {"app": f"app-{d}", "tier": tier, "version": f"v{rng.randint(1, 3)}"}
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{d}", "namespace": ns},
                "spec": {
                    "replicas": base + (1 if d < extra else 0),
                    "selector": {"matchLabels": {"app": f"app-{d}"}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "main", "image": "example/app:1", "ports": ports}]},
                    },
                },
            }
        )
    for n in range(namespaces):
        ns = f"ns-{n}"
        out.append(_policy(ns, "default-deny", {}, ingress=[], egress=None))
        for i, (src, dst) in enumerate(itertools.pairwise(TIERS)):
            rule: dict[str, Any] = {
                "from": [
                    {"podSelector": {"matchLabels": {"tier": src}}},
                    {"namespaceSelector": {"matchLabels": {"team": f"team-{(n + i) % 8}"}}},
                ],
                "ports": [{"port": f"{dst}-port"}],
            }
            out.append(_policy(ns, f"{src}-to-{dst}", {"matchLabels": {"tier": dst}}, ingress=[rule], egress=None))
        out.append(
            _policy(
                ns,
                "metrics-from-monitoring",
                {"matchExpressions": [{"key": "version", "operator": "In", "values": ["v1", "v2"]}]},
                ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"10.244.{n % 3 + 1}.0/24"]}}]}],
                egress=None,
            )
        )
        if n % 4 == 0:
            out.append(
                _policy(
                    ns,
                    "egress-dns-and-db",
                    {"matchLabels": {"tier": "api"}},
                    ingress=None,
                    egress=[
                        {"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}]},
                        {"ports": [{"port": 53, "protocol": "UDP"}]},
                    ],
                )
            )
    return out


def _policy(
    ns: str, name: str, selector: dict[str, Any], ingress: list[Any] | None, egress: list[Any] | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def measure(path: Path, nodes: int) -> tuple[float, float]:
    """Time and peak RSS of the CLI run, taken in a fresh process so earlier runs do not count."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "dt = time.perf_counter() - t0\n"
        "if p.returncode: sys.exit(p.stderr[-2000:])\n"
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    cmd = [sys.executable, "-m", "stockade.cli.main", "reach", "-f", str(path), "--nodes", str(nodes), "-o", "json"]
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"stockade reach failed: {out.stderr}")
    seconds, mb = out.stdout.split()
    return float(seconds), float(mb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--nodes", default="3,100,1000", help="comma-separated node counts (default 3,100,1000)")
    a = ap.parse_args()
    objs = cluster(a.pods)
    policies = sum(1 for o in objs if o["kind"] == "NetworkPolicy")
    with tempfile.TemporaryDirectory(prefix="reach-scale-") as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
        print(f"cluster: {a.pods:,} pods, {policies} NetworkPolicies, {path.stat().st_size / 1e6:.1f} MB of YAML")
        for nodes in (int(n) for n in a.nodes.split(",")):
            seconds, mb = measure(path, nodes)
            print(
                f"reach -o json, {nodes} nodes: {seconds:.1f} s ({seconds / TARGET_S:.2f} of {TARGET_S:.0f} s), "
                f"peak RSS {mb:.0f} MB ({mb / TARGET_MB:.2f} of {TARGET_MB:.0f} MB)"
            )


if __name__ == "__main__":
    main()
