"""The aggregator's store when the brain runs without Redis (no ``--redis-url``).

Blocked connections are still validated and counted into the Prometheus counters (and the live
feed of ``stockade drops follow``); only the per-flow minute counts, which live in Redis, are
not kept: each flush drops them. So the blocked-connections counter never depends on Redis.
"""

from __future__ import annotations

from stockade.brain.drops.quota import QuotaConfig
from stockade.brain.drops.store import DEFAULT_RETENTION, FlushBatch

# Quotas bound new Redis counters; with no Redis there is nothing to bound.
NO_QUOTA = QuotaConfig(bytes_per_window=0)


class NoStore:
    """Takes every flush and keeps nothing."""

    retention = DEFAULT_RETENTION  # events older than this are counted as too old, as with Redis

    async def write(self, batch: FlushBatch, writer: str) -> dict[tuple[str, str], int]:
        return {}

    async def refused_pieces(self, batch: FlushBatch) -> dict[tuple[str, str], int]:
        return {}

    async def ping(self) -> None:
        return None

    async def applied(self, writer: str, seq: int) -> bool:
        return True
