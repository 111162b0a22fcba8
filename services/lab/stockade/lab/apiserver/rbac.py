"""RBAC evaluation, as the real API server's authorizer does it (``plugin/pkg/auth/authorizer/rbac``):
pure functions over stored ClusterRoles, ClusterRoleBindings, Roles and RoleBindings.

A request (``Attributes``: verb, namespace, API group, resource, subresource, name; or a
non-resource path and verb) is allowed when a rule of a role bound to the user allows it:

- ClusterRoleBindings apply everywhere; a RoleBinding only in its own namespace, to a Role of that
  namespace or to a ClusterRole (whose rules then hold in that namespace only);
- a subject is a User (by name), a Group (one of the user's groups) or a ServiceAccount (the user
  ``system:serviceaccount:<namespace>:<name>``; the binding's namespace when the subject names none);
- a rule matches on verbs and apiGroups (``*`` for all), resources (``*``, ``pods``,
  ``pods/status``, ``*/status``), resourceNames (any name when empty), or nonResourceURLs (``*``,
  an exact path, or a prefix ending in ``*``);
- members of ``system:masters`` are allowed everything (the real server's privileged-group
  authorizer, before RBAC).

The answer carries the real reason text: ``RBAC: allowed by ClusterRoleBinding "x" of ClusterRole
"y" to User "z"``; a denial names the roles that could not be found, or nothing. RBAC never denies
outright (it has no opinion), so a review's ``denied`` is always false.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
MASTERS = "system:masters"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Attributes:
    """What a request does (``authorizer.Attributes``)."""

    verb: str
    namespace: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # a non-resource request's path
    resource_request: bool = True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Policy:
    """The RBAC objects stored: ClusterRoles by name, Roles by (namespace, name), the bindings."""

    cluster_roles: Mapping[str, Obj]
    cluster_role_bindings: Sequence[Obj]
    roles: Mapping[tuple[str, str], Obj]
    role_bindings: Sequence[Obj]

    @classmethod
    def from_objects(cls, objects: Mapping[str, Mapping[tuple[str, str], Obj]]) -> Policy:
        """From a store's objects (storage → (namespace, name) → object)."""
        return cls(
            {name: o for (_, name), o in objects.get("clusterroles", {}).items()},
            [o for _, o in sorted(objects.get("clusterrolebindings", {}).items())],
            dict(objects.get("roles", {})),
            [o for _, o in sorted(objects.get("rolebindings", {}).items())],
        )


def service_account_user(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def verb_matches(rule: Obj, verb: str) -> bool:
    return any(v in ("*", verb) for v in _list(rule.get("verbs")))


def api_group_matches(rule: Obj, group: str) -> bool:
    return any(g in ("*", group) for g in _list(rule.get("apiGroups")))


def resource_matches(rule: Obj, combined: str, subresource: str) -> bool:
    for r in _list(rule.get("resources")):
        if r in ("*", combined):
            return True
        if subresource and len(r) == len(subresource) + 2 and r.startswith("*/") and r.endswith(subresource):
            return True
    return False


def resource_name_matches(rule: Obj, name: str) -> bool:
    names = _list(rule.get("resourceNames"))
    return not names or name in names


def non_resource_url_matches(rule: Obj, path: str) -> bool:
    for url in _list(rule.get("nonResourceURLs")):
        if not isinstance(url, str):
            continue
        if url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Obj) -> bool:
    """``RuleAllows``: one PolicyRule against one request."""
    if not isinstance(rule, dict) or not verb_matches(rule, attrs.verb):
        return False
    if not attrs.resource_request:
        return non_resource_url_matches(rule, attrs.path)
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return (
        api_group_matches(rule, attrs.group)
        and resource_matches(rule, combined, attrs.subresource)
        and resource_name_matches(rule, attrs.name)
    )


