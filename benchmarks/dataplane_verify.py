"""The periodic verify (read back, compare with the model) at 10,000 pods / 2,000 policies: what
comparing every rule's content costs beside comparing rule counts (``--baseline REV``'s
read-back, loaded from git, on the same listing).

Per round and backend, alternating: today's ``verify`` as the agent runs it, and the baseline's
parse + desired + differences on a listing read the same way. CPU seconds (user + system of
this process and of the children it waited for: libnftables runs in-process, iptables-save and
ipset as children) are the figure that survives a loaded machine. Run as root:
``.venv/bin/python benchmarks/dataplane_verify.py [--baseline HEAD] [--rounds 5] [--skip-iptables]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from dataplane_models import netns, synthetic

from stockade.agent.backends import ipt_render, nft_render
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import NodeModel

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = "services/node-agent/stockade/agent/backends"


def load(rev: str, module: str) -> ModuleType:
    """``backends/<module>.py`` as of ``rev``, imported from a temporary copy (it imports today's
    renderers, which the read-back's change left alone)."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{BACKENDS}/{module}.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{module}_{rev.replace('/', '_')}.py"
        path.write_bytes(text)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
        return mod


def cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result)."""
    c, w = cpu(), time.perf_counter()
    out = fn()
    return cpu() - c, time.perf_counter() - w, out


def report(label: str, runs: list[tuple[float, float]]) -> float:
    cpus, walls = [c for c, _ in runs], [w for _, w in runs]
    med = statistics.median(cpus)
    print(
        f"  {label}: CPU median {med:.3f} s {[round(c, 3) for c in cpus]}, wall median {statistics.median(walls):.3f} s"
    )
    return med


def bench_nft(model: NodeModel, rev: str | None, rounds: int) -> None:
    old = load(rev, "nft_readback") if rev else None
    with netns("st-dp-bench-verify") as ns:
        backend = NftablesBackend(ns)
        backend.apply_snapshot(model)
        c, w, _ = measured(NftablesBackend(ns).fixed_reference)  # once per agent process (a fresh backend)
        print(f"nftables (scratch-table reference, once per process: CPU {c:.3f} s, wall {w:.3f} s)")
        today: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        listing: list[tuple[float, float]] = []
        for _ in range(rounds):
            c, w, problems = measured(lambda: backend.verify(model))
            assert problems == [], problems
            today.append((c, w))
            if old is not None:

                def baseline() -> list[str]:
                    ok, out, err = backend._nft.run(f"list table {nft_render.TABLE}", json=True)
                    assert ok, err
                    return old.differences(old.parse(out), old.desired(model, backend.config))  # type: ignore[no-any-return]

                c, w, problems = measured(baseline)
                assert problems == [], problems
                base.append((c, w))
            c, w, _ = measured(lambda: backend._nft.run(f"list table {nft_render.TABLE}", json=True))
            listing.append((c, w))
        t = report("verify today (every rule compared)", today)
        report("of which the listing alone (nft -j list table)", listing)
        if base:
            b = report(f"verify at {rev} (rule counts)", base)
            print(f"  today / {rev} (CPU medians): {t / b:.2f}")


def bench_ipt(model: NodeModel, rev: str | None, rounds: int) -> None:
    old = load(rev, "ipt_readback") if rev else None
    with netns("st-dp-bench-verify") as ns:
        backend = IptablesBackend(ns)
        backend.apply_snapshot(model)
        print("iptables")
        today: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        for _ in range(rounds):
            c, w, problems = measured(lambda: backend.verify(model))
            assert problems == [], problems
            today.append((c, w))
            if old is not None:

                def baseline() -> list[str]:
                    saves = {
                        f: backend._run([ipt_render.tool(f, "save", backend.variant), "-c", "-t", "filter"])
                        for f in backend.versions
                    }
                    view = old.parse(backend._run(["ipset", "save"]), saves[4], saves.get(6))
                    want = old.desired(
                        model, backend.nflog_group, backend.log_rate, backend.seen_timeout, backend.versions
                    )
                    return old.differences(view, want)  # type: ignore[no-any-return]

                c, w, problems = measured(baseline)
                assert problems == [], problems
                base.append((c, w))
        t = report("verify today (every rule compared)", today)
        if base:
            b = report(f"verify at {rev} (rule counts)", base)
            print(f"  today / {rev} (CPU medians): {t / b:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=2_000)
    ap.add_argument("--baseline", metavar="REV", help="also run this git revision's read-back (e.g. HEAD)")
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    model = synthetic(args.pods, args.policies, 10)
    print(f"{args.pods} pods, {args.policies} policies: {len(model.chains)} chains, {len(model.sets)} address sets")
    bench_nft(model, args.baseline, args.rounds)
    if not args.skip_iptables:
        bench_ipt(model, args.baseline, args.rounds)


if __name__ == "__main__":
    main()
