"""Blocked connections, brain side: agents' drop batches → pods and policies → Redis and Prometheus.

Wiring (in the brain's main)::

    metrics = DropMetrics(registry)
    store = RedisStore(connect(args.redis_url))
    agg = Aggregator(store, EngineResolver(engine, history), metrics)
    task = asyncio.create_task(agg.run())          # flushes; await agg.close() on shutdown
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg), server)
    # /readyz: agg.ready (False while Redis is away), agg.status() for the details
    # admin API: AdminService(drops=store, ...) (store.top is its DropsSource); live follow:
    agg.listener = FeedListener(admin_feed, resolver)   # publishes only while someone follows
    # also store.top_flows(window, group_by, where=..., now=...), store.recent_events(where)
    # sources: history.observe_pod(pod_dict, at=time.time(), deleted=...) on every Pod event
"""

from stockade.brain.drops.aggregator import Aggregator
from stockade.brain.drops.feed import FeedListener
from stockade.brain.drops.metrics import DropMetrics
from stockade.brain.drops.redis_url import connect
from stockade.brain.drops.resolve import EngineResolver, IpHistory, Resolver, StaticResolver
from stockade.brain.drops.store import RedisStore

__all__ = [
    "Aggregator",
    "DropMetrics",
    "EngineResolver",
    "FeedListener",
    "IpHistory",
    "RedisStore",
    "Resolver",
    "StaticResolver",
    "connect",
]
