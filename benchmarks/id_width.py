"""The cost of full-width ids: the `engine_scale.py 10k` cluster compiled with 6-byte (the old
width) and 16-byte set and chain ids, alternately in fresh child processes of the same run.

Prints, per width, the median cold-compute CPU, the median CPU of 300 policy changes, and the
wire size of every node's snapshot (protobuf bytes), with the ratio of 16 bytes to 6 bytes.
Target: ≤ 1.10x CPU (ids are hashed once per set and chain; the rest of the work is unchanged).

usage: python benchmarks/id_width.py [rounds]     (default 3 rounds of each width)
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_CPU_RATIO = 1.10


def child(width: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).parent))
    import engine_scale  # the same cluster as `engine_scale.py 10k`

    from stockade.brain.engine import Engine
    from stockade.brain.engine import policy as policy_mod
    from stockade.codec import model_to_proto
    from stockade.model import rules as rules_mod

    policy_mod.SET_ID_BYTES = width
    rules_mod.CHAIN_ID_BYTES = width
    nss, pods, pols = engine_scale.cluster(2500, 100)
    eng = Engine()
    gc.collect()
    gc.disable()
    c0 = time.process_time()
    eng.load(nss, pods, pols)
    cold = time.process_time() - c0
    gc.enable()
    c0 = time.process_time()
    for k in range(300):
        eng.upsert(engine_scale.policies_for((k * 7919) % len(nss), variant=1 + k % 2)[0])
    changes = time.process_time() - c0
    wire = sum(model_to_proto(eng.model(n)).ByteSize() for n in eng.nodes())
    return {"cold_cpu_s": cold, "changes_cpu_s": changes, "wire_bytes": wire}


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].startswith("--child="):
        print(json.dumps(child(int(sys.argv[1].split("=", 1)[1]))))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results: dict[int, list[dict[str, float]]] = {6: [], 16: []}
    for _ in range(rounds):
        for width in (6, 16):  # alternated, so load on the machine hits both alike
            out = subprocess.run(
                [sys.executable, __file__, f"--child={width}"], capture_output=True, text=True, check=True
            )
            results[width].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    print(f"== id width on the 10k cluster ({rounds} rounds each, medians)")
    for w in (6, 16):
        m = med[w]
        print(
            f"  {w:2d} bytes: cold compute CPU {m['cold_cpu_s']:.2f} s, 300 policy changes CPU "
            f"{m['changes_cpu_s']:.2f} s, snapshots of every node {m['wire_bytes'] / 1e6:.2f} MB"
        )
    cold = med[16]["cold_cpu_s"] / med[6]["cold_cpu_s"]
    changes = med[16]["changes_cpu_s"] / med[6]["changes_cpu_s"]
    wire = med[16]["wire_bytes"] / med[6]["wire_bytes"]
    print(
        f"  16 vs 6 bytes: cold CPU {cold:.2f}x, policy changes CPU {changes:.2f}x, wire {wire:.2f}x"
        f"  | ratio to target ({TARGET_CPU_RATIO:.2f}x CPU): {max(cold, changes) / TARGET_CPU_RATIO:.2f}"
    )


if __name__ == "__main__":
    main()
