"""Live follow: counted events → `stockade.v1.DropRecord` for the admin API's follow streams."""

from __future__ import annotations

from typing import Protocol

from stockade.brain.drops.aggregator import RecentRow
from stockade.brain.drops.resolve import Resolver
from stockade.model.rules import Direction
from stockade.v1 import admin_pb2


class Feed(Protocol):
    """What `stockade.brain.admin.service.DropFeed` offers."""

    @property
    def followers(self) -> int: ...

    def publish(self, records: list[admin_pb2.DropRecord]) -> None: ...


class FeedListener:
    """An `aggregator.EventListener` publishing to a feed, and only while someone follows it."""

    def __init__(self, feed: Feed, resolver: Resolver, max_per_call: int = 1000) -> None:
        self._feed = feed
        self._resolver = resolver
        self._max = max_per_call  # a flood is sampled (newest kept): followers read, they don't count

    def wanted(self) -> bool:
        return self._feed.followers > 0

    def __call__(self, rows: list[RecentRow]) -> None:
        cache: dict[tuple[str, str, str], list[str]] = {}
        out = []
        for row in rows[-self._max :]:
            t, node, direction, proto, src, sport, dst, dport, src_ns, src_pod, dst_ns, dst_pod, _, policy = row
            ns, pod = (dst_ns, dst_pod) if direction == "ingress" else (src_ns, src_pod)
            # a tier rule's drop names that rule; a NetworkPolicy drop the isolating policies
            policies: list[str] = [policy] if policy else []
            if pod and not policy:
                key = (ns, pod, direction)
                if key not in cache:
                    cache[key] = self._resolver.isolating_policies(ns, pod, Direction(direction))
                policies = cache[key]
            out.append(
                admin_pb2.DropRecord(
                    time=t, node=node, direction=direction, src=src, dst=dst,
                    src_pod=f"{src_ns}/{src_pod}" if src_pod else "", dst_pod=f"{dst_ns}/{dst_pod}" if dst_pod else "",
                    protocol=proto, sport=sport, dport=dport, policies=policies,
                )
            )  # fmt: skip
        self._feed.publish(out)
