"""ipBlock except arithmetic: the worst valid policies of issue 11, parsed and compiled.

issue 11 measured an ipBlock ``::/0`` with 1,000 IPv6 excepts at 86 s (the excepts were
subtracted one by one, each against every CIDR left so far: quadratic). The block is now the
CIDR cover of the gaps between the sorted excepts, one walk: linear in the excepts and in the
CIDRs produced. Each case is parsed and compiled (one policy, one pod) from cold caches, several
times; the median is printed with its ratio to the 100 ms target ("the worst valid policy
≤ 100 ms").

Cases: 1,000 IPv6 /64 excepts spread over ::/0 (evenly and at random), 1,000 random /128 excepts
(the most CIDRs a block can need: about 117,000), and 1,000 IPv4 /32 excepts in 0.0.0.0/0.

usage: python benchmarks/engine_ipblock.py [--repeat N]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import time
from typing import Any

TARGET_MS = 100.0


def cases() -> dict[str, tuple[str, list[str]]]:
    rnd = random.Random(11)
    return {
        "::/0, 1,000 evenly spread /64 excepts": ("::/0", [f"fd00:{i:x}::/64" for i in range(1000)]),
        "::/0, 1,000 random /64 excepts": (
            "::/0",
            [str(ipaddress.IPv6Network((rnd.getrandbits(64) << 64, 64))) for _ in range(1000)],
        ),
        "::/0, 1,000 random /128 excepts": (
            "::/0",
            [str(ipaddress.IPv6Network((rnd.getrandbits(128), 128))) for _ in range(1000)],
        ),
        "0.0.0.0/0, 1,000 random /32 excepts": (
            "0.0.0.0/0",
            [str(ipaddress.IPv4Network((rnd.getrandbits(32), 32))) for _ in range(1000)],
        ),
    }


def policy(cidr: str, excepts: list[str]) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "wide-block", "namespace": "x"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": excepts}}]}]},
    }


def once(cidr: str, excepts: list[str]) -> tuple[float, int]:
    from stockade.brain.engine import Engine
    from stockade.brain.engine import policy as pol

    pol._ipblock.cache_clear()  # cold: nothing learnt from the previous run
    pol._block_networks.cache_clear()
    pol._block_index.cache_clear()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "node-1"},
        "status": {"podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}, {"ip": "fd00:10:244:1::2"}]},
    }
    eng = Engine()
    eng.load([{"kind": "Namespace", "metadata": {"name": "x"}}], [pod], [])
    t = time.perf_counter()
    eng.upsert(policy(cidr, excepts))
    elapsed = time.perf_counter() - t
    return elapsed, max(len(s) for s in eng.model("node-1").sets.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per case; the median is printed (default 5)")
    args = ap.parse_args()
    for label, (cidr, excepts) in cases().items():
        runs = [once(cidr, excepts) for _ in range(max(1, args.repeat))]
        ms = statistics.median(r[0] for r in runs) * 1000
        print(
            f"{label:40s} {ms:8.1f} ms  ({ms / TARGET_MS:.2f}x of {TARGET_MS:.0f} ms)  {runs[0][1]:7d} CIDRs in the set"
        )


if __name__ == "__main__":
    main()
