"""The limits contract: one definition of how big a policy and a node model may be.

The brain validates every policy against `PolicyLimits` (a policy over one is rejected alone,
with the limit named), and enforces `NodeLimits.max_rules_per_chain` while compiling (a policy
that would push a pod's chain over it is not realized for that pod; see the engine). The codec
and the agent check arriving models and deltas against the same `NodeLimits`. The per-policy
bounds are derived from the node bounds, so that one accepted policy always fits a node:

* a policy rule compiles to one chain rule per peer (at most ``peers_per_rule``), each with the
  rule's ports (at most ``ports_per_rule`` = ``NodeLimits.max_ports_per_rule``);
* all the rules of one direction of a policy compile to at most ``chain_rules_per_policy``
  chain rules, half of ``NodeLimits.max_rules_per_chain``;
* each of those chain rules carries its rule's ports: a direction compiles to at most
  ``port_matches_per_policy`` (peer, port) pairs, so 1,000 peers x 1,000 ports is refused;
* an ipBlock expands to at most ``cidrs_per_ipblock`` CIDRs and all of a policy's ipBlocks to
  at most ``cidrs_per_policy``, a tenth of ``NodeLimits.max_set_elements``.

What many policies together put on one node is not bounded by these: the engine enforces the
rules-per-chain bound there. Sets, elements, chains and dispatch entries of a node grow with
the pods and the distinct peers of the cluster and are bounded far above a real node's needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeLimits:
    """Upper bounds for one node's model (generous: far above a real node's, far below harm)."""

    max_sets: int = 100_000
    max_set_elements: int = 1_000_000  # over all sets of one model or delta
    max_chains: int = 200_000  # at most one per dispatch entry, in each direction
    max_rules_per_chain: int = 10_000
    max_ports_per_rule: int = 1_000
    max_dispatch: int = 100_000  # pod IPs per direction
    max_steps: int = 1_000  # deltas in one Deltas message
    max_error_text: int = 4_096


@dataclass(frozen=True)
class PolicyLimits:
    """Upper bounds for one NetworkPolicy, derived from `NodeLimits` (see the module's text)."""

    ports_per_rule: int
    peers_per_rule: int
    rules_per_direction: int
    chain_rules_per_policy: int  # sum over a direction's rules of max(1, peers)
    port_matches_per_policy: int  # sum over a direction's rules of max(1, peers) * max(1, ports)
    excepts_per_ipblock: int
    cidrs_per_ipblock: int
    cidrs_per_policy: int
    selector_terms: int  # matchLabels entries + matchExpressions
    selector_values: int  # values of one matchExpressions entry

    @staticmethod
    def derived(node: NodeLimits) -> PolicyLimits:
        return PolicyLimits(
            ports_per_rule=node.max_ports_per_rule,
            peers_per_rule=1_000,
            rules_per_direction=1_000,
            chain_rules_per_policy=node.max_rules_per_chain // 2,
            # every chain rule carries its rule's ports: peers x ports is what compiling, the
            # wire and the agent pay; bounded so the worst valid policy compiles in ~100 ms
            port_matches_per_policy=100_000,
            excepts_per_ipblock=1_000,
            cidrs_per_ipblock=65_536,
            cidrs_per_policy=node.max_set_elements // 10,
            selector_terms=256,
            selector_values=1_000,
        )


NODE_LIMITS = NodeLimits()
POLICY_LIMITS = PolicyLimits.derived(NODE_LIMITS)


def over(what: str, count: int, limit: int, per: str) -> str:
    """The one wording of a limit exceeded, e.g. "1001 ports, over the limit of 1000 per rule"."""
    return f"{count} {what}, over the limit of {limit} {per}"
