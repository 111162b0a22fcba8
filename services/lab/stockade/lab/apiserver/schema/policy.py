"""policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy (network-policy-api v0.2.0), served like a
CRD-backed resource, and apiextensions.k8s.io/v1 CustomResourceDefinition, which serves it.

The CNP's fields are described in full for OpenAPI (``kubectl explain``), but its spec decodes as
free-form JSON: a custom resource is checked by its schema after decoding, so a wrong type is a
422 naming the field (``kinds/clusternetworkpolicies.py``, the brain's own parser), not Go's 400.
A CRD object is kept as given (``open``): the lab serves only the CRDs it knows (``kinds/crds.py``).
"""

from __future__ import annotations

from .meta import CONDITION, LABEL_SELECTOR, kind
from .model import INT32, STRING, STRINGS, Definition, F, alias, atomic, define

POLICY = "io.k8s.networking.policy.v1alpha2."
APIEXTENSIONS = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."

TIERS = ("Admin", "Baseline")
ACTIONS = ("Accept", "Deny", "Pass")

PODS = define(
    POLICY + "NamespacedPod",
    "Pods by label, in the namespaces namespaceSelector selects (absent or {}: every namespace).",
    F("namespaceSelector", LABEL_SELECTOR, "The namespaces; {} selects every namespace."),
    F("podSelector", LABEL_SELECTOR, "The pods in those namespaces; {} selects every pod.", required=True),
)
SUBJECT = define(
    POLICY + "ClusterNetworkPolicySubject",
    "The pods the policy applies to: exactly one of namespaces and pods.",
    F("namespaces", LABEL_SELECTOR, "Every pod of the namespaces this selector matches."),
    F("pods", PODS, "The pods selected by label, in the namespaces selected by label."),
)
PORT_RANGE = define(
    POLICY + "PortRange",
    "A range of ports, start < end.",
    F("end", INT32, "The last port (1-65535).", required=True),
    F("start", INT32, "The first port (1-65535).", required=True),
)
PORT = define(
    POLICY + "Port",
    "A destination port: exactly one of number and range.",
    F("number", INT32, "One port (1-65535)."),
    F("range", PORT_RANGE, "A range of ports."),
)
PROTOCOL_PORT = define(
    POLICY + "ProtocolPort",
    "The destination port of one protocol.",
    F("destinationPort", PORT, "The port or port range.", required=True),
)
PROTOCOL = define(
    POLICY + "ClusterNetworkPolicyProtocol",
    "Traffic a rule matches: exactly one of tcp, udp, sctp (a destination port) and destinationNamedPort.",
    F("destinationNamedPort", STRING, "A named container port of the destination pod (pods peers only)."),
    F("sctp", PROTOCOL_PORT, "SCTP to this destination port."),
    F("tcp", PROTOCOL_PORT, "TCP to this destination port."),
    F("udp", PROTOCOL_PORT, "UDP to this destination port."),
)
INGRESS_PEER = define(
    POLICY + "ClusterNetworkPolicyIngressPeer",
    "Where ingress traffic comes from: exactly one of namespaces and pods.",
    F("namespaces", LABEL_SELECTOR, "Every pod of the namespaces this selector matches."),
    F("pods", PODS, "Pods by label, in namespaces by label."),
)
EGRESS_PEER = define(
    POLICY + "ClusterNetworkPolicyEgressPeer",
    "Where egress traffic goes: exactly one of namespaces, pods, nodes, networks and domainNames.",
    atomic("domainNames", STRING, "DNS names (refused by Stockade: it has no DNS-aware egress)."),
    F("namespaces", LABEL_SELECTOR, "Every pod of the namespaces this selector matches."),
    F("networks", STRINGS, "CIDRs (at most 25, no duplicates).", list_type="set"),
    F("nodes", LABEL_SELECTOR, "The nodes this selector matches (their addresses)."),
    F("pods", PODS, "Pods by label, in namespaces by label."),
)


def _rule(name: str, peers: str, peer: Definition, doc: str) -> Definition:
    return define(
        POLICY + name,
        doc,
        F(
            "action",
            alias("v1alpha2.ClusterNetworkPolicyRuleAction"),
            "Accept, Deny or Pass.",
            required=True,
            enum=ACTIONS,
        ),
        atomic(peers, peer, "The peers the rule matches (1 to 25).", required=True),
        F("name", STRING, "The rule's name (at most 100 characters), for humans and drop reports."),
        atomic("protocols", PROTOCOL, "The traffic the rule matches (1 to 25); absent: all of it."),
    )


INGRESS_RULE = _rule(
    "ClusterNetworkPolicyIngressRule", "from", INGRESS_PEER, "A rule for traffic to the subject, evaluated in order."
)
EGRESS_RULE = _rule(
    "ClusterNetworkPolicyEgressRule", "to", EGRESS_PEER, "A rule for traffic from the subject, evaluated in order."
)
SPEC = define(
    POLICY + "ClusterNetworkPolicySpec",
    "The tier, priority, subject and rules of a policy.",
    atomic("egress", EGRESS_RULE, "Rules for traffic from the subject, in order (at most 25)."),
    atomic("ingress", INGRESS_RULE, "Rules for traffic to the subject, in order (at most 25)."),
    F("priority", INT32, "0-1000: lower runs first within the tier (ties by name).", required=True),
    F("subject", SUBJECT, "The pods the policy applies to.", required=True),
    F("tier", alias("v1alpha2.Tier"), "Admin (before NetworkPolicies) or Baseline (after).", required=True, enum=TIERS),
    decode="any",
)
STATUS = define(
    POLICY + "ClusterNetworkPolicyStatus",
    "What the implementation reports about the policy.",
    atomic("conditions", CONDITION, "The policy's conditions."),
)
CLUSTER_NETWORK_POLICY = kind(
    POLICY,
    "policy.networking.k8s.io",
    "v1alpha2",
    "ClusterNetworkPolicy",
    "Cluster-wide rules in two tiers: Admin (evaluated before NetworkPolicies; Accept and Deny are final) "
    "and Baseline (after them).",
    F("spec", SPEC, "The policy.", required=True),
    F("status", STATUS, "The policy's status (the /status subresource)."),
)

CRD_SPEC = define(
    APIEXTENSIONS + "CustomResourceDefinitionSpec", "The resource a CRD serves (kept as given).", open=True
)
CRD_STATUS = define(APIEXTENSIONS + "CustomResourceDefinitionStatus", "Whether the CRD is established.", open=True)
CUSTOM_RESOURCE_DEFINITION = kind(
    APIEXTENSIONS,
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "A custom resource the server serves. The lab serves only the ones it knows.",
    F("spec", CRD_SPEC, "The resource's group, names, scope and versions.", required=True),
    F("status", CRD_STATUS, "Conditions (Established, NamesAccepted), accepted names and stored versions."),
)
