"""The iptables backend and ClusterNetworkPolicy tiers: not enforced yet, so a model with tiers is
refused loudly (an apply error naming what to do), never applied without its Deny rules; the node
keeps its last rules, and a model without tiers applies again."""

from __future__ import annotations

import pytest
from conftest import NODE, Topology, policy_model

from stockade.agent.backends import make_backend
from stockade.agent.backends.base import ApplyError
from stockade.model import Action, Chain, Direction, NodeModel, Rule, Tier, diff

pytestmark = pytest.mark.root


def tiered(model: NodeModel) -> NodeModel:
    """``model`` with an Admin Deny-all on every pod it isolates for ingress."""
    m = model.copy()
    deny = Chain.ordered(Direction.INGRESS, Tier.ADMIN, [Rule(None, None, Action.DENY)])
    m.chains[deny.id] = deny
    for ip in m.ingress:
        m.admin_ingress[ip] = deny.id
    assert not m.check()
    return m


def test_a_model_with_tiers_is_refused_and_the_last_rules_stay(topology: Topology) -> None:
    backend = make_backend("iptables", NODE, 100)
    plain = policy_model()
    backend.apply_snapshot(plain)
    assert backend.verify(plain) == []
    with pytest.raises(ApplyError, match=r"does not enforce ClusterNetworkPolicy tiers yet.*--backend nftables"):
        backend.apply_snapshot(tiered(plain))
    with pytest.raises(ApplyError, match="does not enforce ClusterNetworkPolicy tiers yet"):
        backend.apply_delta(diff(plain, tiered(plain)), tiered(plain))
    assert backend.verify(plain) == []  # nothing of the tiered model reached the kernel
    backend.apply_snapshot(plain)  # without tiers again: applied
    assert backend.verify(plain) == []
