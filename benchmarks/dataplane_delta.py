"""One-pod delta on a loaded node: median time from receipt of the delta to the kernel.

Target: ≤ 10 ms median, on a node holding 10,000 set elements and 1,000 chains.
"Receipt to kernel" = `apply_delta(delta, model)` called with the delta object in hand until it
returns (render + transaction committed). Run as root: `.venv/bin/python benchmarks/dataplane_delta.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dataplane_models import element_count, netns, pod_ip, ratio_line, synthetic

from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import NodeDelta, NodeModel, apply

TARGET_MS = 10.0


def one_pod_deltas(model: NodeModel, count: int) -> list[NodeDelta]:
    """A new pod appears: its IP joins one address set and gets an ingress chain (then leaves)."""
    chains = sorted(c for c in model.chains if c.startswith("in_"))
    sets = sorted(model.sets)
    out = []
    for i in range(count):
        ip = pod_ip(50_000 + i)
        sid, cid = sets[i % len(sets)], chains[i % len(chains)]
        out.append(NodeDelta(model.node, set_added={sid: frozenset({f"{ip}/32"})}, ingress_set={ip: cid}))
        out.append(NodeDelta(model.node, set_removed={sid: frozenset({f"{ip}/32"})}, ingress_removed=frozenset({ip})))
    return out


def measure(backend: NftablesBackend | IptablesBackend, model: NodeModel, count: int) -> list[float]:
    backend.apply_snapshot(model)
    times = []
    current = model
    for delta in one_pod_deltas(model, count):
        start = time.perf_counter()
        nxt = apply(current, delta)
        backend.apply_delta(delta, nxt)
        times.append((time.perf_counter() - start) * 1000)
        current = nxt
    assert backend.verify(model) == [], "the deltas did not return the kernel to the model"
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deltas", type=int, default=200)
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    # 1,000 chains (800 ingress + 200 egress), 10,000 set elements (800 sets x 12.5)
    model = synthetic(pods=5000, policies=800, set_size=12)
    extra = 10_000 - element_count(model)
    model.sets["fill"] = frozenset(f"{pod_ip(20_000 + i)}/32" for i in range(max(extra, 0)))
    print(
        f"node: {element_count(model)} set elements, {len(model.chains)} chains, "
        f"{len(model.ingress) + len(model.egress)} dispatch entries"
    )
    with netns("st-dp-bench-delta") as ns:
        nft = measure(NftablesBackend(ns), model, args.deltas)
        med = statistics.median(nft)
        p95 = sorted(nft)[int(len(nft) * 0.95)]
        print(f"nftables one-pod delta: median {med:.2f} ms, p95 {p95:.2f} ms over {len(nft)} deltas")
        print(ratio_line("nftables median ms", med, TARGET_MS, lower_is_better=True))
        cli = measure(NftablesBackend(ns, use_library=False), model, min(args.deltas, 50))
        print(f"  (same through the nft binary, fork+exec per delta: median {statistics.median(cli):.2f} ms)")
    if not args.skip_iptables:
        with netns("st-dp-bench-delta") as ns:
            ipt = measure(IptablesBackend(ns), model, min(args.deltas, 50))
            print(
                f"iptables one-pod delta: median {statistics.median(ipt):.2f} ms "
                f"(ratio to target {statistics.median(ipt) / TARGET_MS:.2f}x; informational)"
            )


if __name__ == "__main__":
    main()
