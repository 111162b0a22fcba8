"""A blocked connection attempt, as the node agent captures it and the brain aggregates it."""

from __future__ import annotations

from dataclasses import dataclass

from stockade.model.rules import Direction


@dataclass(frozen=True)
class BlockedEvent:
    """One denied new connection (a TCP connection counts once, a UDP flow once per conntrack flow).

    ``chain`` is the id of the pod chain that denied it (see `stockade.model.rules.Chain.id`);
    ``rule`` the index of the DENY rule in it when that chain is a ClusterNetworkPolicy tier
    chain (None: a NetworkPolicy chain's deny tail); ``node`` the node whose agent saw it.
    ``time`` is seconds since the epoch.
    """

    time: float
    node: str
    direction: Direction
    src: str
    dst: str
    protocol: str  # "TCP", "UDP", "SCTP", or the IP protocol number as text
    sport: int
    dport: int
    chain: str
    rule: int | None = None
