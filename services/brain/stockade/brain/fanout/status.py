"""Realization status: what each node should hold and what it has acked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NodeStatus:
    """Per node: the generation the brain wants it at, the one it acked, and how the last went."""

    node: str
    desired_generation: int = 0
    applied_generation: int = 0
    applied_digest: str = ""
    connected: bool = False
    peer: str = ""
    backend: str = ""  # the dataplane the agent said it uses
    last_apply_time: float | None = None  # time.time() of the last successful ack
    last_error: str | None = None  # the last failure the agent reported (cleared by a success)
    last_error_time: float | None = None
    failures: int = 0  # consecutive failed acks

    @property
    def in_sync(self) -> bool:
        return self.applied_generation >= self.desired_generation > 0


@dataclass(frozen=True)
class PolicyRealization:
    """On how many of the nodes that need a policy it is applied."""

    policy: str  # "namespace/name"
    nodes_needed: int
    nodes_applied: int
    pending: tuple[str, ...]  # nodes that need it and have not acked it yet

    @property
    def complete(self) -> bool:
        return self.nodes_applied == self.nodes_needed
