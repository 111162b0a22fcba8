"""The fan-out without a network: generations, history window, coalescing, acks, realization."""

from __future__ import annotations

import asyncio

from sync_helpers import SyntheticCluster

from stockade.brain.fanout import FanOut
from stockade.codec import delta_from_proto, model_from_proto
from stockade.model import NodeModel, apply
from stockade.v1 import sync_pb2


def hello(node: str, epoch: str = "", gen: int = 0, digest: str = "") -> sync_pb2.Hello:
    return sync_pb2.Hello(node=node, epoch=epoch, applied_generation=gen, digest=digest)


def replay(model: NodeModel | None, msg: sync_pb2.BrainMessage) -> NodeModel:
    """What an agent holding ``model`` holds after ``msg``."""
    kind = msg.WhichOneof("kind")
    if kind == "snapshot":
        return model_from_proto(msg.snapshot.model)
    assert model is not None
    if kind == "resume":
        return model
    for step in msg.deltas.steps:
        model = apply(model, delta_from_proto(step))
    return model


def ack(gen: int, ok: bool = True, error: str = "", digest: str = "") -> sync_pb2.Ack:
    return sync_pb2.Ack(generation=gen, ok=ok, error=error, digest=digest)


async def test_snapshot_then_single_deltas_then_coalesced() -> None:
    c = SyntheticCluster(["n1", "n2"])
    fan = FanOut(c.model_of, max_inflight=1000)  # acks are not the point here
    s, mode = fan.connect(hello("n1"))
    assert mode == "snapshot"
    msg = s.next_message()
    assert msg is not None and msg.WhichOneof("kind") == "snapshot" and msg.snapshot.generation == 1
    held = replay(None, msg)
    assert held == c.models["n1"] and msg.snapshot.digest == held.digest()
    assert s.next_message() is None

    fan.on_deltas(c.churn())
    msg = s.next_message()
    assert msg is not None and (msg.deltas.base_generation, msg.deltas.generation) == (1, 2)
    held = replay(held, msg)
    assert held == c.models["n1"] and msg.deltas.digest == held.digest()

    # Ten changes while the stream was busy: one coalesced step, not ten.
    for _ in range(10):
        fan.on_deltas(c.churn())
    msg = s.next_message()
    assert msg is not None and len(msg.deltas.steps) == 1
    assert (msg.deltas.base_generation, msg.deltas.generation) == (2, 12)
    assert replay(held, msg) == c.models["n1"]
    # n2 had no agent: no feed, nothing kept for it.
    assert "n2" not in fan.feeds


async def test_reconnect_resumes_with_steps_or_digest_or_snapshot() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of, history=5, max_inflight=1000)
    s, _ = fan.connect(hello("n1"))
    held = replay(None, s.next_message())  # type: ignore[arg-type]
    fan.on_deltas(c.churn())
    held = replay(held, s.next_message())  # type: ignore[arg-type]
    fan.disconnect(s)
    for _ in range(3):
        fan.on_deltas(c.churn())
    # Same epoch, within the window: the history's steps.
    s, mode = fan.connect(hello("n1", fan.epoch, 2, held.digest()))
    assert mode == "steps"
    msg = s.next_message()
    assert msg is not None and len(msg.deltas.steps) == 3 and msg.deltas.base_generation == 2
    assert replay(held, msg) == c.models["n1"]
    # Another epoch (a restarted brain) but the same content: resume, nothing to send.
    s, mode = fan.connect(hello("n1", "otherepoch", 99, c.models["n1"].digest()))
    assert mode == "resume"
    msg = s.next_message()
    assert msg is not None and msg.resume.generation == 5
    # Too far behind the window: snapshot.
    for _ in range(10):
        fan.on_deltas(c.churn())
    s, mode = fan.connect(hello("n1", fan.epoch, 5, "ab"))
    assert mode == "snapshot"
    # A stale epoch with a different digest: snapshot.
    assert fan.connect(hello("n1", "otherepoch", 15, "ab"))[1] == "snapshot"


async def test_newer_stream_replaces_older() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of)
    old, _ = fan.connect(hello("n1"))
    new, _ = fan.connect(hello("n1"))
    assert old.end is not None and old.end[0] == "ABORTED"
    assert fan.sessions["n1"] is new
    fan.disconnect(old)  # the old stream's teardown must not unregister the new one
    assert fan.sessions["n1"] is new and fan.status["n1"].connected


async def test_acks_status_and_failed_apply_gets_a_snapshot() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of, retry_min=0.05)
    s, _ = fan.connect(hello("n1"))
    held = replay(None, s.next_message())  # type: ignore[arg-type]
    await fan.ack(s, ack(1, digest=held.digest()))
    st = fan.status["n1"]
    assert st.applied_generation == 1 and st.in_sync and st.last_apply_time is not None
    fan.on_deltas(c.churn())
    assert not st.in_sync and st.desired_generation == 2
    s.next_message()
    await fan.ack(s, ack(2, ok=False, error="nft: No such file or directory"))
    assert st.last_error == "nft: No such file or directory" and st.applied_generation == 1
    msg = s.next_message()
    assert msg is not None and msg.WhichOneof("kind") == "snapshot"
    # A second failure in a row: the next snapshot waits (backoff), then comes.
    await fan.ack(s, ack(2, ok=False, error="again"))
    assert s.next_message() is None
    for _ in range(3):  # the send loop: wait, try again
        await asyncio.wait_for(s.wait(), 2)
        msg = s.next_message()
        if msg is not None:
            break
    assert msg is not None and msg.WhichOneof("kind") == "snapshot"
    await fan.ack(s, ack(2, digest=c.models["n1"].digest()))
    assert st.in_sync and st.last_error is None and st.failures == 0


