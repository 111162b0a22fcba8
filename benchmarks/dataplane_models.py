"""Synthetic node models for the dataplane benchmarks, built directly with the model classes."""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from stockade.model import Chain, Direction, NodeModel, PortMatch, Protocol, Rule

FAMILIES = ("ipv4", "dual")
# Concurrent runs on one machine (STOCKADE_TEST_SLOT, as the tests use) get distinct namespaces.
SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")


def slotted(name: str) -> str:
    """``st-…`` namespace names with the run's slot: ``st2-…`` for slot 2."""
    return f"st{SLOT}-{name.removeprefix('st-')}"


def pod_ip(i: int) -> str:
    """The i-th synthetic pod address, in 10.210.0.0/15 (never routed anywhere)."""
    return str(ipaddress.IPv4Address("10.210.0.0") + 1 + i)


def pod_ip6(i: int) -> str:
    """The i-th synthetic pod's IPv6 address (same host number), in fd00:210::/32."""
    return str(ipaddress.IPv6Address("fd00:210::") + 1 + i)


def pod_cidrs(i: int, dual: bool) -> set[str]:
    """The set elements of the i-th pod: its IPv4 address, and its IPv6 one when ``dual``."""
    return {f"{pod_ip(i)}/32", f"{pod_ip6(i)}/128"} if dual else {f"{pod_ip(i)}/32"}


def synthetic(pods: int, policies: int, set_size: int, seed: int = 1, dual: bool = False) -> NodeModel:
    """``policies`` ingress chains (one per policy: peer set + ports, a CIDR rule, a port range),
    one egress chain per 4 policies, one address set per policy with ``set_size`` pod IPs,
    ``pods`` pods dispatched round-robin to them (every pod isolated for ingress, half for egress).
    ``dual``: every pod has an IPv6 address too (in its sets and dispatched), and every CIDR set
    an IPv6 twin, as on a dual-stack node; the IPv4 part is the same model."""
    rnd = random.Random(seed)
    m = NodeModel("bench")
    tcp = Protocol.TCP
    for p in range(policies):
        sid = f"ag{p:05d}"
        m.sets[sid] = frozenset(e for _ in range(set_size) for e in pod_cidrs(rnd.randrange(pods), dual))
        if p % 10 == 0:
            cidrs = {f"172.{16 + p % 16}.{p % 256}.0/24", "192.168.0.0/16"}
            m.sets[f"cidr{p:05d}"] = frozenset(
                cidrs | ({f"fd00:172:{p % 256:x}::/64", "fd00:192:168::/48"} if dual else set())
            )
    for p in range(policies):
        rules = [
            Rule(f"ag{p:05d}", (PortMatch(tcp, 80 + p % 50), PortMatch(tcp, 8443))),
            Rule(f"cidr{(p // 10) * 10:05d}", (PortMatch(Protocol.UDP, 53),)),
            Rule(None, (PortMatch(tcp, 30000 + p, 30010 + p),)),
        ]
        chain = Chain.of(Direction.INGRESS, rules)
        m.chains[chain.id] = chain
    egress = []
    for p in range(0, policies, 4):
        chain = Chain.of(Direction.EGRESS, [Rule(f"ag{p:05d}", None), Rule(None, (PortMatch(Protocol.UDP, 53),))])
        m.chains[chain.id] = chain
        egress.append(chain.id)
    ingress = [c for c, ch in m.chains.items() if ch.direction is Direction.INGRESS]
    for i in range(pods):
        for addr in (pod_ip(i), pod_ip6(i)) if dual else (pod_ip(i),):
            m.ingress[addr] = ingress[i % len(ingress)]
            if i % 2 == 0:
                m.egress[addr] = egress[i % len(egress)]
    assert not m.check()
    return m


def element_count(m: NodeModel) -> int:
    return sum(len(s) for s in m.sets.values())


@contextmanager
def netns(name: str) -> Iterator[str]:
    name = slotted(name)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ratio_line(label: str, value: float, target: float, lower_is_better: bool) -> str:
    ratio = value / target
    ok = ratio <= 1 if lower_is_better else ratio >= 1
    kind = "of the budget" if lower_is_better else "of the target"
    return f"{label}: {value:.3f} (target {target}), {ratio:.2f}x {kind} -> {'PASS' if ok else 'FAIL'}"
