"""Which brain the agent dials next, and the channel to it.

Two brains act as one (issue 13): the agent is served by one brain at a time. Each round
resolves the ``--brain`` value again (a headless Service's name lists the brains that are ready
now) and puts the candidates in the node's own order (`stockade.dial.order_for`); a round that
follows a brain the agent was on starts right after that brain, so the agent moves to the next
one at once and tries the brain that went away last. The sync client backs off only after a
whole round found no brain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from stockade.dial import Candidate, Resolver, Target, order_for, parse_targets, resolve, system_resolver
from stockade.tls import ClientTLS

log = logging.getLogger(__name__)

TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"


class BrainRounds:
    """The brains named by ``targets`` (``HOST:PORT[,HOST:PORT...]`` or parsed targets)."""

    def __init__(self, node: str, targets: str | Sequence[Target], resolver: Resolver = system_resolver) -> None:
        self.node = node
        self.targets = parse_targets(targets) if isinstance(targets, str) else list(targets)
        self.resolver = resolver
        self.candidates: list[Candidate] = []  # the last round's, in the node's order
        self._problems: list[str] = []

    @property
    def first(self) -> Candidate:
        """The brain to name before any round was resolved (gRPC resolves a name by itself)."""
        if self.candidates:
            return self.candidates[0]
        return Candidate(str(self.targets[0]))

    async def round(self, after: Candidate | None = None) -> list[Candidate]:
        """Every brain to try in this round, in order; starting after ``after`` when it is still
        a candidate (resolving may block: it runs in a thread)."""
        found, problems = await asyncio.get_running_loop().run_in_executor(None, resolve, self.targets, self.resolver)
        if problems != self._problems:  # said once per change, not once per round
            for p in problems:
                log.warning("node %s: %s", self.node, p)
            self._problems = problems
        ordered = order_for(self.node, found)
        if after is not None and after in ordered:
            i = ordered.index(after) + 1
            ordered = ordered[i:] + ordered[:i]
        self.candidates = ordered
        return list(ordered)


def open_channel(candidate: Candidate, tls: ClientTLS | None, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel to ``candidate``. The certificate is checked against the TLS configuration's
    own server name if it sets one, else against the name the candidate was found under (a
    Service name, never a pod IP), else against the address's host."""
    if tls is None:
        return grpc.aio.insecure_channel(candidate.address, options=list(options))
    extra = tls.channel_options()
    if not any(key == TARGET_NAME_OVERRIDE for key, _ in extra) and candidate.server_name:
        extra = [*extra, (TARGET_NAME_OVERRIDE, candidate.server_name)]
    return grpc.aio.secure_channel(candidate.address, tls.credentials(), options=[*options, *extra])
