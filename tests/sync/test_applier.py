"""The agent's applier: what reaches the dataplane, and what is refused before it does."""

from __future__ import annotations

import random

from sync_helpers import random_model

from stockade.agent.backends.base import MemoryDataplane
from stockade.agent.sync import Applier, Backoff
from stockade.codec import delta_to_proto, model_to_proto
from stockade.model import diff
from stockade.v1 import sync_pb2


def snapshot(model, gen: int = 1, epoch: str = "e1", digest: str | None = None) -> sync_pb2.BrainMessage:  # type: ignore[no-untyped-def]
    return sync_pb2.BrainMessage(
        snapshot=sync_pb2.Snapshot(
            epoch=epoch,
            generation=gen,
            digest=model.digest() if digest is None else digest,
            model=model_to_proto(model),
        )
    )


async def test_snapshot_deltas_resume_and_refusals() -> None:
    rng = random.Random(4)
    a, b, c = (random_model("n1", rng) for _ in range(3))
    dp = MemoryDataplane()
    ap = Applier("n1", dp, offload=False)
    assert ap.hello().hello.digest == "" and ap.hello().hello.applied_generation == 0

    ack = (await ap.handle(snapshot(a))).ack
    assert ack.ok and ack.generation == 1 and ack.digest == a.digest() and dp.model == a

    # Two steps, applied as one transaction.
    msg = sync_pb2.BrainMessage(
        deltas=sync_pb2.Deltas(
            epoch="e1",
            base_generation=1,
            generation=3,
            digest=c.digest(),
            steps=[delta_to_proto(diff(a, b)), delta_to_proto(diff(b, c))],
        )
    )
    tx = dp.transactions
    ack = (await ap.handle(msg)).ack
    assert ack.ok and ack.generation == 3 and dp.model == c and dp.transactions == tx + 1
    h = ap.hello().hello
    assert (h.epoch, h.applied_generation, h.digest) == ("e1", 3, c.digest())

    # Refused, with the dataplane untouched: a base it does not hold, a wrong digest,
    # another node's model.
    tx = dp.transactions
    stale = sync_pb2.BrainMessage(
        deltas=sync_pb2.Deltas(
            epoch="e1", base_generation=2, generation=4, digest=a.digest(), steps=[delta_to_proto(diff(c, a))]
        )
    )
    ack = (await ap.handle(stale)).ack
    assert not ack.ok and "do not follow" in ack.error
    ack = (await ap.handle(snapshot(a, gen=5, digest="00" * 16))).ack
    assert not ack.ok and "digest" in ack.error
    other = random_model("n2", rng)
    ack = (await ap.handle(snapshot(other, gen=6))).ack
    assert not ack.ok and "not this node" in ack.error
    assert dp.transactions == tx and dp.model == c and ap.status.generation == 3

    # Resume after a brain restart: nothing applied, the new epoch adopted.
    ack = (
        await ap.handle(sync_pb2.BrainMessage(resume=sync_pb2.Resume(epoch="e2", generation=1, digest=c.digest())))
    ).ack
    assert ack.ok and dp.transactions == tx and ap.status.epoch == "e2"


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(0.1, 2.0, random.Random(1))
    delays = [b.next() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(1.0 <= d <= 2.0 for d in delays[5:])
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next() <= 0.1


def test_backoff_is_short_for_an_unreachable_brain_and_long_for_a_refusal() -> None:
    from stockade.agent.sync.client import _is_refusal

    b = Backoff(rng=random.Random(2))  # the agent's defaults
    waits = [b.next() for _ in range(12)]
    assert max(waits) <= 1.0  # a restarted brain gets every agent back within ~2 s of listening
    refused = [b.next(refused=True) for _ in range(12)]
    assert 15.0 <= refused[-1] <= 30.0  # refusals do not mend by themselves: no TokenReview storm
    assert _is_refusal("UNAUTHENTICATED: the token does not prove node n1", None)
    assert _is_refusal("PERMISSION_DENIED: node n2 is not this agent's", None)
    assert _is_refusal("the brain speaks protocol 1", "the brain speaks protocol 1")
    assert not _is_refusal("UNAVAILABLE: failed to connect to all addresses", None)
    assert not _is_refusal("the brain closed the stream", None)


def test_metrics_read_the_status() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stockade.agent.sync import AgentStatus, SyncCollector

    st = AgentStatus("n1", connected=False, fail_static=True, generation=7, applies=3)
    reg = CollectorRegistry()
    reg.register(SyncCollector(st))
    text = generate_latest(reg).decode()
    assert "stockade_agent_fail_static 1.0" in text
    assert "stockade_agent_applied_generation 7.0" in text
    assert "stockade_agent_applies_total 3.0" in text
    st.fail_static, st.connected = False, True
    text = generate_latest(reg).decode()
    assert "stockade_agent_fail_static 0.0" in text and "stockade_agent_brain_connected 1.0" in text
