"""Full snapshot for 10,000 pods and 2,000 policies: render + one transaction, target ≤ 2 s.

The target holds for a dual-stack node (every pod with an IPv4 and an IPv6 address: twice the
set elements and dispatch entries, twin sets, peer rules per family); ``--ip-family both``
(default) times the IPv4-only node beside it, rounds alternating, and prints the ratio.
Also times the restart path (a new backend re-applying the same model onto the kernel that
already holds it: read back, compare, apply nothing) and the iptables backend for comparison.
Run as root: `.venv/bin/python benchmarks/dataplane_snapshot.py [--ip-family ipv4|dual|both]`.

``--baseline REV`` (e.g. 331c2cf, the last IPv4-only renderer) adds a side-by-side run: that
revision's ``nft_render.py`` (loaded from git into a temporary directory) on the IPv4 model
against today's renderer on the IPv4 and the dual-stack model, rounds alternating, each a
render plus one libnftables transaction into an empty namespace; it prints the CPU seconds
(user and system: libnftables and the kernel's work on the transaction run in this process)
and their ratios, the figure that survives a loaded machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from dataplane_models import FAMILIES, element_count, netns, ratio_line, synthetic

from stockade.agent.backends import nft_render
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.agent.backends.nftlib import NftRunner
from stockade.model import NodeModel

TARGET_S = 2.0


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def run_nft(models: dict[str, NodeModel], rounds: int) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per family: (cold snapshot seconds, its CPU seconds, restart seconds), rounds alternating
    between families. The CPU seconds are this process's, user and system: rendering, libnftables
    and the kernel's work on the transaction all run in it, so on a busy machine they show what
    the snapshot costs when it has a CPU to itself."""
    out: dict[str, tuple[list[float], list[float], list[float]]] = {f: ([], [], []) for f in models}
    for _ in range(rounds):
        for family, model in models.items():
            cold, cpu, restart = out[family]
            with netns("st-dp-bench-snap") as ns:
                before = time.process_time()
                cold.append(timed(NftablesBackend(ns).apply_snapshot, model))
                cpu.append(time.process_time() - before)
                fresh = NftablesBackend(ns)
                restart.append(timed(fresh.apply_snapshot, model))
                assert fresh.transactions == 0 and fresh.verify(model) == []
    return out


RENDERER = "services/node-agent/stockade/agent/backends/nft_render.py"


def old_renderer(rev: str) -> ModuleType:
    """``nft_render`` as of ``rev``, imported from a temporary copy (it uses today's `elements`
    and `names`, whose IPv4 functions are unchanged)."""
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "show", f"{rev}:{RENDERER}"], cwd=root, check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"nft_render_{rev}.py"
        path.write_bytes(text)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    return module


def cpu_of(render: Callable[[], str]) -> tuple[float, float, float, int]:
    """(user, system, wall) seconds of rendering and applying one snapshot into an empty
    namespace, and the script's size in bytes."""
    with netns("st-dp-bench-side") as ns:
        runner = NftRunner(ns)
        before, start = os.times(), time.perf_counter()
        script = render()
        ok, _, err = runner.run(script)
        wall, after = time.perf_counter() - start, os.times()
        runner.close()
    assert ok, err
    return after.user - before.user, after.system - before.system, wall, len(script)


