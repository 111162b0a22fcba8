"""RBAC objects (rbac.authorization.k8s.io/v1): the v1 defaults, the checks the real server makes
(``pkg/apis/rbac/validation``: a rule needs verbs, and apiGroups and resources unless it names
non-resource URLs, which only ClusterRoles may; a binding's roleRef is rbac.authorization.k8s.io's
Role or ClusterRole, named, and may not change; subjects are Users, Groups or ServiceAccounts) and
the ``kubectl get`` columns of the real printers (NAME CREATED AT; NAME ROLE AGE USERS GROUPS
SERVICEACCOUNTS). Who may do what is rbac.py's.

Deviation: the real server also refuses a role or binding granting more than its author holds
(escalation prevention, the ``escalate`` and ``bind`` verbs); the lab does not check that."""

from __future__ import annotations

from typing import Any

from ..fielderrors import FieldError, GoRepr, InvalidError, invalid, not_supported, required
from ..validation import dns1123_subdomain, path_segment_name
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def rule_errors(rule: Any, path: str, namespaced: bool) -> list[FieldError]:
    """``ValidatePolicyRule``."""
    rule = rule if isinstance(rule, dict) else {}
    errors: list[FieldError] = []
    if not _strings(rule.get("verbs")):
        errors.append(required(f"{path}.verbs", "verbs must contain at least one value"))
    urls = _strings(rule.get("nonResourceURLs"))
    if urls:
        if namespaced:
            errors.append(
                invalid(f"{path}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs")
            )
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errors.append(
                invalid(
                    f"{path}.nonResourceURLs",
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        return errors
    if not isinstance(rule.get("apiGroups"), list) or not rule["apiGroups"]:
        errors.append(required(f"{path}.apiGroups", "resource rules must supply at least one api group"))
    if not _strings(rule.get("resources")):
        errors.append(required(f"{path}.resources", "resource rules must supply at least one resource"))
    return errors


def role_errors(obj: Obj, namespaced: bool) -> list[FieldError]:
    rules = obj.get("rules")
    out: list[FieldError] = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        out += rule_errors(rule, f"rules[{i}]", namespaced)
    return out


def subject_errors(subject: Any, path: str, namespaced: bool) -> list[FieldError]:
    """``ValidateRoleBindingSubject``."""
    s = subject if isinstance(subject, dict) else {}
    name, kind, group = s.get("name") or "", s.get("kind") or "", s.get("apiGroup") or ""
    errors: list[FieldError] = []
    if not name:
        errors.append(required(f"{path}.name"))
    if kind == "ServiceAccount":
        if name:
            errors += [invalid(f"{path}.name", name, m) for m in dns1123_subdomain(name)]
        if group:
            errors.append(not_supported(f"{path}.apiGroup", group, [""]))
        if not namespaced and not s.get("namespace"):
            errors.append(required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if group != GROUP:
            errors.append(not_supported(f"{path}.apiGroup", group, [GROUP]))
    else:
        errors.append(not_supported(f"{path}.kind", kind, list(SUBJECT_KINDS)))
    return errors


def binding_errors(obj: Obj, namespaced: bool) -> list[FieldError]:
    """``ValidateRoleBinding`` / ``ValidateClusterRoleBinding``."""
    raw = obj.get("roleRef")
    ref: Obj = raw if isinstance(raw, dict) else {}
    errors: list[FieldError] = []
    if ref.get("apiGroup") != GROUP:
        errors.append(not_supported("roleRef.apiGroup", ref.get("apiGroup") or "", [GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if ref.get("kind") not in kinds:
        errors.append(not_supported("roleRef.kind", ref.get("kind") or "", kinds))
    name = ref.get("name") or ""
    if not name:
        errors.append(required("roleRef.name"))
    else:
        errors += [invalid("roleRef.name", name, m) for m in path_segment_name(name)]
    subjects = obj.get("subjects")
    for i, subject in enumerate(subjects if isinstance(subjects, list) else []):
        errors += subject_errors(subject, f"subjects[{i}]", namespaced)
    return errors


def default_binding(obj: Obj) -> None:
    """The v1 defaults: roleRef.apiGroup, and a User's or Group's apiGroup, are rbac.authorization.k8s.io."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for s in obj.get("subjects") or []:
        if isinstance(s, dict) and not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = GROUP


def go_role_ref(ref: Any) -> GoRepr:
    """A roleRef as Go prints it in a field error (``rbac.RoleRef{APIGroup:"...", Kind:"...", Name:"..."}``)."""
    ref = ref if isinstance(ref, dict) else {}
    parts = [f'{k}:"{ref.get(f) or ""}"' for k, f in (("APIGroup", "apiGroup"), ("Kind", "kind"), ("Name", "name"))]
    return GoRepr("rbac.RoleRef{" + ", ".join(parts) + "}")


def subjects_strings(obj: Obj) -> tuple[str, str, str]:
    """``rbac.SubjectsStrings``: users, groups and service accounts (namespace/name), comma-joined."""
    users, groups, sas = [], [], []
    for s in obj.get("subjects") or []:
        if not isinstance(s, dict):
            continue
        if s.get("kind") == "User":
            users.append(s.get("name") or "")
        elif s.get("kind") == "Group":
            groups.append(s.get("name") or "")
        elif s.get("kind") == "ServiceAccount":
            sas.append(f"{s.get('namespace') or ''}/{s.get('name') or ''}")
    return ", ".join(users), ", ".join(groups), ", ".join(sas)


class _RBACBehaviour(KindBehaviour):
    kind = ""
    namespaced = False

    def errors(self, obj: Obj) -> list[FieldError]:
        return []

    def _check(self, obj: Obj, extra: list[FieldError] | None = None) -> None:
        errors = self.errors(obj) + (extra or [])
        if errors:
            raise InvalidError(self.kind, obj["metadata"]["name"], errors, group=GROUP)


class _RoleBehaviour(_RBACBehaviour):
    def errors(self, obj: Obj) -> list[FieldError]:
        return role_errors(obj, self.namespaced)

    def on_create(self, obj: Obj) -> None:
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)

    def columns(self) -> list[Column]:
        return [NAME_COLUMN, ("Created At", "date", "CreationTimestamp of the object.", 0)]

    def cells(self, obj: Obj) -> list[Cell]:
        meta = obj["metadata"]
        return [meta["name"], meta.get("creationTimestamp")]


class _BindingBehaviour(_RBACBehaviour):
    def errors(self, obj: Obj) -> list[FieldError]:
        return binding_errors(obj, self.namespaced)

    def on_create(self, obj: Obj) -> None:
        default_binding(obj)
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        default_binding(obj)
        changed = obj.get("roleRef") != old.get("roleRef")
        self._check(
            obj, [invalid("roleRef", go_role_ref(obj.get("roleRef")), "cannot change roleRef")] if changed else []
        )

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole.", 0),
            AGE_COLUMN,
            ("Users", "string", "Users in the roleBinding", 1),
            ("Groups", "string", "Groups in the roleBinding", 1),
            ("ServiceAccounts", "string", "ServiceAccounts in the roleBinding", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        ref = obj.get("roleRef") or {}
        users, groups, sas = subjects_strings(obj)
        return [obj["metadata"]["name"], f"{ref.get('kind')}/{ref.get('name')}", age(obj), users, groups, sas]


class ClusterRoleBehaviour(_RoleBehaviour):
    kind, namespaced = "ClusterRole", False


class RoleBehaviour(_RoleBehaviour):
    kind, namespaced = "Role", True


class ClusterRoleBindingBehaviour(_BindingBehaviour):
    kind, namespaced = "ClusterRoleBinding", False


class RoleBindingBehaviour(_BindingBehaviour):
    kind, namespaced = "RoleBinding", True
