"""Hypothesis over drop events: whatever the fields hold, nothing escapes the aggregator or the
servicer, every valid event is counted, every invalid one is counted as invalid, and the
records in Redis stay well formed."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import time
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from stockade.brain.drops.quota import QuotaConfig
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.store import RECORD_FIELDS
from stockade.brain.drops.validate import PROTOCOLS
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction
from stockade.v1 import drops_pb2, drops_pb2_grpc

from .conftest import make_aggregator
from .data import IPS, RESOLVER

NOW = time.time()
CHAIN = r"(in|out)_[0-9a-f]+"
NODE = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _not_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return True
    return False


# Values of no field's type (a number of the right type is drawn per field below).
junk = st.one_of(st.none(), st.binary(max_size=8), st.lists(st.integers(), max_size=2), st.just(object()))
bad_text = st.text(max_size=40) | st.sampled_from(["TCP\n", "in_0a\n", "10.1.0.10\n", "1|2", "\x1b[2J", "", "é"])

# One valid event; `bad` replaces one field with an invalid value (or none: valid).
valid_fields = st.fixed_dictionaries(
    {
        "time": st.floats(NOW - 3600, NOW),
        "direction": st.sampled_from([Direction.INGRESS, Direction.EGRESS]),
        "src": st.sampled_from([*IPS, "2001:db8::1", "FD00:0::63"]),
        "dst": st.sampled_from(IPS),
        "protocol": st.sampled_from(["TCP", "UDP", "SCTP"]),
        "sport": st.integers(0, 65535),
        "dport": st.integers(0, 65535),
    }
)
bad = st.one_of(
    st.none(),
    st.tuples(st.just("time"), st.sampled_from([math.nan, math.inf, -math.inf, -1.0, NOW + 10**6]) | junk),
    st.tuples(st.just("direction"), st.integers().filter(lambda d: d not in (1, 2)) | junk),
    st.tuples(st.just("src"), bad_text.filter(_not_ip) | junk),
    st.tuples(st.just("dst"), bad_text.filter(_not_ip) | junk),
    st.tuples(st.just("protocol"), bad_text.filter(lambda p: p not in PROTOCOLS) | junk),
    st.tuples(st.just("sport"), st.integers().filter(lambda p: not 0 <= p <= 65535) | junk),
    st.tuples(st.just("dport"), st.integers().filter(lambda p: not 0 <= p <= 65535) | junk),
    st.tuples(st.just("chain"), bad_text.filter(lambda c: not re.fullmatch(CHAIN, c)) | junk),
    st.tuples(st.just("node"), bad_text.filter(lambda n: not re.fullmatch(NODE, n)) | junk),
)


def _event(fields: dict[str, Any], mutation: tuple[str, Any] | None) -> BlockedEvent:
    f = dict(fields)
    if ":" in f["src"]:  # one family per packet
        f["dst"] = "fd00::1"
    f["chain"] = "in_0a" if f["direction"] is Direction.INGRESS else "out_0b"
    f["node"] = "node-a"
    if mutation:
        f[mutation[0]] = mutation[1]
    return BlockedEvent(**f)


async def test_aggregator_takes_any_event(redis_client: Redis) -> None:
    # no quota here: this is about validation (quotas have their own tests)
    agg, registry = make_aggregator(redis_client, RESOLVER, recent_per_flush=100_000,
                                    quota=QuotaConfig(bytes_per_window=0))  # fmt: skip
    totals = {"valid": 0, "invalid": 0}

    @FUZZ
    @given(st.lists(st.tuples(valid_fields, bad), max_size=20))
    def check(items: list[tuple[dict[str, Any], tuple[str, Any] | None]]) -> None:
        events = [_event(f, m) for f, m in items]
        invalid = sum(1 for _, m in items if m is not None)
        counted, refused = agg.ingest_rows(events)  # must not raise
        assert (counted, refused) == (len(events) - invalid, invalid)
        totals["valid"] += counted
        totals["invalid"] += refused

    check()
    # and fully arbitrary objects: still no exception, all invalid
    assert agg.ingest_rows([object(), None, 3, "x", BlockedEvent(*(None,) * 9)]) == (0, 5)  # type: ignore[arg-type]
    totals["invalid"] += 5
    assert await agg.flush()
    assert (
        registry.get_sample_value("stockade_brain_drop_events_dropped_total", {"reason": "invalid"})
        == totals["invalid"]
    )
    top = await agg.store.top_flows("24h", [], now=time.time())
    assert (top[0]["count"] if top else 0) == totals["valid"]
    for rec in await agg.store.recent_events(limit=totals["valid"] + 10):
        assert list(rec) == list(RECORD_FIELDS) and rec["node"] == "node-a"
        assert all(v.isprintable() for v in rec.values())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _raw_event(src: bytes, dst: bytes, proto: bytes, chain: bytes, d: int, sp: int, dp: int, t: bytes) -> bytes:
    """A DropEvent's bytes: any bytes in its string fields, any uint32 in its numbers."""
    fields = [_field(3, src), _field(4, dst), _field(5, proto), _field(8, chain), _field(2, d), _field(6, sp)]
    return b"".join([*fields, _field(7, dp), _varint(1 << 3 | 1) + t])  # time: a fixed64 double


raw_event = st.builds(
    _raw_event,
    *(st.binary(max_size=20) | st.sampled_from([b"10.1.0.10", b"\xff\xfe", b"TCP", b"in_0a"]) for _ in range(4)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=8, max_size=8),
)
raw_batch = st.builds(
    lambda node, inst, seq, events: b"".join(
        [_field(1, node), _field(2, inst), _field(3, seq), *(_field(4, e) for e in events)]
    ),
    st.binary(max_size=12) | st.just(b"node-a"),
    st.binary(max_size=12) | st.just(b"i"),
    st.integers(0, 2**64 - 1),
    st.lists(raw_event, max_size=5),
)


async def test_servicer_takes_any_bytes(redis_client: Redis) -> None:
    """Raw protobuf bytes (invalid UTF-8 in string fields, any numbers) over real gRPC: the brain
    answers each stream with a status and goes on serving; nothing escapes the servicer."""
    agg, _ = make_aggregator(redis_client, RESOLVER)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, ack_timeout=5), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    codes: set[grpc.StatusCode] = set()
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))

    def fuzz() -> None:  # a blocking client in a thread, the server in this loop
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.stream_unary("/stockade.v1.DropService/ReportDrops", request_serializer=None,
                                   response_deserializer=drops_pb2.DropAck.FromString)  # fmt: skip

            @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
            @given(st.lists(raw_batch, min_size=1, max_size=3))
            def check(batches: list[bytes]) -> None:
                try:
                    call(iter(batches), timeout=10)
                    codes.add(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    code = e.code()  # type: ignore[attr-defined]
                    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), e
                    codes.add(code)

            check()
            # still serving: a good batch is counted
            good = drops_pb2.DropBatch(node="node-a", instance="after", seq=1, events=[drops_pb2.DropEvent(
                time=time.time(), direction=1, src="10.2.0.10", dst="10.1.0.20", protocol="TCP", sport=1,
                dport=80, chain="in_0a")])  # fmt: skip
            ack = call(iter([good.SerializeToString()]), timeout=10)
            assert ack.events == 1

    try:
        await asyncio.to_thread(fuzz)
    finally:
        await server.stop(0)
        await agg.close()
        await flusher
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.INVALID_ARGUMENT in codes
    assert not loop_errors
