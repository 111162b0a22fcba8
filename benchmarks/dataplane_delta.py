"""One-pod delta on a loaded node: median time from receipt of the delta to the kernel.

Target: ≤ 10 ms median, on a node holding 10,000 set elements and 1,000 chains, also in
dual-stack: there every pod has an IPv6 address too (10,000 elements per family), and the
one-pod delta carries both of its addresses (two set elements, two dispatch entries, one
transaction). ``--ip-family both`` (default) measures the IPv4-only node beside it.
"Receipt to kernel" = `apply_delta(delta, model)` called with the delta object in hand until it
returns (render + transaction committed).
Run as root: `.venv/bin/python benchmarks/dataplane_delta.py [--ip-family ipv4|dual|both]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack

from dataplane_models import FAMILIES, element_count, netns, pod_cidrs, pod_ip, pod_ip6, ratio_line, synthetic

from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import NodeDelta, NodeModel, apply

TARGET_MS = 10.0


def one_pod_deltas(model: NodeModel, count: int, dual: bool) -> list[NodeDelta]:
    """A new pod appears: its IPs join one address set and get an ingress chain (then it leaves)."""
    chains = sorted(c for c in model.chains if c.startswith("in_"))
    sets = sorted(model.sets)
    out = []
    for i in range(count):
        ips = [pod_ip(50_000 + i), *([pod_ip6(50_000 + i)] if dual else [])]
        elems = frozenset(pod_cidrs(50_000 + i, dual))
        sid, cid = sets[i % len(sets)], chains[i % len(chains)]
        out.append(NodeDelta(model.node, set_added={sid: elems}, ingress_set=dict.fromkeys(ips, cid)))
        out.append(NodeDelta(model.node, set_removed={sid: elems}, ingress_removed=frozenset(ips)))
    return out


def measure(backend: NftablesBackend | IptablesBackend, model: NodeModel, count: int, dual: bool) -> list[float]:
    return measure_side_by_side({"": (backend, model, dual)}, count)[""]


def measure_side_by_side(
    runs: dict[str, tuple[NftablesBackend | IptablesBackend, NodeModel, bool]], count: int
) -> dict[str, list[float]]:
    """Per run: milliseconds per delta; the runs' deltas alternate, so machine noise hits them alike."""
    for backend, model, _ in runs.values():
        backend.apply_snapshot(model)
    deltas = {k: one_pod_deltas(model, count, dual) for k, (_, model, dual) in runs.items()}
    current = {k: model for k, (_, model, _) in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(2 * count):
        for k, (backend, _, _) in runs.items():
            delta = deltas[k][i]
            start = time.perf_counter()
            nxt = apply(current[k], delta)
            backend.apply_delta(delta, nxt)
            times[k].append((time.perf_counter() - start) * 1000)
            current[k] = nxt
    for k, (backend, model, _) in runs.items():
        assert backend.verify(model) == [], f"{k}: the deltas did not return the kernel to the model"
    return times


def node_model(dual: bool) -> NodeModel:
    """1,000 chains (800 ingress + 200 egress), 10,000 set elements per family (800 sets x 12.5)."""
    model = synthetic(pods=5000, policies=800, set_size=12, dual=dual)
    per_family = element_count(model) // (2 if dual else 1)
    extra = max(10_000 - per_family, 0)
    model.sets["fill"] = frozenset(e for i in range(extra) for e in pod_cidrs(20_000 + i, dual))
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deltas", type=int, default=200)
    ap.add_argument("--ip-family", choices=[*FAMILIES, "both"], default="both")
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    families = list(FAMILIES) if args.ip_family == "both" else [args.ip_family]
    models = {f: node_model(f == "dual") for f in families}
    for family, model in models.items():
        print(
            f"{family} node: {element_count(model)} set elements, {len(model.chains)} chains, "
            f"{len(model.ingress) + len(model.egress)} dispatch entries"
        )
    with ExitStack() as stack:
        spaces = {f: stack.enter_context(netns(f"st-dp-bench-delta-{f[:2]}")) for f in families}
        nft = measure_side_by_side(
            {f: (NftablesBackend(spaces[f]), models[f], f == "dual") for f in families}, args.deltas
        )
        cli = measure_side_by_side(
            {f: (NftablesBackend(spaces[f], use_library=False), models[f], f == "dual") for f in families},
            min(args.deltas, 50),
        )
    medians = {}
    for family, times in nft.items():
        med = medians[family] = statistics.median(times)
        p95 = sorted(times)[int(len(times) * 0.95)]
        print(f"nftables {family} one-pod delta: median {med:.2f} ms, p95 {p95:.2f} ms over {len(times)} deltas")
        print(ratio_line(f"nftables {family} median ms", med, TARGET_MS, lower_is_better=True))
        print(f"  (same through the nft binary, fork+exec per delta: median {statistics.median(cli[family]):.2f} ms)")
    if len(medians) == 2:
        ratio = medians["dual"] / medians["ipv4"]
        print(f"dual-stack / IPv4-only one-pod delta (medians, deltas alternating): {ratio:.2f}")
    if not args.skip_iptables:
        for family, model in models.items():
            with netns("st-dp-bench-delta") as ns:
                try:
                    ipt = measure(IptablesBackend(ns), model, min(args.deltas, 50), family == "dual")
                except Exception as e:  # informational only: report and go on
                    print(f"iptables {family} one-pod delta failed: {e}")
                    continue
            print(
                f"iptables {family} one-pod delta: median {statistics.median(ipt):.2f} ms "
                f"(ratio to target {statistics.median(ipt) / TARGET_MS:.2f}x; informational)"
            )


if __name__ == "__main__":
    main()
