"""The lab API server's RBAC evaluator (stockade.lab.apiserver.rbac): pure functions over stored
RBAC objects, with the real authorizer's semantics and reason texts."""

from __future__ import annotations

from typing import Any

from stockade.lab.apiserver.rbac import (
    Attributes,
    Policy,
    UserInfo,
    authorize,
    bootstrap_policy,
    forbidden_status,
    rule_allows,
)

GROUP = "rbac.authorization.k8s.io"
SA = UserInfo(
    "system:serviceaccount:ops:cli", ("system:serviceaccounts", "system:serviceaccounts:ops", "system:authenticated")
)
ALICE = UserInfo("alice", ("devs", "system:authenticated"))
GET_BRAINS = Attributes("get", group="stockade.io", resource="brains")


def role(kind: str, name: str, *rules: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "rules": list(rules)}


def binding(kind: str, name: str, ref_kind: str, ref: str, *subjects: dict[str, Any], namespace: str = "") -> Any:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": GROUP, "kind": ref_kind, "name": ref},
        "subjects": list(subjects),
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": GROUP}


def group(name: str) -> dict[str, str]:
    return {"kind": "Group", "name": name, "apiGroup": GROUP}


def sa(name: str, namespace: str | None = None) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}


def policy(*objs: dict[str, Any]) -> Policy:
    by: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    storage = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}
    storage |= {"Role": "roles", "RoleBinding": "rolebindings"}
    for o in objs:
        by.setdefault(storage[o["kind"]], {})[(o["metadata"].get("namespace", ""), o["metadata"]["name"])] = o
    return Policy.from_objects(by)


READER = role(
    "ClusterRole", "stockade-viewer", {"apiGroups": ["stockade.io"], "resources": ["brains"], "verbs": ["get"]}
)


def test_cluster_role_binding_allows_with_the_real_reason() -> None:
    p = policy(READER, binding("ClusterRoleBinding", "ops-view", "ClusterRole", "stockade-viewer", sa("cli", "ops")))
    d = authorize(SA, GET_BRAINS, p)
    assert d.allowed
    assert (
        d.reason
        == 'RBAC: allowed by ClusterRoleBinding "ops-view" of ClusterRole "stockade-viewer" to ServiceAccount "cli/ops"'
    )
    assert not authorize(SA, Attributes("update", group="stockade.io", resource="brains"), p).allowed
    assert not authorize(ALICE, GET_BRAINS, p).allowed  # not a subject
    assert authorize(SA, Attributes("get", "any-ns", "stockade.io", "brains"), p).allowed  # everywhere


