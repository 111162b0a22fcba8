"""One connected agent's stream: what to send it next, decided from its node's feed.

Nothing is queued per agent. The session remembers the generation (and model) it last sent;
when it is ready to send again it sends one message that brings the agent to the feed's
current generation: the single new delta, one coalesced ``diff(sent_model, current)`` when
several generations passed while the stream was busy, the history's steps for an agent that
comes back within the window, or a snapshot.
"""

from __future__ import annotations

import asyncio
import time

from stockade.brain.fanout.feed import NodeFeed
from stockade.codec import fill_delta, model_to_proto
from stockade.codec.version import PROTOCOL
from stockade.model import NodeDelta, NodeModel, diff
from stockade.v1 import sync_pb2


class Session:
    def __init__(self, feed: NodeFeed, epoch: str, peer: str, max_inflight: int = 2) -> None:
        self.feed = feed
        # Messages sent and not acked yet. Past the limit nothing more is sent, so an agent
        # stuck in its kernel gets one coalesced delta when it is back, not a backlog; and the
        # transport's buffers never fill with stale deltas.
        self.inflight = 0
        self.max_inflight = max_inflight
        self.stale_acks = 0
        self.node = feed.node
        self.epoch = epoch
        self.peer = peer
        self.sent_generation = 0
        self._sent_model: NodeModel | None = None
        self._snapshot = False
        self._snapshot_not_before = 0.0
        self._resume = False
        self._catch_up: list[NodeDelta] | None = None  # steps from history for a returning agent
        self._catch_up_base = 0
        self.end: tuple[str, str] | None = None  # (grpc status code name, message) to end with
        self._wake = asyncio.Event()
        feed.listen(self.wake)

    # ---- decided at hello ------------------------------------------------------------------

    def start(self, epoch: str, generation: int, digest: str) -> str:
        """Choose how to bring the agent up to date from its hello; returns "resume", "steps" or
        "snapshot" (for logs and tests)."""
        feed = self.feed
        if digest and digest == feed.digest():
            self._resume = True
            return "resume"
        if epoch == self.epoch and generation > 0:
            steps = feed.steps_since(generation)
            if steps is not None:
                self._catch_up, self._catch_up_base = steps, generation
                return "steps"
        self._snapshot = True
        return "snapshot"

    def resnapshot(self, delay: float) -> None:
        """Send a full snapshot (after ``delay`` seconds) because the agent could not apply."""
        self._snapshot = True
        self._snapshot_not_before = time.monotonic() + delay
        self._catch_up = None
        self._resume = False
        # Messages already in flight were built on what the agent failed to apply: their
        # failures are echoes of this one, not new ones.
        self.stale_acks = self.inflight
        self.wake()

    def close(self, code: str, message: str) -> None:
        if self.end is None:
            self.end = (code, message)
        self.wake()

    def detach(self) -> None:
        self.feed.unlisten(self.wake)

    # ---- the send loop's two operations ----------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def wait(self) -> None:
        """Until there may be something to send (or the session must end)."""
        timeout = None
        if self._snapshot:
            timeout = max(0.0, self._snapshot_not_before - time.monotonic())
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    def acked(self) -> None:
        # Wake the sender only if the in-flight limit was holding something back.
        was_full = self.inflight >= self.max_inflight
        self.inflight = max(0, self.inflight - 1)
        if was_full and self.sent_generation < self.feed.generation:
            self.wake()

    def next_message(self) -> sync_pb2.BrainMessage | None:
        if self.inflight >= self.max_inflight:
            return None
        msg = self._next()
        if msg is not None:
            self.inflight += 1
            msg.protocol = PROTOCOL  # on every message: an agent checks the first one it gets
        return msg

    def _next(self) -> sync_pb2.BrainMessage | None:
        feed = self.feed
        gen = feed.generation
        if self._snapshot:
            if time.monotonic() < self._snapshot_not_before:
                return None
            self._snapshot = False
            self._mark_sent(gen, feed.model)
            return sync_pb2.BrainMessage(
                snapshot=sync_pb2.Snapshot(
                    epoch=self.epoch, generation=gen, digest=feed.digest(), model=model_to_proto(feed.model)
                )
            )
        if self._resume:
            self._resume = False
            self._mark_sent(gen, feed.model)
            return sync_pb2.BrainMessage(resume=sync_pb2.Resume(epoch=self.epoch, generation=gen, digest=feed.digest()))
        if self._catch_up is not None:
            steps, base = self._catch_up, self._catch_up_base
            self._catch_up = None
            self._mark_sent(gen, feed.model)
            if gen == base:
                return sync_pb2.BrainMessage(
                    resume=sync_pb2.Resume(epoch=self.epoch, generation=gen, digest=feed.digest())
                )
            return self._deltas(base, gen, steps)
        if self.sent_generation >= gen or self._sent_model is None:
            return None
        base = self.sent_generation
        if base == gen - 1 and feed.history and feed.history[-1][0] == gen:
            step = feed.history[-1][1]  # the common case: exactly one new delta
        else:
            step = diff(self._sent_model, feed.model)  # coalesced: one step for all that passed
        self._mark_sent(gen, feed.model)
        return self._deltas(base, gen, [step])

    def _mark_sent(self, generation: int, model: NodeModel) -> None:
        self.sent_generation = generation
        self._sent_model = model  # a reference: feeds never mutate a model they handed out

    def _deltas(self, base: int, gen: int, steps: list[NodeDelta]) -> sync_pb2.BrainMessage:
        msg = sync_pb2.BrainMessage()
        d = msg.deltas
        d.epoch, d.base_generation, d.generation, d.digest = self.epoch, base, gen, self.feed.digest()
        for step in steps:
            fill_delta(d.steps.add(), step)  # built in place: no copy of each step
        return msg