def side_by_side(rev: str, models: dict[str, NodeModel], rounds: int) -> None:
    old = old_renderer(rev)
    cases: dict[str, Callable[[], str]] = {
        f"{rev} renderer, ipv4 model": lambda: str(old.render_snapshot(models["ipv4"], old.NftConfig())),
        "today's renderer, ipv4 model": lambda: nft_render.render_snapshot(models["ipv4"], nft_render.NftConfig()),
        "today's renderer, dual model": lambda: nft_render.render_snapshot(models["dual"], nft_render.NftConfig()),
    }
    runs: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, render in cases.items():
            runs[name].append(cpu_of(render))
    cpu = {}
    print(f"side by side, {rounds} rounds alternating (render + one libnftables transaction, empty namespace):")
    for name, results in runs.items():
        cpu[name] = statistics.median(u + s for u, s, _, _ in results)
        user = statistics.median(u for u, _, _, _ in results)
        system = statistics.median(s for _, s, _, _ in results)
        wall = statistics.median(w for _, _, w, _ in results)
        print(
            f"  {name}: CPU median {cpu[name]:.3f} s (user {user:.3f}, system {system:.3f}), "
            f"wall {wall:.3f} s, script {results[0][3] / 1e6:.2f} MB; CPU {[round(u + s, 2) for u, s, _, _ in results]}"
        )
    base, v4, dual = cpu.values()
    print(f"  today ipv4 / {rev} ipv4 (CPU medians): {v4 / base:.2f}")
    print(f"  today dual / {rev} ipv4 (CPU medians): {dual / base:.2f}")
    print(f"  today dual / today ipv4 (CPU medians): {dual / v4:.2f}")
    print(ratio_line("  today's dual snapshot CPU seconds", dual, TARGET_S, lower_is_better=True))


def describe(family: str, model: NodeModel) -> str:
    return (
        f"{family} model: {len(model.ingress)} ingress + {len(model.egress)} egress dispatch entries, "
        f"{len(model.chains)} chains, {len(model.sets)} address sets, {element_count(model)} set elements"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ip-family", choices=[*FAMILIES, "both"], default="both")
    ap.add_argument("--skip-iptables", action="store_true")
    ap.add_argument("--baseline", metavar="REV", help="also compare with this git revision's renderer (CPU)")
    ap.add_argument("--baseline-rounds", type=int, default=5)
    args = ap.parse_args()
    families = list(FAMILIES) if args.ip_family == "both" else [args.ip_family]
    models = {f: synthetic(pods=10_000, policies=2_000, set_size=10, dual=f == "dual") for f in families}
    for family, model in models.items():
        print(describe(family, model))
    if args.baseline:
        both = models if len(models) == 2 else {f: synthetic(10_000, 2_000, 10, dual=f == "dual") for f in FAMILIES}
        side_by_side(args.baseline, both, args.baseline_rounds)
    results = run_nft(models, args.rounds)
    medians = {}
    cpu_medians = {}
    for family, (cold, cpu, restart) in results.items():
        med = medians[family] = statistics.median(cold)
        cpu_med = cpu_medians[family] = statistics.median(cpu)
        print(
            f"nftables full snapshot, {family} (empty kernel): median {med:.3f} s over {len(cold)} runs "
            f"{[round(c, 3) for c in cold]}; CPU median {cpu_med:.3f} s {[round(c, 3) for c in cpu]}"
        )
        print(ratio_line(f"nftables {family} snapshot seconds", med, TARGET_S, lower_is_better=True))
        print(ratio_line(f"nftables {family} snapshot CPU seconds", cpu_med, TARGET_S, lower_is_better=True))
        print(
            f"nftables {family} restart onto the same state (read back, diff, no change): "
            f"median {statistics.median(restart):.3f} s"
        )
    if len(medians) == 2:
        print(f"dual-stack / IPv4-only snapshot CPU time (medians): {cpu_medians['dual'] / cpu_medians['ipv4']:.2f}")
        print(f"dual-stack / IPv4-only snapshot time (medians, alternating): {medians['dual'] / medians['ipv4']:.2f}")
    if not args.skip_iptables:
        for family, model in models.items():
            with netns("st-dp-bench-snap") as ns:
                try:
                    t = timed(IptablesBackend(ns).apply_snapshot, model)
                except Exception as e:  # informational only: report and go on
                    print(f"iptables {family} full snapshot failed: {e}")
                    continue
            print(f"iptables {family} full snapshot: {t:.3f} s (ratio to target {t / TARGET_S:.2f}x; informational)")


if __name__ == "__main__":
    main()
