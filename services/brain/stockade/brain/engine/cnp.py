"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) as typed, immutable values.

`cnp_parse.parse_cnp` builds them from a Kubernetes dict; they hold what was written, checked
and canonical, and no verdicts. The semantics they carry (the API reference's, which the
compiler and the test oracle implement):

* Tiers are evaluated Admin, then v1 NetworkPolicy, then Baseline, then allow. Within a tier,
  policies run by ascending ``priority`` and, on equal priority, by ``name`` (`order`: upstream
  leaves that order undefined; this is Stockade's deterministic choice); within a policy, rules
  run in written order. Accept and Deny are final for their direction; Pass skips the rest of
  its tier. An egress Accept still leaves the destination's ingress to decide.
* A rule matches a connection when one of its peers matches the other end and, when
  ``protocols`` is set, one of them matches the destination port.
* ``Rule.unknown`` lists peers or protocol entries that set no field Stockade knows (a newer
  CRD's). The rule then fails closed: an Accept rule matches nothing, a Deny or Pass rule is
  treated as a "Deny all" rule (denies every connection that reaches it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stockade.brain.engine.selectors import Selector
from stockade.model import Protocol

API_GROUP = "policy.networking.k8s.io"
API_VERSION = f"{API_GROUP}/v1alpha2"
KIND = "ClusterNetworkPolicy"


class Tier(enum.StrEnum):
    ADMIN = "Admin"
    BASELINE = "Baseline"


class Action(enum.StrEnum):
    ACCEPT = "Accept"
    DENY = "Deny"
    PASS = "Pass"


@dataclass(frozen=True)
class Namespaces:
    """Every pod (host-network pods excepted) of the namespaces the selector matches."""

    namespace_selector: Selector


@dataclass(frozen=True)
class Pods:
    """The pods (host-network pods excepted) matching ``pod_selector`` in the namespaces matching
    ``namespace_selector`` (everything when it was left out)."""

    namespace_selector: Selector
    pod_selector: Selector


@dataclass(frozen=True)
class Nodes:
    """The addresses (``status.addresses``) of the nodes the selector matches. Egress only."""

    node_selector: Selector


@dataclass(frozen=True)
class Networks:
    """Addresses in any of the CIDRs, pods' and nodes' included. Egress only.

    ``cidrs``: canonical (host bits cleared, as `ipaddress` writes them), in written order,
    without duplicates; IPv4 and IPv6 may mix, and an address matches the CIDRs of its family."""

    cidrs: tuple[str, ...]


Subject = Namespaces | Pods
Peer = Namespaces | Pods | Nodes | Networks


@dataclass(frozen=True)
class PortRange:
    """Destination ports ``start``..``end`` inclusive of one protocol (one port: start == end)."""

    protocol: Protocol
    start: int
    end: int


@dataclass(frozen=True)
class NamedPort:
    """The destination pod's container port of this name, on that port's own protocol. Only pods
    have named ports (the parser refuses one beside networks or nodes peers)."""

    name: str


PortMatch = PortRange | NamedPort


@dataclass(frozen=True)
class Rule:
    index: int  # position in its direction's list (spec.ingress[index] / spec.egress[index])
    name: str  # "" when unnamed
    action: Action
    peers: tuple[Peer, ...]  # the peers Stockade knows, in written order
    # None: all traffic to those peers. Empty only when every entry was unknown (see ``unknown``).
    protocols: tuple[PortMatch, ...] | None
    unknown: tuple[str, ...] = ()  # field paths that set no known field: the rule fails closed


@dataclass(frozen=True)
class ClusterNetworkPolicy:
    name: str
    tier: Tier
    priority: int  # 0-1000, lower first
    subject: Subject
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    @property
    def key(self) -> str:
        return self.name  # cluster-scoped: names are unique

    @property
    def order(self) -> tuple[int, str]:
        """The policy's place in its tier: by priority, then (Stockade's choice) by name."""
        return (self.priority, self.name)
