"""``stockade_brain_agent_auth_*`` and ``stockade_brain_startup_taint_*``: how agents' identities
and nodes' startup taints fare, read at scrape time from the brain's `NodeAuth` and
`StartupTaints` (absent until the brain serves, and when they are not in use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric

from stockade.brain.nodeauth import NodeAuth
from stockade.brain.taints import StartupTaints


class Sources(Protocol):
    node_auth: NodeAuth | None
    taints: StartupTaints | None


class IdentityCollector:
    def __init__(self, brain: Sources) -> None:
        self.brain = brain

    def collect(self) -> Iterator[Metric]:
        # getattr: the registry collects once while the brain is still being built
        auth: NodeAuth | None = getattr(self.brain, "node_auth", None)
        if auth is not None:
            yield CounterMetricFamily(
                "stockade_brain_agent_auth_refused",
                "Agent calls refused before any message: no, a bad or a foreign token or certificate.",
                value=auth.refused,
            )
            yield CounterMetricFamily(
                "stockade_brain_agent_auth_revoked",
                "Live agent calls ended because their token stopped being valid (pod gone, expired).",
                value=auth.revoked,
            )
            if auth.tokens is not None:
                yield CounterMetricFamily(
                    "stockade_brain_agent_token_reviews",
                    "TokenReview calls made to the Kubernetes API (the rest were answered from the cache).",
                    value=auth.tokens.reviews,
                )
        taints: StartupTaints | None = getattr(self.brain, "taints", None)
        if taints is not None:
            yield CounterMetricFamily(
                "stockade_brain_startup_taint_removed",
                "Startup taints stockade.io/agent-not-ready this brain removed from nodes.",
                value=taints.removed,
            )
            yield CounterMetricFamily(
                "stockade_brain_startup_taint_errors",
                "Failed attempts to remove a startup taint (RBAC, API unreachable); retried.",
                value=taints.errors,
            )