def applies_to(user: UserInfo, subject: Obj, binding_namespace: str) -> bool:
    """``appliesToUser``: whether a binding's subject is this user."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == service_account_user(namespace, str(name))
    return False


def describe_subject(subject: Obj, binding_namespace: str) -> str:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


def _first_subject(user: UserInfo, binding: Obj, namespace: str) -> Obj | None:
    for s in _list(binding.get("subjects")):
        if isinstance(s, dict) and applies_to(user, s, namespace):
            return s
    return None


def _rules_for(user: UserInfo, namespace: str, policy: Policy) -> Iterator[tuple[str, list[Any] | None, str]]:
    """``VisitRulesFor``: (where the rules come from, the rules or None, the error if the role is
    missing), ClusterRoleBindings first, then the RoleBindings of ``namespace``."""
    bindings = [(b, "") for b in policy.cluster_role_bindings]
    if namespace:
        bindings += [(b, namespace) for b in policy.role_bindings if b["metadata"].get("namespace") == namespace]
    for b, where in bindings:
        subject = _first_subject(user, b, where)
        if subject is None:
            continue
        ref = b.get("roleRef") or {}
        name, role_name = b["metadata"]["name"], str(ref.get("name"))
        binding = f'RoleBinding "{name}/{where}"' if where else f'ClusterRoleBinding "{name}"'
        source = f'{binding} of {ref.get("kind")} "{ref.get("name")}" to {describe_subject(subject, where)}'
        if ref.get("kind") == "ClusterRole":
            role, missing = policy.cluster_roles.get(role_name), "clusterrole"
        elif where:
            role, missing = policy.roles.get((where, role_name)), "role"
        else:  # a ClusterRoleBinding names only ClusterRoles
            role, missing = None, "clusterrole"
        if role is None:
            yield source, None, f'{missing}.rbac.authorization.k8s.io "{ref.get("name")}" not found'
        else:
            yield source, _list(role.get("rules")), ""


def authorize(user: UserInfo, attrs: Attributes, policy: Policy) -> Decision:
    """Whether ``user`` may do ``attrs``, and why (the real reason text)."""
    if MASTERS in user.groups:
        return Decision(True)
    errors: list[str] = []
    for source, rules, error in _rules_for(user, attrs.namespace, policy):
        if rules is None:
            errors.append(error)
            continue
        if any(rule_allows(attrs, r) for r in rules):
            return Decision(True, f"RBAC: allowed by {source}")
    if not errors:
        return Decision(False)
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return Decision(False, f"RBAC: {joined}")


def rules_for(user: UserInfo, namespace: str, policy: Policy) -> tuple[list[Obj], list[Obj], list[str]]:
    """``RulesFor`` (a SelfSubjectRulesReview, ``kubectl auth can-i --list``): the resource rules and
    the non-resource rules that hold for ``user`` in ``namespace``, and the roles not found."""
    if MASTERS in user.groups:
        return (
            [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            [],
        )
    resource: list[Obj] = []
    non_resource: list[Obj] = []
    errors: list[str] = []
    for _, rules, error in _rules_for(user, namespace, policy):
        if rules is None:
            errors.append(error)
            continue
        for r in rules:
            if not isinstance(r, dict):
                continue
            if r.get("nonResourceURLs"):
                non_resource.append({"verbs": r.get("verbs") or [], "nonResourceURLs": r["nonResourceURLs"]})
            else:
                keep = ("verbs", "apiGroups", "resources", "resourceNames")
                resource.append({k: r[k] for k in keep if r.get(k) or k == "verbs"})
    return resource, non_resource, errors


def forbidden_message(user: UserInfo, attrs: Attributes) -> str:
    """``forbiddenMessage``: what a 403 says the user cannot do."""
    if not attrs.resource_request:
        return f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return f'User "{user.name}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}" {where}'


def forbidden_status(user: UserInfo, attrs: Attributes, reason: str = "") -> Obj:
    """The 403 Status the real server answers (``responsewriters.Forbidden`` with ``NewForbidden``)."""
    text = forbidden_message(user, attrs)
    if reason:
        text = f"{text}: {reason}"
    if not attrs.resource_request:
        message, details = f"forbidden: {text}", {}
    else:
        qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
        message = (
            f'{qualified} "{attrs.name}" is forbidden: {text}' if attrs.name else f"{qualified} is forbidden: {text}"
        )
        details = {"name": attrs.name, "group": attrs.group, "kind": attrs.resource}
        details = {k: v for k, v in details.items() if v}
    out: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }
    return out


# -- the bootstrap policy ------------------------------------------------------------------------

_BOOTSTRAP_META = {
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
}
_DISCOVERY_URLS = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    meta = {"name": name, **_BOOTSTRAP_META}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules}


def _cluster_binding(name: str, *groups: str) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, **_BOOTSTRAP_META},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_policy() -> list[Obj]:
    """The real server's default roles the lab needs (``bootstrappolicy``): cluster-admin for
    system:masters, and what every authenticated user may do: discovery (``/api``, ``/apis``,
    ``/openapi``...), the health and version paths, and asking about itself
    (SelfSubjectAccessReview, what ``kubectl auth can-i`` sends)."""
    return [
        _cluster_role(
            "cluster-admin",
            [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}],
        ),
        _cluster_binding("cluster-admin", MASTERS),
        _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
        _cluster_binding("system:discovery", "system:authenticated"),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ],
        ),
        _cluster_binding("system:basic-user", "system:authenticated"),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}]),
        _cluster_binding("system:public-info-viewer", "system:authenticated", "system:unauthenticated"),
    ]
