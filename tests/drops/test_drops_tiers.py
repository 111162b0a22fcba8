"""Drops decided by ClusterNetworkPolicy tier rules: the rule index on the wire, its validation,
attribution to the rule (`drops top --by policy`, records, follow), and the `tier` label.

The engine is a small fake implementing what the resolver reads (`pod_by_ip`,
`policies_for_pod`, `rule_origin`); Redis is a redis-server of the test's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from stockade.agent.reporter.wire import encode_batch
from stockade.brain.drops import Aggregator, DropMetrics, EngineResolver, validate
from stockade.brain.drops.feed import FeedListener
from stockade.brain.drops.flows import group_counts
from stockade.brain.drops.nostore import NoStore
from stockade.brain.drops.resolve import Attributor, rule_text
from stockade.brain.drops.view import DropsView
from stockade.brain.engine.api import RuleOrigin
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction
from stockade.v1 import admin_pb2, drops_pb2

from .conftest import make_aggregator

ADMIN_CHAIN = "in_" + "a1" * 16  # B's Admin ingress chain
BASELINE_CHAIN = "out_" + "b2" * 16  # A's Baseline egress chain
NP_CHAIN = "in_" + "c3" * 16
A, B, OUTSIDE = "10.1.0.10", "10.1.0.20", "192.0.2.7"
DENY_DB = RuleOrigin("guard-db", "Admin", 10, "ingress", 0, "no-web-to-db", "Deny")
DENY_DNS = RuleOrigin("dns-only", "Baseline", 0, "egress", 1, "", "Deny")


class FakeEngine:
    """The part of the engine the resolver reads. ``origins``: (chain, index) -> RuleOrigin."""

    def __init__(self) -> None:
        self.pods = {A: "prod/web", B: "prod/db"}
        self.policies = {("prod", "db"): {Direction.INGRESS: ["prod/db-only-api"]}}
        self.origins: dict[tuple[str, int], RuleOrigin] = {(ADMIN_CHAIN, 0): DENY_DB, (BASELINE_CHAIN, 1): DENY_DNS}
        self.asked: list[tuple[str, str, int]] = []

    def pod_by_ip(self, ip: str) -> str | None:
        return self.pods.get(ip)

    def policies_for_pod(self, ns: str, name: str) -> Mapping[Direction, list[str]]:
        return self.policies.get((ns, name), {})

    def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None:
        self.asked.append((node, chain_id, index))
        return self.origins.get((chain_id, index))


def event(chain: str, rule: int | None, dport: int, src: str = A, dst: str = B, **kw: object) -> BlockedEvent:
    direction = Direction.INGRESS if chain.startswith("in_") else Direction.EGRESS
    fields: dict[str, object] = dict(
        time=time.time(), node="node-a", direction=direction, src=src, dst=dst, protocol="TCP",
        sport=20000 + dport, dport=dport, chain=chain, rule=rule,
    )  # fmt: skip
    fields.update(kw)
    return BlockedEvent(**fields)  # type: ignore[arg-type]


def wire(events: list[BlockedEvent]) -> list[drops_pb2.DropEvent]:
    """The events as the agent sends them (and back: what the brain's servicer gets)."""
    batch = encode_batch("node-a", "inst", 1, events, {})
    return list(drops_pb2.DropBatch.FromString(batch.SerializeToString()).events)


def blocked(registry: CollectorRegistry) -> dict[str, float]:
    """The blocked-connections counter summed by its `tier` label."""
    out: dict[str, float] = {}
    for m in registry.collect():
        for s in m.samples:
            if s.name == "stockade_brain_blocked_connections_total":
                out[s.labels["tier"]] = out.get(s.labels["tier"], 0) + s.value
    return out


# -- on the wire, and validated ----------------------------------------------------------------


def test_the_rule_index_crosses_the_wire_only_when_there_is_one() -> None:
    np_drop, tier_drop, first_rule = wire(
        [event(NP_CHAIN, None, 80), event(ADMIN_CHAIN, 7, 80), event(ADMIN_CHAIN, 0, 80)]
    )
    assert not np_drop.HasField("rule") and validate.clean_rule(np_drop) is None
    assert tier_drop.rule == 7 and validate.clean_rule(tier_drop) == 7
    assert first_rule.HasField("rule") and validate.clean_rule(first_rule) == 0  # 0 is a rule, not "unset"


def test_a_rule_index_out_of_bounds_or_mistyped_is_invalid() -> None:
    assert validate.clean_rule(event(ADMIN_CHAIN, validate.MAX_RULE_INDEX, 80)) == validate.MAX_RULE_INDEX
    for bad in (validate.MAX_RULE_INDEX + 1, -1, True, "3", 2.0):
        assert validate.clean_rule(event(ADMIN_CHAIN, bad, 80)) == validate.INVALID_RULE, bad  # type: ignore[arg-type]
    wire_bad = drops_pb2.DropEvent(rule=1 << 31)
    assert validate.clean_rule(wire_bad) == validate.INVALID_RULE
    assert validate.clean_rule(object()) is None  # no rule at all: a NetworkPolicy drop's shape


# -- attribution -------------------------------------------------------------------------------


async def test_tier_drops_are_attributed_to_their_rule(redis_client: Redis) -> None:
    engine = FakeEngine()
    agg, registry = make_aggregator(redis_client, EngineResolver(engine))
    events = [
        *(event(ADMIN_CHAIN, 0, 5432) for _ in range(3)),  # an Admin Deny of A -> B
        *(event(BASELINE_CHAIN, 1, 53, src=A, dst=OUTSIDE) for _ in range(2)),  # a Baseline Deny of A's egress
        event(NP_CHAIN, None, 80),  # B's NetworkPolicy deny
        event(ADMIN_CHAIN, 5, 22),  # a rule the engine does not know (yet, or any more)
        event(ADMIN_CHAIN, 70_000, 22),  # out of bounds: refused, the rest of the batch kept
    ]
    counted, bad = agg.ingest_rows(wire(events), "node-a", ("inst", 1))
    assert (counted, bad) == (7, 1)
    # one answer per (node, chain, rule) and ingest call, not one per event
    assert sorted(set(engine.asked)) == sorted(engine.asked)
    assert blocked(registry) == {"admin": 4, "baseline": 2, "netpol": 1}  # the unknown rule's chain is Admin's
    assert await agg.flush()

    rows = (await DropsView(agg).answer("15m", ["policy"], 10)).rows
    assert rows == [
        {"policy": "ClusterNetworkPolicy guard-db rule no-web-to-db", "count": 3},
        {"policy": "ClusterNetworkPolicy dns-only rule spec.egress[1]", "count": 2},
        # NetworkPolicy drops, and the rule the engine could not place: the isolating policies
        {"policy": "NetworkPolicy prod/db-only-api", "count": 2},
    ]
    by_dst = (await DropsView(agg).answer("15m", ["dst_pod", "policy"], 10)).rows
    assert {"dst_pod": OUTSIDE, "policy": "ClusterNetworkPolicy dns-only rule spec.egress[1]", "count": 2} in by_dst
    # the stream of recent events names the rule too
    records = await agg.store.recent_events({"dport": "5432"}, limit=10)  # type: ignore[union-attr]
    assert {r["policies"] for r in records} == {"ClusterNetworkPolicy guard-db rule no-web-to-db"}
    assert {r["chain"] for r in records} == {ADMIN_CHAIN}
    # the other groupings are as before tiers: the rule's name is no part of them
    assert (await DropsView(agg).answer("15m", ["dst_pod"], 10)).rows == [
        {"dst_pod": "db", "count": 5},
        {"dst_pod": OUTSIDE, "count": 2},
    ]


async def test_a_late_drop_is_attributed_with_what_the_engine_knows_now() -> None:
    engine = FakeEngine()
    registry = CollectorRegistry()
    agg = Aggregator(NoStore(), EngineResolver(engine), DropMetrics(registry, redis=False))
    assert agg.ingest([event(ADMIN_CHAIN, 0, 5432)]) == 1
    engine.origins.clear()  # the policy changed: the chain is gone before this drop arrived
    assert agg.ingest([event(ADMIN_CHAIN, 0, 5432)]) == 1
    never_seen = "in_" + "d4" * 16
    assert agg.ingest([event(never_seen, 2, 5432)]) == 1
    assert blocked(registry) == {"admin": 2, "unknown": 1}  # the tier of a chain id never changes
    assert await agg.flush()
    rows = (await DropsView(agg).answer("15m", ["policy"], 10)).rows  # from memory: no Redis
    assert rows == [
        {"policy": "NetworkPolicy prod/db-only-api", "count": 2},
        {"policy": "ClusterNetworkPolicy guard-db rule no-web-to-db", "count": 1},
    ]


def test_an_engine_that_fails_or_is_busy_never_costs_the_count() -> None:
    class Failing(FakeEngine):
        def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None:
            raise RuntimeError("half-way through a change")

    assert EngineResolver(Failing()).rule_origin("node-a", ADMIN_CHAIN, 0) is None
    busy = [False]
    engine = FakeEngine()
    r = EngineResolver(engine, busy=lambda: busy[0])
    assert r.rule_origin("node-a", ADMIN_CHAIN, 0) == DENY_DB
    busy[0] = True
    engine.asked.clear()
    assert r.rule_origin("node-a", ADMIN_CHAIN, 0) == DENY_DB  # the answer given between changes
    assert r.rule_origin("node-a", ADMIN_CHAIN, 1) is None and engine.asked == []  # not read while busy
    # a resolver without rule_origin at all (an older one): tier drops count, as "unknown"
    attribute = Attributor(object())
    assert attribute("node-a", ADMIN_CHAIN, 0) == ("unknown", "")
    assert attribute("node-a", NP_CHAIN, None) == ("netpol", "")


def test_rule_text_is_plain_whatever_the_names() -> None:
    hostile = RuleOrigin("a|b\nc", "Admin", 1, "ingress", 3, "x,y|z\x1b[31m", "Deny")
    text = rule_text(hostile)
    assert text == "ClusterNetworkPolicy a_b_c rule x_y_z__31m"
    assert (
        rule_text(RuleOrigin("p", "Admin", 1, "egress", 4, "", "Deny")) == "ClusterNetworkPolicy p rule spec.egress[4]"
    )
    # a key holding it splits into the eight flow fields
    key = f"ingress|TCP|80|prod|db|prod|web|{text}"
    assert group_counts([{key: 2}], ["policy"]) == {(text,): 2}


def test_follow_records_name_the_rule() -> None:
    class Feed:
        followers = 1
        got: list[admin_pb2.DropRecord] = []

        def publish(self, records: list[admin_pb2.DropRecord]) -> None:
            self.got.extend(records)

    feed = Feed()
    engine = FakeEngine()
    agg = Aggregator(NoStore(), EngineResolver(engine), DropMetrics(CollectorRegistry(), redis=False))
    agg.listener = FeedListener(feed, agg.resolver)
    agg.ingest([event(ADMIN_CHAIN, 0, 5432), event(NP_CHAIN, None, 80)])
    assert [list(r.policies) for r in feed.got] == [
        ["ClusterNetworkPolicy guard-db rule no-web-to-db"],
        ["prod/db-only-api"],
    ]


async def test_drops_top_by_policy_through_the_admin_api() -> None:
    import grpc

    from stockade.brain.admin.auth import Authorizer, Caller
    from stockade.brain.admin.service import AdminService
    from stockade.v1 import admin_pb2_grpc

    engine = FakeEngine()
    agg = Aggregator(NoStore(), EngineResolver(engine), DropMetrics(CollectorRegistry(), redis=False))
    agg.ingest([event(ADMIN_CHAIN, 0, 5432), event(ADMIN_CHAIN, 0, 5433), event(NP_CHAIN, None, 80)])
    assert await agg.flush()
    token = "r" * 20
    svc = AdminService(
        engine,  # type: ignore[arg-type]  # TopDrops reads the drop source only
        Authorizer({token: Caller("viewer", "read")}),
        objects=list,
        drops=DropsView(agg),
    )
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = await admin_pb2_grpc.AdminStub(ch).TopDrops(
                admin_pb2.TopDropsRequest(window="15m", group_by=["policy", "dport"], limit=10),
                metadata=[("authorization", f"Bearer {token}")],
            )
    finally:
        await server.stop(None)
    assert [(dict(r.key), r.count) for r in resp.rows] == [
        ({"policy": "ClusterNetworkPolicy guard-db rule no-web-to-db", "dport": "5432"}, 1),
        ({"policy": "ClusterNetworkPolicy guard-db rule no-web-to-db", "dport": "5433"}, 1),
        ({"policy": "NetworkPolicy prod/db-only-api", "dport": "80"}, 1),
    ]