def test_subjects_user_group_and_service_account() -> None:
    p = policy(READER, binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", user("alice")))
    assert authorize(ALICE, GET_BRAINS, p).reason.endswith('to User "alice"')
    p = policy(READER, binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", group("devs")))
    assert authorize(ALICE, GET_BRAINS, p).reason.endswith('to Group "devs"')
    assert not authorize(SA, GET_BRAINS, p).allowed
    p = policy(
        READER,
        binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", group("system:serviceaccounts:ops")),
    )
    assert authorize(SA, GET_BRAINS, p).allowed
    # a ServiceAccount subject with no namespace matches nobody in a ClusterRoleBinding
    p = policy(READER, binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", sa("cli")))
    assert not authorize(SA, GET_BRAINS, p).allowed
    # the user named like a ServiceAccount is the ServiceAccount
    assert authorize(
        UserInfo("system:serviceaccount:ops:cli"),
        GET_BRAINS,
        policy(READER, binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", sa("cli", "ops"))),
    ).allowed


def test_role_bindings_apply_only_in_their_namespace() -> None:
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    p = policy(
        role("Role", "pod-reader", pods, namespace="ops"),
        role("ClusterRole", "view", pods),
        binding("RoleBinding", "read", "Role", "pod-reader", sa("cli"), namespace="ops"),  # the binding's namespace
        binding("RoleBinding", "view", "ClusterRole", "view", user("alice"), namespace="web"),
    )
    d = authorize(SA, Attributes("list", "ops", "", "pods"), p)
    assert (
        d.allowed
        and d.reason == 'RBAC: allowed by RoleBinding "read/ops" of Role "pod-reader" to ServiceAccount "cli/ops"'
    )
    assert not authorize(SA, Attributes("list", "web", "", "pods"), p).allowed
    assert not authorize(SA, Attributes("list", "", "", "pods"), p).allowed  # all namespaces: cluster scope
    assert not authorize(SA, Attributes("delete", "ops", "", "pods", name="a"), p).allowed
    assert authorize(ALICE, Attributes("watch", "web", "", "pods"), p).allowed  # a ClusterRole, in web only
    assert not authorize(ALICE, Attributes("watch", "ops", "", "pods"), p).allowed
    # a Role of another namespace is not found from this one
    p = policy(
        role("Role", "pod-reader", pods, namespace="ops"),
        binding("RoleBinding", "x", "Role", "pod-reader", user("alice"), namespace="web"),
    )
    d = authorize(ALICE, Attributes("get", "web", "", "pods", name="a"), p)
    assert not d.allowed and d.reason == 'RBAC: role.rbac.authorization.k8s.io "pod-reader" not found'


def test_missing_cluster_role_is_the_reason_of_a_denial() -> None:
    p = policy(binding("ClusterRoleBinding", "b", "ClusterRole", "gone", user("alice")))
    d = authorize(ALICE, GET_BRAINS, p)
    assert not d.allowed and d.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
    assert authorize(ALICE, GET_BRAINS, policy()).reason == ""


def test_rule_wildcards_subresources_and_names() -> None:
    def allows(rule: dict[str, Any], attrs: Attributes) -> bool:
        return rule_allows(attrs, rule)

    star = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    assert allows(star, Attributes("deletecollection", "x", "apps", "deployments"))
    assert allows(star, Attributes("get", "x", "", "pods", "status", "a"))
    status = {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update"]}
    assert allows(status, Attributes("update", "x", "", "pods", "status", "a"))
    assert not allows(status, Attributes("update", "x", "", "pods", "", "a"))
    any_status = {"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}
    assert allows(any_status, Attributes("patch", "x", "", "services", "status", "s"))
    assert not allows(any_status, Attributes("patch", "x", "", "services", "", "s"))
    token = {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}
    assert allows(token, Attributes("create", "x", "", "serviceaccounts", "token", "sa"))
    named = {"apiGroups": ["stockade.io"], "resources": ["brains"], "verbs": ["get"], "resourceNames": ["main"]}
    assert allows(named, Attributes("get", group="stockade.io", resource="brains", name="main"))
    assert not allows(named, Attributes("get", group="stockade.io", resource="brains", name="other"))
    assert not allows(named, Attributes("get", group="stockade.io", resource="brains"))
    assert not allows(READER["rules"][0], Attributes("get", group="", resource="brains"))  # the group matters
    urls = {"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}
    assert allows(urls, Attributes("get", path="/healthz", resource_request=False))
    assert allows(urls, Attributes("get", path="/apis/stockade.io/v1", resource_request=False))
    assert not allows(urls, Attributes("get", path="/api", resource_request=False))
    assert not allows(urls, Attributes("post", path="/healthz", resource_request=False))
    assert allows({"nonResourceURLs": ["*"], "verbs": ["*"]}, Attributes("delete", path="/x", resource_request=False))
    assert not allows(urls, Attributes("get", group="", resource="healthz"))  # a URL rule grants no resource


def test_masters_and_the_bootstrap_policy() -> None:
    masters = UserInfo("lab-admin", ("system:masters", "system:authenticated"))
    assert authorize(masters, Attributes("delete", "x", "", "pods", name="a"), policy()).allowed
    p = Policy.from_objects(
        {
            "clusterroles": {("", o["metadata"]["name"]): o for o in bootstrap_policy() if o["kind"] == "ClusterRole"},
            "clusterrolebindings": {
                ("", o["metadata"]["name"]): o for o in bootstrap_policy() if o["kind"] != "ClusterRole"
            },
        }
    )
    assert authorize(
        SA, Attributes("get", path="/apis/rbac.authorization.k8s.io/v1", resource_request=False), p
    ).allowed
    assert authorize(
        SA, Attributes("create", group="authorization.k8s.io", resource="selfsubjectaccessreviews"), p
    ).allowed
    assert not authorize(
        SA, Attributes("create", group="authorization.k8s.io", resource="subjectaccessreviews"), p
    ).allowed
    assert not authorize(SA, Attributes("list", "ops", "", "pods"), p).allowed
    d = authorize(UserInfo("root", ("system:masters",)), GET_BRAINS, p)
    assert d.allowed and d.reason == ""  # the privileged group, before RBAC


def test_forbidden_status_as_the_real_server() -> None:
    st = forbidden_status(SA, Attributes("list", "ops", "", "pods"))
    assert st["code"] == 403 and st["reason"] == "Forbidden" and st["details"] == {"kind": "pods"}
    assert st["message"] == (
        'pods is forbidden: User "system:serviceaccount:ops:cli" cannot list resource "pods" in API group "" '
        'in the namespace "ops"'
    )
    st = forbidden_status(SA, Attributes("get", group="stockade.io", resource="brains", name="main"))
    assert st["message"] == (
        'brains.stockade.io "main" is forbidden: User "system:serviceaccount:ops:cli" cannot get resource "brains" '
        'in API group "stockade.io" at the cluster scope'
    )
    assert st["details"] == {"name": "main", "group": "stockade.io", "kind": "brains"}
    st = forbidden_status(
        ALICE,
        Attributes("update", "x", "", "pods", "status", "a"),
        'RBAC: role.rbac.authorization.k8s.io "r" not found',
    )
    assert 'cannot update resource "pods/status"' in st["message"] and st["message"].endswith('"r" not found')
    st = forbidden_status(ALICE, Attributes("get", path="/metrics", resource_request=False))
    assert st["message"] == 'forbidden: User "alice" cannot get path "/metrics"'


def test_rules_for_lists_what_holds_in_a_namespace() -> None:
    from stockade.lab.apiserver.rbac import rules_for

    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    p = policy(
        READER,
        role("Role", "pods", pods, namespace="ops"),
        binding("ClusterRoleBinding", "b", "ClusterRole", "stockade-viewer", sa("cli", "ops")),
        binding("RoleBinding", "r", "Role", "pods", sa("cli"), namespace="ops"),
        binding("RoleBinding", "gone", "Role", "missing", sa("cli"), namespace="ops"),
    )
    resource, non_resource, errors = rules_for(SA, "ops", p)
    assert resource == [READER["rules"][0], pods] and non_resource == []
    assert errors == ['role.rbac.authorization.k8s.io "missing" not found']
    assert rules_for(SA, "web", p)[0] == [READER["rules"][0]]
