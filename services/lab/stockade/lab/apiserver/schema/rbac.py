"""rbac.authorization.k8s.io/v1 ClusterRole, ClusterRoleBinding, Role and RoleBinding."""

from __future__ import annotations

from .meta import LABEL_SELECTOR, kind
from .model import STRING, F, atomic, define

RBAC = "io.k8s.api.rbac.v1."
GROUP = "rbac.authorization.k8s.io"

POLICY_RULE = define(
    RBAC + "PolicyRule",
    "Actions (verbs) allowed on resources or on non-resource URLs.",
    atomic("apiGroups", STRING, 'The API groups of the resources ("" is the core group, "*" every group).'),
    atomic("nonResourceURLs", STRING, "Non-resource URLs (/healthz, /api/*); in ClusterRoles only."),
    atomic("resourceNames", STRING, "The names the rule is limited to; every name when empty."),
    atomic("resources", STRING, 'The resources ("pods", "pods/status", "*").'),
    atomic("verbs", STRING, 'The verbs allowed ("get", "list", "*").', required=True),
)
RULES = atomic("rules", POLICY_RULE, "The rules of the role.")
AGGREGATION_RULE = define(
    RBAC + "AggregationRule",
    "How a ClusterRole's rules are aggregated from other ClusterRoles'.",
    atomic("clusterRoleSelectors", LABEL_SELECTOR, "The ClusterRoles whose rules are aggregated."),
)
ROLE_REF = define(
    RBAC + "RoleRef",
    "The role a binding grants.",
    F("apiGroup", STRING, "The role's API group (rbac.authorization.k8s.io)."),
    F("kind", STRING, "Role or ClusterRole.", required=True),
    F("name", STRING, "The role's name.", required=True),
    map_type="atomic",
)
# The bindings' subjects are kept, not modelled field by field (the bindings are "open"): the real
# client names their type RbacV1Subject, which tests/apiserver/test_schema.py's matcher does not
# know. Their checks are kinds/rbac.py's.
ROLE_REF_FIELD = F("roleRef", ROLE_REF, "The role granted; may not change.", required=True)

CLUSTER_ROLE = kind(
    RBAC,
    GROUP,
    "v1",
    "ClusterRole",
    "Rules that grant access cluster-wide (through a ClusterRoleBinding) or in a namespace (a RoleBinding).",
    F("aggregationRule", AGGREGATION_RULE, "Where the rules are aggregated from (the controller fills rules)."),
    RULES,
)
ROLE = kind(RBAC, GROUP, "v1", "Role", "Rules that grant access inside one namespace.", RULES)
CLUSTER_ROLE_BINDING = kind(
    RBAC,
    GROUP,
    "v1",
    "ClusterRoleBinding",
    "Grants a ClusterRole's rules to subjects, in every namespace and at the cluster scope.",
    ROLE_REF_FIELD,
    open=True,
)
ROLE_BINDING = kind(
    RBAC,
    GROUP,
    "v1",
    "RoleBinding",
    "Grants a Role's (or a ClusterRole's) rules to subjects, inside the binding's namespace.",
    ROLE_REF_FIELD,
    open=True,
)
