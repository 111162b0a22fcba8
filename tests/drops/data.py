"""A small cluster's worth of pods, policies and events for the drop tests."""

from __future__ import annotations

import random

from stockade.brain.drops import StaticResolver
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

PODS = {
    "10.1.0.10": ("prod", "web-1"),
    "10.1.0.11": ("prod", "web-2"),
    "10.1.0.20": ("prod", "db-0"),
    "10.2.0.10": ("dev", "tool"),
    "10.2.0.11": ("dev", "shell"),
}
POLICIES = {
    ("prod", "db-0", Direction.INGRESS): ["prod/db-only-web"],
    ("prod", "web-1", Direction.INGRESS): ["prod/default-deny"],
    ("prod", "web-2", Direction.INGRESS): ["prod/default-deny"],
    ("dev", "tool", Direction.EGRESS): ["dev/no-egress"],
}
RESOLVER = StaticResolver(PODS, POLICIES)
IPS = [*PODS, "192.0.2.7", "198.51.100.9"]  # two addresses that are no pod


def random_events(n: int, t0: float, span: float, seed: int, node: str = "node-a") -> list[BlockedEvent]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        direction = rnd.choice([Direction.INGRESS, Direction.EGRESS])
        src, dst = rnd.sample(IPS, 2)
        out.append(
            BlockedEvent(
                time=t0 + rnd.random() * span,
                node=node,
                direction=direction,
                src=src,
                dst=dst,
                protocol=rnd.choice(["TCP", "UDP"]),
                sport=rnd.randrange(30000, 60000),
                dport=rnd.choice([80, 443, 5432, 31337]),
                chain="in_abc" if direction is Direction.INGRESS else "out_def",
            )
        )
    return out


def expected_counts(events: list[BlockedEvent]) -> dict[int, dict[str, int]]:
    """minute -> encoded flow -> count, computed independently of the aggregator."""
    out: dict[int, dict[str, int]] = {}
    for e in events:
        d = RESOLVER.resolve_ip(e.dst, e.time)
        s = RESOLVER.resolve_ip(e.src, e.time)
        key = "|".join(
            [
                e.direction.value,
                e.protocol,
                str(e.dport),
                d[0] if d else "",
                d[1] if d else e.dst,
                s[0] if s else "",
                s[1] if s else e.src,
            ]
        )
        m = out.setdefault(int(e.time // 60), {})
        m[key] = m.get(key, 0) + 1
    return out
