"""Blocked connections, brain side: agents' drop batches → pods and policies → Redis and Prometheus.

Drop events are untrusted input: `validate` checks every field at the edge, `quota` keeps one
node from filling Redis or the in-memory buffer; what is refused is counted per node.

Wiring (in the brain's main)::

    metrics = DropMetrics(registry, declared=EnginePorts(engine, busy))  # dport: ports pods declare
    store = RedisStore(connect(args.redis_url))  # without Redis: NoStore() and nostore.NO_QUOTA
    agg = Aggregator(store, EngineResolver(engine, history), metrics, quota=QuotaConfig())  # per node
    task = asyncio.create_task(agg.run())          # flushes; await agg.close() on shutdown
    # node_of_peer: the node the mTLS peer certificate proves (never a field of the batch)
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, node_of_peer=...), server)
    # /readyz: agg.ready (False while Redis is away), agg.status() for the details
    # admin API: AdminService(drops=store, ...) (store.top is its DropsSource, store.refused_by_node
    # what it says was refused per node); live follow:
    agg.listener = FeedListener(admin_feed, resolver)   # publishes only while someone follows
    # also store.top_flows(window, group_by, where=..., now=...), store.recent_events(where)
    # sources: history.observe_pod(pod_dict, at=time.time(), deleted=...) on every Pod event
"""

from stockade.brain.drops.aggregator import Aggregator
from stockade.brain.drops.feed import FeedListener
from stockade.brain.drops.metrics import DropMetrics, EnginePorts
from stockade.brain.drops.nostore import NoStore
from stockade.brain.drops.redis_url import connect
from stockade.brain.drops.resolve import EngineResolver, IpHistory, Resolver, StaticResolver
from stockade.brain.drops.store import RedisStore

__all__ = [
    "Aggregator",
    "DropMetrics",
    "EnginePorts",
    "EngineResolver",
    "FeedListener",
    "IpHistory",
    "NoStore",
    "RedisStore",
    "Resolver",
    "StaticResolver",
    "connect",
]
