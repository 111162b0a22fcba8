"""`BlockedEvent` → `stockade.v1.DropBatch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction
from stockade.v1 import drops_pb2

_DIRECTIONS = {
    Direction.INGRESS: drops_pb2.DROP_DIRECTION_INGRESS,
    Direction.EGRESS: drops_pb2.DROP_DIRECTION_EGRESS,
}


def encode_batch(
    node: str, instance: str, seq: int, events: Sequence[BlockedEvent], shed: Mapping[str, int]
) -> drops_pb2.DropBatch:
    batch = drops_pb2.DropBatch(node=node, instance=instance, seq=seq, shed=dict(shed))
    add = batch.events.add
    for e in events:
        msg = add(
            time=e.time,
            direction=_DIRECTIONS[e.direction],
            src=e.src,
            dst=e.dst,
            protocol=e.protocol,
            sport=e.sport,
            dport=e.dport,
            chain=e.chain,
        )
        if e.rule is not None:  # a tier DENY rule; unset for a NetworkPolicy deny, as before tiers
            msg.rule = e.rule
    return batch
