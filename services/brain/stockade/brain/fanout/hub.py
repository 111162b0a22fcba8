"""The fan-out: per-node feeds, the connected agents' sessions, acks and realization status.

Input is transport-neutral: ``on_deltas(deltas)`` with the engine's per-node deltas, and a
``model_of(node)`` callable for a node's full current model (used when a node's feed starts).
Call ``on_deltas`` on the event loop, right after the engine change that produced the deltas,
so that a feed started from ``model_of`` and the deltas that follow it line up.

A feed is started when an agent first connects for its node; nodes without an agent cost
nothing here. Each session sends from its feed at its own pace (see `Session`), so a slow agent
holds up no one and memory does not grow with how far behind it is.

Realization counts a node only while it enforces what it acked (`NodeStatus.ready`): a node
whose agent reports that pod traffic bypasses its rules, or whose agent was refused for an
older sync protocol, is pending however far it acked.

With several brains (`peers.py`), `node_view` adds what a live peer says of the nodes it serves:
realization, `wait_synced` and the admin API go by it; metrics by `node_status` (first-hand).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from stockade.brain.fanout.feed import NodeFeed
from stockade.brain.fanout.peerview import PeerView, served_by_peer
from stockade.brain.fanout.realization import RealizationTimes
from stockade.brain.fanout.session import Session
from stockade.brain.fanout.status import NodeStatus, PolicyRealization
from stockade.codec.validate import DEFAULT_LIMITS, ValidationError, check_digest, check_problems
from stockade.codec.version import spoken
from stockade.model import NodeDelta, NodeModel
from stockade.v1 import sync_pb2

log = logging.getLogger(__name__)

PolicyKey = tuple[str, str]  # (namespace, name)


class PolicyIndex(Protocol):
    """What realization needs from the engine."""

    def policy_keys(self) -> list[str]: ...  # "namespace/name"

    def policy_nodes(self, namespace: str, name: str) -> set[str]: ...


class FanOut:
    def __init__(
        self,
        model_of: Callable[[str], NodeModel],
        *,
        history: int = 128,
        epoch: str | None = None,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        max_inflight: int = 2,
    ) -> None:
        self.model_of = model_of
        self.history = history
        # Identifies this brain process: generations from another epoch mean nothing here.
        self.epoch = epoch or secrets.token_hex(8)
        self.retry_min, self.retry_max = retry_min, retry_max
        self.max_inflight = max_inflight
        self.feeds: dict[str, NodeFeed] = {}
        self.sessions: dict[str, Session] = {}
        self.status: dict[str, NodeStatus] = {}
        # The generation at which a policy's last change reached each node's feed.
        self._policy_marks: dict[PolicyKey, dict[str, int]] = {}
        self._waiters: list[_Waiter] = []
        self.failed_acks = 0  # agents' failures to apply (or digest mismatches), since start
        self.closing: tuple[str, str] | None = None  # set by close_all: how every stream ends now
        self.refused_agents = 0  # streams refused for an older sync protocol, since start
        self.realization_times = RealizationTimes()  # change seen -> acked by the node
        # With several brains (peers.py): this brain's name for operators, what its peers serve,
        # and who hears of every change of a node's status (to publish it). None: alone.
        self.brain_id = self.epoch
        self.peers: PeerView | None = None
        self.on_status: Callable[[str], None] | None = None

    # ---- input from the engine -------------------------------------------------------------

    def on_deltas(
        self, deltas: Mapping[str, NodeDelta], policy: PolicyKey | None = None, seen: float | None = None
    ) -> None:
        """Advance the feeds of the nodes whose models changed (``policy``: the NetworkPolicy
        whose change produced them, so its realization can be tracked exactly; ``seen``: when
        the brain saw that change, `time.monotonic()`, default now)."""
        for node, delta in deltas.items():
            feed = self.feeds.get(node)
            if feed is None or delta.is_empty():
                continue  # a feed started later begins from model_of(node), which has it
            gen = feed.advance(delta)
            self.status[node].desired_generation = gen
            self.realization_times.changed(node, gen, seen)
            if policy is not None:
                self._policy_marks.setdefault(policy, {})[node] = gen
            if self._waiters and node not in self.sessions:
                self._check_waiters(node)  # a peer's agent may hold what the feed just reached

    def forget_policy(self, namespace: str, name: str) -> None:
        """The engine no longer holds this policy (deleted, or refused): drop what realization
        tracked of it, so deleted policies leave nothing behind. Call it after the `on_deltas`
        of that change; a policy made again under the name is tracked from its new changes."""
        self._policy_marks.pop((namespace, name), None)

    def tracked_policies(self) -> int:
        """How many policies realization holds marks for (bounded by the engine's policies)."""
        return len(self._policy_marks)

    def feed(self, node: str) -> NodeFeed:
        feed = self.feeds.get(node)
        if feed is None:
            feed = self.feeds[node] = NodeFeed(node, self.model_of(node), self.history)
            st = self.status.setdefault(node, NodeStatus(node))
            st.desired_generation, st.applied_generation = feed.generation, 0
        return feed

    # ---- sessions ----------------------------------------------------------------------------

    def connect(self, hello: sync_pb2.Hello, peer: str = "") -> tuple[Session, str]:
        """A session for an authenticated, validated hello, and how it will catch up. A newer
        stream for the same node replaces an older one (likely half-open)."""
        feed = self.feed(hello.node)
        old = self.sessions.get(hello.node)
        if old is not None:
            old.close("ABORTED", "replaced by a newer stream from the same node")
            old.detach()
        session = Session(feed, self.epoch, peer, self.max_inflight)
        if self.closing is not None:  # shutting down: this stream ends before its first message
            session.close(*self.closing)
        mode = session.start(hello.epoch, hello.applied_generation, hello.digest)
        self.sessions[hello.node] = session
        st = self.status[hello.node]
        st.connected, st.peer, st.backend, st.brain = True, peer, hello.backend, self.brain_id
        st.protocol, st.agent_version = spoken(hello.protocol), hello.agent_version
        st.refused = st.refused_time = None
        if hello.HasField("status"):
            self._readiness(st, hello.status.ready, tuple(hello.status.problems))
        # What the agent says it holds, in this brain's numbering (a restarted agent holds
        # nothing we can name; one from another epoch is placed by its Resume ack).
        same_epoch = hello.epoch == self.epoch and hello.applied_generation <= feed.generation
        st.applied_generation = hello.applied_generation if same_epoch else 0
        log.info(
            "agent %s connected from %s (epoch %s gen %d): %s to generation %d",
            hello.node,
            peer,
            hello.epoch or "-",
            hello.applied_generation,
            mode,
            feed.generation,
        )
        self._notify(hello.node)
        return session, mode

    def refuse(self, hello: sync_pb2.Hello, reason: str) -> None:
        """Record that this node's (authenticated) agent was refused, and why: until an agent the
        brain accepts connects, the node enforces nothing this brain sends."""
        self.refused_agents += 1
        st = self.status.setdefault(hello.node, NodeStatus(hello.node))
        if hello.node in self.sessions:
            return  # an accepted agent is connected for the node; a stray old one changes nothing
        st.refused, st.refused_time = reason, time.time()
        st.protocol, st.agent_version, st.backend = spoken(hello.protocol), hello.agent_version, hello.backend
        self._notify(hello.node)

    def report(self, session: Session, status: sync_pb2.Status) -> None:
        """An agent's readiness. Raises `ValidationError` for a malformed one."""
        problems = check_problems(status.problems, "status.problems")
        if self.sessions.get(session.node) is session:  # not a replaced stream's last words
            self._readiness(self.status[session.node], status.ready, problems)

    def _readiness(self, st: NodeStatus, ready: bool, problems: tuple[str, ...]) -> None:
        if problems != st.problems:
            if problems:
                log.warning("node %s is not ready: %s", st.node, "; ".join(problems))
            elif st.problems:
                log.info("node %s is ready again: nothing bypasses its rules any more", st.node)
        st.agent_ready, st.problems = ready, problems
        self._notify(st.node)

    def disconnect(self, session: Session) -> None:
        session.detach()
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
            st = self.status[session.node]
            st.connected, st.brain = False, ""
            log.info("agent %s disconnected", session.node)
            self._notify(session.node)

    def close_all(self, code: str, message: str) -> int:
        """End every agent's stream with ``code`` (a gRPC status name) and ``message``, and every
        stream that connects from now on: the brain is going away and its agents should move to
        another brain now, not when a grace period runs out. Returns how many were connected."""
        self.closing = (code, message)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(code, message)
        return len(sessions)

    async def ack(self, session: Session, ack: sync_pb2.Ack) -> None:
        """Record an agent's ack. Raises `ValidationError` for an ack the agent cannot give."""
        if ack.generation > session.sent_generation:
            raise ValidationError(
                f"ack.generation: {ack.generation} was never sent (last sent {session.sent_generation})"
            )
        check_digest(ack.digest, "ack.digest")
        session.acked()
        st = self.status[session.node]
        stale = session.stale_acks > 0
        if stale:
            session.stale_acks -= 1
        if not ack.ok and stale:
            pass  # a snapshot is already on its way
        elif ack.ok:
            feed = session.feed
            if ack.generation == feed.generation and ack.digest and ack.digest != feed.digest():
                self._failed(session, st, "agent's model digest differs from the brain's after apply")
            else:
                st.applied_generation = max(st.applied_generation, ack.generation)
                st.applied_digest = ack.digest
                st.last_apply_time = time.time()
                st.last_error, st.failures = None, 0
                self.realization_times.applied(session.node, st.applied_generation)
        else:
            self._failed(session, st, ack.error[: DEFAULT_LIMITS.max_error_text] or "unspecified error")
        self._notify(session.node)

    def _failed(self, session: Session, st: NodeStatus, error: str) -> None:
        st.last_error, st.last_error_time = error, time.time()
        st.failures += 1
        st.failures_total += 1
        self.failed_acks += 1
        delay = min(self.retry_max, self.retry_min * 2 ** (st.failures - 1)) if st.failures > 1 else 0.0
        log.warning("agent %s failed to apply: %s; snapshot in %.1fs", session.node, error, delay)
        session.resnapshot(delay)

    # ---- realization ---------------------------------------------------------------------------

    def node_status(self, node: str) -> NodeStatus:
        """What this brain knows first-hand (its own streams): what its metrics report."""
        return self.status.get(node) or NodeStatus(node)

    def node_view(self, node: str) -> NodeStatus:
        """`node_status`, or for a node a live peer serves, that peer's word (`served_by_peer`):
        what realization, `wait_synced` and the admin API go by."""
        st = self.status.get(node)
        if node in self.sessions or self.peers is None:
            return st or NodeStatus(node)
        entry = self.peers.entry(node)
        if entry is None:
            return st or NodeStatus(node)
        return served_by_peer(st, entry, self.feeds.get(node))

    def peers_changed(self, nodes: Iterable[str]) -> None:
        """The peers' entries for ``nodes`` changed: wake whoever waits on them."""
        if self._waiters:
            for node in nodes:
                self._check_waiters(node)

    def policy_realization(self, namespace: str, name: str, nodes_needed: Iterable[str]) -> PolicyRealization:
        """``nodes_needed``: `Engine.policy_nodes(namespace, name)`. A node counts as applied
        when it acked the generation that carried the policy's last change to it (or, without
        such a record, when it acked its current generation), and is ready: nothing it said
        lets pod traffic bypass the rules."""
        marks = self._policy_marks.get((namespace, name), {})
        needed = sorted(set(nodes_needed))
        pending = []
        for node in needed:
            st = self.node_view(node)
            feed = self.feeds.get(node)
            if feed is None:
                pending.append(node)
                continue
            target = marks.get(node, feed.generation)
            if st.applied_generation < target or st.not_ready_reason is not None:
                pending.append(node)
        return PolicyRealization(f"{namespace}/{name}", len(needed), len(needed) - len(pending), tuple(pending))

    def realization(self, engine: PolicyIndex) -> list[PolicyRealization]:
        """`policy_realization` for every policy the engine holds."""
        out = []
        for key in engine.policy_keys():
            namespace, name = key.split("/", 1)
            out.append(self.policy_realization(namespace, name, engine.policy_nodes(namespace, name)))
        return out

    async def wait_synced(self, nodes: Iterable[str], timeout: float | None = None, *, ready: bool = False) -> bool:
        """Wait until each node acked the generation it is at now (and, with ``ready``, is
        ready: enforcing it with nothing bypassing it); False on timeout."""
        pending = {n: self.feed(n).generation for n in nodes}
        pending = {n: g for n, g in pending.items() if not self._reached(n, g, ready)}
        if not pending:
            return True
        waiter = _Waiter(pending, ready, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.done), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.remove(waiter)

    def _reached(self, node: str, generation: int, ready: bool) -> bool:
        st = self.node_view(node)
        return st.applied_generation >= generation and not (ready and st.not_ready_reason is not None)

    def _notify(self, node: str) -> None:
        self._check_waiters(node)
        if self.on_status is not None:
            self.on_status(node)

    def _check_waiters(self, node: str) -> None:
        # Only the node that changed is checked, so waiting costs O(waiters) per ack, not O(nodes).
        for w in self._waiters:
            target = w.pending.get(node)
            if target is not None and self._reached(node, target, w.ready):
                del w.pending[node]
                if not w.pending and not w.done.done():
                    w.done.set_result(None)


@dataclass
class _Waiter:
    pending: dict[str, int]  # node -> generation it must ack
    ready: bool  # and be ready
    done: asyncio.Future[None]