async def test_ack_for_a_generation_never_sent_is_invalid() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of)
    s, _ = fan.connect(hello("n1"))
    s.next_message()
    try:
        await fan.ack(s, ack(7))
    except ValueError as e:
        assert "never sent" in str(e)
    else:
        raise AssertionError("an ack for an unsent generation was accepted")


async def test_digest_mismatch_in_ack_triggers_snapshot() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of)
    s, _ = fan.connect(hello("n1"))
    s.next_message()
    await fan.ack(s, ack(1, digest="00" * 16))
    assert fan.status["n1"].applied_generation == 0
    assert "digest" in (fan.status["n1"].last_error or "")
    assert s.next_message().WhichOneof("kind") == "snapshot"  # type: ignore[union-attr]


async def test_policy_realization_and_wait_synced() -> None:
    c = SyntheticCluster(["n1", "n2", "n3"])
    fan = FanOut(c.model_of)
    sessions = {n: fan.connect(hello(n))[0] for n in ("n1", "n2")}
    for n, s in sessions.items():
        s.next_message()
        await fan.ack(s, ack(1, digest=c.models[n].digest()))
    fan.on_deltas(c.churn(["n1", "n2"]), policy=("default", "web"))
    r = fan.policy_realization("default", "web", {"n1", "n2", "n3"})
    assert (r.nodes_needed, r.nodes_applied, r.pending) == (3, 0, ("n1", "n2", "n3"))
    waiter = asyncio.create_task(fan.wait_synced(["n1", "n2"], timeout=5))
    for n, s in sessions.items():
        msg = s.next_message()
        assert msg is not None
        await fan.ack(s, ack(msg.deltas.generation, digest=c.models[n].digest()))
        if n == "n1":
            r = fan.policy_realization("default", "web", {"n1", "n2"})
            assert (r.nodes_applied, r.pending, r.complete) == (1, ("n2",), False)
    assert await waiter
    r = fan.policy_realization("default", "web", {"n1", "n2"})
    assert r.complete and r.nodes_applied == 2
    # A later change to another policy does not un-realize this one.
    fan.on_deltas(c.churn(["n1"]), policy=("default", "db"))
    assert fan.policy_realization("default", "web", {"n1", "n2"}).complete
    assert not fan.policy_realization("default", "db", {"n1"}).complete
    assert not await fan.wait_synced(["n1"], timeout=0.05)


async def test_no_more_than_max_inflight_unacked_messages() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of, max_inflight=2)
    s, _ = fan.connect(hello("n1"))
    held = replay(None, s.next_message())  # type: ignore[arg-type]
    fan.on_deltas(c.churn())
    held = replay(held, s.next_message())  # type: ignore[arg-type]
    for _ in range(5):
        fan.on_deltas(c.churn())
    assert s.next_message() is None  # two unacked: wait
    await fan.ack(s, ack(1, digest=""))
    msg = s.next_message()  # one coalesced message for the five
    assert msg is not None and (msg.deltas.base_generation, msg.deltas.generation) == (2, 7)
    assert replay(held, msg) == c.models["n1"]


async def test_failures_of_messages_already_in_flight_are_not_counted_twice() -> None:
    c = SyntheticCluster(["n1"])
    fan = FanOut(c.model_of, max_inflight=2, retry_min=5.0)
    s, _ = fan.connect(hello("n1"))
    s.next_message()
    await fan.ack(s, ack(1, digest=c.models["n1"].digest()))
    fan.on_deltas(c.churn())
    assert s.next_message().deltas.generation == 2  # type: ignore[union-attr]
    fan.on_deltas(c.churn())
    assert s.next_message().deltas.generation == 3  # type: ignore[union-attr]
    await fan.ack(s, ack(2, ok=False, error="kernel said no"))
    msg = s.next_message()
    assert msg is not None and msg.WhichOneof("kind") == "snapshot"
    # Generation 3 was built on 2, which the agent does not hold: its failure is an echo.
    await fan.ack(s, ack(3, ok=False, error="deltas do not follow"))
    st = fan.status["n1"]
    assert st.failures == 1 and st.last_error == "kernel said no" and fan.failed_acks == 1
    assert s.next_message() is None  # no second snapshot scheduled (it would wait 5 s)
    await fan.ack(s, ack(3, digest=c.models["n1"].digest()))
    assert st.in_sync and st.failures == 0 and st.last_error is None


async def test_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stockade.brain.fanout import FanOutCollector

    c = SyntheticCluster(["n1", "n2"])
    fan = FanOut(c.model_of)
    s, _ = fan.connect(hello("n1"))
    s.next_message()
    await fan.ack(s, ack(1, digest=c.models["n1"].digest()))
    fan.connect(hello("n2"))
    reg = CollectorRegistry()
    reg.register(FanOutCollector(fan))
    text = generate_latest(reg).decode()
    assert "stockade_brain_sync_agents_connected 2.0" in text
    assert "stockade_brain_sync_nodes_in_sync 1.0" in text
    assert 'stockade_brain_sync_applied_generation{node="n1"} 1.0' in text
    assert 'stockade_brain_sync_applied_generation{node="n2"} 0.0' in text
