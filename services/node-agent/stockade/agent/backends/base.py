"""The contract every dataplane backend (nftables, iptables + ipset, in-memory) fulfils."""

from __future__ import annotations

from typing import Protocol

from stockade.agent import preflight
from stockade.model import NodeDelta, NodeModel

DUAL_STACK = (preflight.IPV4, preflight.IPV6)


class ApplyError(Exception):
    """The kernel refused a transaction; nothing of it took effect."""


class Dataplane(Protocol):
    """Applies rule models to one node. Every call is one atomic transaction.

    ``apply_snapshot`` replaces whatever we hold with ``model`` (and only touches what differs
    from what the kernel already has, so an agent restart does not flap). ``apply_delta`` applies
    ``delta``; ``model`` is the result the delta leads to, for backends that need context.
    ``verify`` reads back what the kernel holds and returns a list of differences from
    ``model`` (empty when in sync); ``repair`` re-applies ``model`` in one transaction.
    """

    name: str

    def apply_snapshot(self, model: NodeModel) -> None: ...

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None: ...

    def verify(self, model: NodeModel) -> list[str]: ...

    def repair(self, model: NodeModel) -> None: ...

    def close(self) -> None: ...


class Backend:
    """A base for backends: the optional hooks, with the defaults every backend shares.

    ``families``: the address families the backend enforces. ``preflight(facts)``: what the node
    needs so that every pod packet reaches this backend's rules (`stockade.agent.preflight`); a
    backend adds its own needs with ``super().preflight(facts) + [...]``. A node with problems is
    not ready, and the agent says why. Backends that do not derive from this class get the same
    defaults through `node_needs` and `families_of`.
    """

    name = "backend"
    families: tuple[str, ...] = DUAL_STACK

    def preflight(self, facts: preflight.NodeFacts) -> list[preflight.Problem]:
        return preflight.shared_needs(facts, self.families, self.name)


def families_of(dataplane: object) -> tuple[str, ...]:
    return tuple(getattr(dataplane, "families", DUAL_STACK))


def node_needs(dataplane: object, facts: preflight.NodeFacts) -> list[preflight.Problem]:
    """``dataplane``'s preflight hook, or the shared default for a backend without one."""
    hook = getattr(dataplane, "preflight", None)
    if callable(hook):
        return list(hook(facts))
    return preflight.shared_needs(facts, families_of(dataplane), str(getattr(dataplane, "name", "?")))


class MemoryDataplane(Backend):
    """Records the model in memory: for tests and benchmarks of everything around the kernel."""

    name = "memory"

    def __init__(self) -> None:
        self.model: NodeModel | None = None
        self.transactions = 0

    def apply_snapshot(self, model: NodeModel) -> None:
        self.model = model.copy()
        self.transactions += 1

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        from stockade.model import apply

        base = self.model if self.model is not None else NodeModel(delta.node)
        self.model = apply(base, delta)
        self.transactions += 1

    def verify(self, model: NodeModel) -> list[str]:
        return [] if self.model == model else ["memory dataplane differs from the desired model"]

    def repair(self, model: NodeModel) -> None:
        self.apply_snapshot(model)

    def close(self) -> None:
        pass


class CountingDataplane(Dataplane, Protocol):
    """A kernel backend that also reads back its exact deny counters.

    ``denied_counts`` maps a pod chain id to the number of connections (TCP) or flows (UDP,
    SCTP, other) its deny rule has dropped since the chain was created. NFLOG loss over an
    interval = the counter's increase minus the NFLOG events received for that chain.
    """

    def denied_counts(self) -> dict[str, int]: ...
