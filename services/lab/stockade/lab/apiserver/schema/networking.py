"""networking.k8s.io/v1 NetworkPolicy, and the same kind under extensions/v1beta1 (the seed
article's API: the lab serves the same objects there)."""

from __future__ import annotations

from .core import PROTOCOL, PROTOCOLS
from .meta import INT_OR_STRING, LABEL_SELECTOR, kind
from .model import DEFINITIONS, INT32, STRING, F, alias, atomic, clone_package, define

NETWORKING = "io.k8s.api.networking.v1."

IP_BLOCK = define(
    NETWORKING + "IPBlock",
    "A CIDR (192.168.1.0/24, 2001:db8::/64) allowed to or from the selected pods, minus the except CIDRs.",
    F("cidr", STRING, "The CIDR the peer covers.", required=True),
    atomic("except", STRING, "CIDRs inside cidr that are not part of the peer; each a strict subset of cidr."),
)
PEER = define(
    NETWORKING + "NetworkPolicyPeer",
    "Whom traffic may come from or go to: pods (podSelector, in this namespace or those namespaceSelector "
    "selects), namespaces, or an ipBlock. ipBlock stands alone.",
    F("ipBlock", IP_BLOCK, "An address range; may not be combined with the selectors."),
    F(
        "namespaceSelector",
        LABEL_SELECTOR,
        "Namespaces by label ({} selects all); with podSelector, those pods in those namespaces.",
    ),
    F(
        "podSelector",
        LABEL_SELECTOR,
        "Pods by label ({} selects all), in the policy's namespace unless namespaceSelector is set.",
    ),
)
PORT = define(
    NETWORKING + "NetworkPolicyPort",
    "A port (or range) and protocol traffic may use.",
    F("endPort", INT32, "The last port of a range starting at port; port must then be a number."),
    F("port", INT_OR_STRING, "A port number or a named container port; all ports when empty."),
    F("protocol", PROTOCOL, 'TCP, UDP or SCTP; "TCP" when empty.', enum=PROTOCOLS),
)
INGRESS_RULE = define(
    NETWORKING + "NetworkPolicyIngressRule",
    "Traffic allowed to the selected pods: it must match both from and ports.",
    atomic("from", PEER, "Sources allowed; empty or absent allows every source."),
    atomic("ports", PORT, "Ports allowed; empty or absent allows every port."),
)
EGRESS_RULE = define(
    NETWORKING + "NetworkPolicyEgressRule",
    "Traffic allowed from the selected pods: it must match both to and ports.",
    atomic("ports", PORT, "Ports allowed; empty or absent allows every port."),
    atomic("to", PEER, "Destinations allowed; empty or absent allows every destination."),
)
SPEC = define(
    NETWORKING + "NetworkPolicySpec",
    "Which pods a policy selects and the traffic it allows them.",
    atomic("egress", EGRESS_RULE, "Rules for traffic from the selected pods (when policyTypes has Egress)."),
    atomic("ingress", INGRESS_RULE, "Rules for traffic to the selected pods (when policyTypes has Ingress)."),
    F(
        "podSelector",
        LABEL_SELECTOR,
        "The pods in this namespace the policy applies to; {} selects every pod of the namespace.",
    ),
    atomic(
        "policyTypes",
        alias("v1.PolicyType"),
        'Ingress, Egress or both: the directions the selected pods are isolated in. When empty: "Ingress", '
        'and "Egress" too if the policy has egress rules.',
    ),
)
NETWORK_POLICY = kind(
    NETWORKING,
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "Which traffic the selected pods may receive and send. A pod selected by a policy for a direction is "
    "isolated in it: only what some policy allows gets through.",
    F("spec", SPEC, "The policy."),
)
EXTENSIONS_NETWORK_POLICY = clone_package(
    NETWORK_POLICY, NETWORKING, "io.k8s.api.extensions.v1beta1.", ("extensions", "v1beta1", "NetworkPolicy")
)
clone_package(
    DEFINITIONS[NETWORKING + "NetworkPolicyList"],
    NETWORKING,
    "io.k8s.api.extensions.v1beta1.",
    ("extensions", "v1beta1", "NetworkPolicyList"),
)
