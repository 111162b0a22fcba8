"""Live follow: counted events reach the admin API's feed, resolved, only while someone follows."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from stockade.brain.admin.service import DropFeed
from stockade.brain.drops import FeedListener
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

from .conftest import make_aggregator
from .data import RESOLVER


async def test_feed_gets_resolved_records_while_followed(redis_client: Redis) -> None:
    feed = DropFeed()
    agg, _ = make_aggregator(redis_client, RESOLVER, listener=FeedListener(feed, RESOLVER))
    ev = BlockedEvent(time.time(), "node-a", Direction.INGRESS, "10.2.0.10", "10.1.0.20", "TCP", 40000, 5432, "in_0a")
    agg.ingest([ev])  # nobody follows: nothing is built
    q = feed.subscribe()
    agg.ingest([ev, ev])
    assert q.qsize() == 2
    rec = q.get_nowait()
    assert (rec.src_pod, rec.dst_pod, rec.dport, rec.direction, list(rec.policies)) == (
        "dev/tool", "prod/db-0", 5432, "ingress", ["prod/db-only-web"],
    )  # fmt: skip
    feed.unsubscribe(q)
    assert agg.ingest([ev]) == 1
    assert await agg.flush()
    assert await agg.store.top("15m", ["dst_pod"], 5) == [{"dst_pod": "db-0", "count": 4}]
