"""The agent's side of the sync protocol, without the transport: turn each message from the
brain into one dataplane transaction and the ack that reports it.

Every model is validated before the dataplane sees it: the codec checks names, ids, addresses
and counts, the result must be internally consistent and its digest must be the one the brain
announced. Anything wrong is reported in a failed ack (the brain then sends a snapshot) and the
dataplane keeps what it had. So is a model the node cannot enforce (``gate``: e.g. IPv6 pod
addresses on a node without IPv6): refused whole, never applied in part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from stockade.agent.backends.base import Dataplane
from stockade.codec import DEFAULT_LIMITS, Limits, ValidationError, delta_from_proto, model_from_proto
from stockade.codec.validate import check_count, check_digest, check_epoch
from stockade.codec.version import PROTOCOL
from stockade.model import NodeDelta, NodeModel, apply, diff
from stockade.v1 import sync_pb2

log = logging.getLogger(__name__)


@dataclass
class AgentStatus:
    """What the agent holds and how its link to the brain is doing (for logs, metrics, tests)."""

    node: str
    connected: bool = False
    fail_static: bool = False  # the brain is unreachable; the last applied rules stay in force
    epoch: str = ""
    generation: int = 0
    digest: str = ""
    last_apply_time: float | None = None
    last_error: str | None = None
    applies: int = 0
    failures: int = 0
    connects: int = 0
    phase: str = "starting"  # connecting, waiting, applying, acking, backoff, stopped
    refused: str | None = None  # why the last generation was refused as unenforceable here (cleared by an apply)
    brain_protocol: int = 0  # the sync protocol the brain last spoke (0: none yet)
    brain_refused: str | None = None  # why this agent refused the brain (an older protocol); None once accepted
    brain_refusals: int = 0  # streams this agent ended for that, since start
    brain: str = ""  # the brain serving this node now (HOST:PORT); "" while none does
    brain_switches: int = 0  # accepted streams on a brain other than the one before, since start
    history: list[str] = field(default_factory=list)  # recent link events, newest last

    def event(self, text: str) -> None:
        self.history.append(text)
        del self.history[:-20]


# (the model a message leads to, "snapshot" or "deltas") -> why this node cannot enforce it, or None
Gate = Callable[[NodeModel, str], Awaitable[str | None]]


class Applier:
    """Holds the node's current model and applies what the brain sends to the dataplane.

    ``offload``: run dataplane calls in a worker thread (the kernel backends block); off for
    in-memory dataplanes. ``gate``: asked before each snapshot or delta reaches the dataplane.
    """

    def __init__(
        self,
        node: str,
        dataplane: Dataplane,
        *,
        offload: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        on_applied: Callable[[AgentStatus], None] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.node = node
        self.dataplane = dataplane
        self.offload = offload
        self.limits = limits
        self.model: NodeModel | None = None
        self.status = AgentStatus(node)
        self.on_applied = on_applied
        self.gate = gate

    def hello(
        self, version: str = "", readiness: tuple[bool, Sequence[str]] | None = None, protocol: int = PROTOCOL
    ) -> sync_pb2.AgentMessage:
        st = self.status
        hello = sync_pb2.Hello(
            node=self.node,
            epoch=st.epoch,
            applied_generation=st.generation,
            digest=st.digest,
            agent_version=version,
            backend=str(getattr(self.dataplane, "name", "")),
            protocol=protocol,
        )
        if readiness is not None:
            ready, problems = readiness
            hello.status.SetInParent()  # present even when empty: "no problems" is news too
            hello.status.ready = ready
            hello.status.problems.extend(problems)
        return sync_pb2.AgentMessage(hello=hello)

    async def handle(self, msg: sync_pb2.BrainMessage) -> sync_pb2.AgentMessage:
        """Apply one message from the brain; returns the ack to send."""
        kind = msg.WhichOneof("kind")
        try:
            if kind == "snapshot":
                return await self._snapshot(msg.snapshot)
            if kind == "deltas":
                return await self._deltas(msg.deltas)
            if kind == "resume":
                return self._resume(msg.resume)
            raise ValidationError(f"unknown message from the brain: {kind}")
        except ValidationError as e:
            return self._nack(_generation(msg), f"invalid message from the brain: {e}")

    async def _snapshot(self, snap: sync_pb2.Snapshot) -> sync_pb2.AgentMessage:
        check_epoch(snap.epoch, "snapshot.epoch")
        check_digest(snap.digest, "snapshot.digest")
        model = model_from_proto(snap.model, self.limits)
        self._check_result(model, snap.digest)
        refusal = await self._gated(model, "snapshot", snap.generation)
        if refusal is not None:
            return refusal
        try:
            await self._call(self.dataplane.apply_snapshot, model)
        except Exception as e:
            return self._nack(snap.generation, f"dataplane refused the snapshot: {e}")
        return self._applied(snap.epoch, snap.generation, model, snap.digest)

    async def _deltas(self, msg: sync_pb2.Deltas) -> sync_pb2.AgentMessage:
        check_epoch(msg.epoch, "deltas.epoch")
        check_digest(msg.digest, "deltas.digest")
        check_count(len(msg.steps), self.limits.max_steps, "deltas.steps")
        st = self.status
        if self.model is None or msg.epoch != st.epoch or msg.base_generation != st.generation:
            return self._nack(
                msg.generation,
                f"deltas from {msg.epoch}/{msg.base_generation} do not follow what this agent holds "
                f"({st.epoch or '-'}/{st.generation})",
            )
        steps = [delta_from_proto(s, self.limits) for s in msg.steps]
        model = self.model
        for step in steps:
            if step.node != self.node:
                raise ValidationError(f"delta.node: {step.node!r} is not this node ({self.node!r})")
            model = apply(model, step)
        self._check_result(model, msg.digest)
        refusal = await self._gated(model, "deltas", msg.generation)
        if refusal is not None:
            return refusal
        # One transaction, whatever the number of steps.
        delta: NodeDelta = steps[0] if len(steps) == 1 else diff(self.model, model)
        try:
            await self._call(self.dataplane.apply_delta, delta, model)
        except Exception as e:
            return self._nack(msg.generation, f"dataplane refused generation {msg.generation}: {e}")
        return self._applied(msg.epoch, msg.generation, model, msg.digest)

    def _resume(self, msg: sync_pb2.Resume) -> sync_pb2.AgentMessage:
        check_epoch(msg.epoch, "resume.epoch")
        if self.model is None or msg.digest != self.status.digest:
            return self._nack(msg.generation, "resume for a model this agent does not hold")
        return self._applied(msg.epoch, msg.generation, self.model, msg.digest, applied=False)

    def _check_result(self, model: NodeModel, digest: str) -> None:
        if model.node != self.node:
            raise ValidationError(f"model.node: {model.node!r} is not this node ({self.node!r})")
        problems = model.check()
        if problems:
            raise ValidationError(f"the resulting model is inconsistent: {'; '.join(problems[:3])}")
        if model.digest() != digest:
            raise ValidationError("the resulting model's digest differs from the brain's")

    async def _gated(self, model: NodeModel, kind: str, generation: int) -> sync_pb2.AgentMessage | None:
        """The failed ack for a model the node cannot enforce, or None to go on."""
        if self.gate is None:
            return None
        why = await self.gate(model, kind)
        if why is None:
            self.status.refused = None  # the node can enforce what the brain wants now
            return None
        self.status.refused = f"generation {generation} refused: {why}"
        return self._nack(generation, self.status.refused)

    async def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self.offload:
            await asyncio.to_thread(fn, *args)
        else:
            fn(*args)

    def _applied(
        self, epoch: str, generation: int, model: NodeModel, digest: str, applied: bool = True
    ) -> sync_pb2.AgentMessage:
        # ``digest`` was checked against ``model`` (or is the one the agent already held).
        st = self.status
        self.model = model
        st.epoch, st.generation, st.digest = epoch, generation, digest
        st.last_error = st.refused = None
        if applied:
            st.applies += 1
            st.last_apply_time = time.time()
        if self.on_applied is not None:
            self.on_applied(st)
        return sync_pb2.AgentMessage(ack=sync_pb2.Ack(generation=generation, ok=True, digest=st.digest))

    def _nack(self, generation: int, error: str) -> sync_pb2.AgentMessage:
        st = self.status
        st.failures += 1
        st.last_error = error
        log.error("node %s: %s (keeping generation %d)", self.node, error, st.generation)
        return sync_pb2.AgentMessage(
            ack=sync_pb2.Ack(generation=generation, ok=False, error=error[:2000], digest=st.digest)
        )


def _generation(msg: sync_pb2.BrainMessage) -> int:
    kind = msg.WhichOneof("kind")
    return int(getattr(msg, kind).generation) if kind else 0
