"""Realization status: what each node should hold, what it has acked, and whether it enforces it.

A node counts as enforcing only while nothing lets pod traffic bypass its rules: its agent
reports such problems (a bridge without br_netfilter, IPv6 its dataplane cannot filter, a
generation it had to refuse), and a node whose agent the brain refused (an older sync
protocol) enforces nothing this brain sends.
"""

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
    brain: str = ""  # the brain holding the node's agent stream (this one or a peer); "" when none
    backend: str = ""  # the dataplane the agent said it uses
    last_apply_time: float | None = None  # time.time() of the last successful ack
    last_error: str | None = None  # the last failure the agent reported (cleared by a success)
    last_error_time: float | None = None
    failures: int = 0  # consecutive failed acks
    failures_total: int = 0  # failed acks since this brain started (a counter: never reset)
    protocol: int = 0  # the sync protocol the agent speaks (0: never connected)
    agent_version: str = ""
    agent_ready: bool = False  # the agent's own /readyz, as it last said
    # What lets pod traffic bypass the rules, as the agent last said. Kept while it is away:
    # a node that said it was not enforcing everything is not trusted to, until it says so.
    problems: tuple[str, ...] = ()
    refused: str | None = None  # why the brain refused the agent's stream (cleared when one is accepted)
    refused_time: float | None = None

    @property
    def in_sync(self) -> bool:
        return self.applied_generation >= self.desired_generation > 0

    @property
    def not_ready_reason(self) -> str | None:
        """Why this node does not enforce what it acked; None when nothing is known against it."""
        if self.refused:
            return f"agent refused: {self.refused}"
        if self.problems:
            return "; ".join(self.problems)
        return None

    @property
    def ready(self) -> bool:
        """Enforcing: some generation applied, nothing bypasses it, the agent not refused."""
        return self.applied_generation > 0 and self.not_ready_reason is None


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
