"""Who a request is, and whether it may: authentication and authorization as the real API server
chains them, and the access reviews (SubjectAccessReview, SelfSubjectAccessReview).

Authentication (``authenticate``):

- the static token (``ApiServer(token=...)``, the lab kubeconfig's) is user ``lab-admin`` in the
  groups ``system:masters`` and ``system:authenticated``;
- a ServiceAccount token this server minted (``tokens.py``), still valid and for the API's
  audience (``tokens.API_AUDIENCE``), is ``system:serviceaccount:<ns>:<sa>`` in the groups
  ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``;
- anything else is 401. A server made without a static token authenticates nothing else: a
  request with no token, or with one this server did not sign, is ``lab-admin`` (as before RBAC);
  one it signed that is expired, for another audience or bound to a deleted pod is still 401.

Authorization: ``system:masters`` may do everything; anyone else what RBAC grants (``rbac.py``),
else 403 Forbidden with the real message. ``request_attributes`` turns a request into what RBAC
judges (the verb, namespace, group, resource, subresource and name, or a non-resource path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ApiError
from .fielderrors import GoRepr, InvalidError, invalid
from .rbac import MASTERS, Attributes, Decision, Policy, UserInfo, authorize, forbidden_status, rules_for

Obj = dict[str, Any]
ADMIN = UserInfo("lab-admin", (MASTERS, "system:authenticated"))
AUTHORIZATION = "authorization.k8s.io"
REVIEW_KINDS = {
    "subjectaccessreviews": "SubjectAccessReview",
    "selfsubjectaccessreviews": "SelfSubjectAccessReview",
    "selfsubjectrulesreviews": "SelfSubjectRulesReview",
}


def admin_user_info() -> Obj:
    """The static token's user, as TokenReview answers it."""
    return {"username": ADMIN.name, "groups": list(ADMIN.groups)}


def user_from_review(user: Obj) -> UserInfo:
    return UserInfo(
        str(user.get("username") or ""),
        tuple(user.get("groups") or ()),
        str(user.get("uid") or ""),
        dict(user.get("extra") or {}),
    )


def bearer(header: str) -> str | None:
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def forbidden(user: UserInfo, attrs: Attributes, decision: Decision) -> ApiError:
    status = forbidden_status(user, attrs, "" if decision.reason.startswith("RBAC: allowed") else decision.reason)
    return ApiError(403, "Forbidden", status["message"], status["details"] or None)


def check(user: UserInfo, attrs: Attributes, policy: Callable[[], Policy]) -> None:
    """Raise 403 unless ``user`` may do ``attrs``; ``policy`` is read only for a user outside
    ``system:masters`` (the privileged group needs no look at the RBAC objects)."""
    if MASTERS in user.groups:
        return
    decision = authorize(user, attrs, policy())
    if not decision.allowed:
        raise forbidden(user, attrs, decision)


def _spec_attributes(spec: Obj) -> Attributes | None:
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(ra, dict):
        return Attributes(
            verb=str(ra.get("verb") or ""),
            namespace=str(ra.get("namespace") or ""),
            group=str(ra.get("group") or ""),
            resource=str(ra.get("resource") or ""),
            subresource=str(ra.get("subresource") or ""),
            name=str(ra.get("name") or ""),
        )
    if isinstance(nra, dict):
        return Attributes(verb=str(nra.get("verb") or ""), path=str(nra.get("path") or ""), resource_request=False)
    return None


def _go_non_resource(nra: Any) -> GoRepr:
    if not isinstance(nra, dict):
        return GoRepr("null")
    return GoRepr(
        f'&authorization.NonResourceAttributes{{Path:"{nra.get("path") or ""}", Verb:"{nra.get("verb") or ""}"}}'
    )


def access_review(plural: str, body: Any, caller: UserInfo, policy: Policy) -> Obj:
    """A SubjectAccessReview (about ``spec.user``/``groups``) or a SelfSubjectAccessReview (about
    the caller) answered: ``status.allowed``, ``denied`` (always false: RBAC has no deny) and
    ``reason``. 422 as the real validation when the spec names no attributes, or both, or (SAR)
    no user or group."""
    kind = REVIEW_KINDS[plural]
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", f"the body must be a {kind} object")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    if kind == "SelfSubjectRulesReview":
        return rules_review(spec, caller, policy)
    errors = []
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if ra is not None and nra is not None:
        errors.append(
            invalid(
                "spec.nonResourceAttributes",
                _go_non_resource(nra),
                "cannot be specified in combination with resourceAttributes",
            )
        )
    if ra is None and nra is None:
        errors.append(
            invalid(
                "spec.resourceAttributes",
                GoRepr("null"),
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        )
    if kind == "SubjectAccessReview":
        if not spec.get("user") and not spec.get("groups"):
            errors.append(
                invalid("spec.user", spec.get("user") or "", "at least one of user or group must be specified")
            )
        user = UserInfo(
            str(spec.get("user") or ""),
            tuple(str(g) for g in spec.get("groups") or ()),
            str(spec.get("uid") or ""),
            dict(spec.get("extra") or {}),
        )
    else:
        user = caller
    attrs = _spec_attributes(spec)
    if errors or attrs is None:
        raise InvalidError(kind, "", errors, group=AUTHORIZATION)
    decision = authorize(user, attrs, policy)
    status: Obj = {"allowed": decision.allowed, "denied": False}
    if decision.reason:
        status["reason"] = decision.reason
    if kind == "SelfSubjectAccessReview":
        spec = {k: v for k, v in spec.items() if k in ("resourceAttributes", "nonResourceAttributes")}
    return {
        "kind": kind,
        "apiVersion": f"{AUTHORIZATION}/v1",
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }


def rules_review(spec: Obj, caller: UserInfo, policy: Policy) -> Obj:
    """A SelfSubjectRulesReview (``kubectl auth can-i --list``): what the caller may do in
    ``spec.namespace``."""
    namespace = str(spec.get("namespace") or "")
    resource, non_resource, errors = rules_for(caller, namespace, policy)
    status: Obj = {"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": bool(errors)}
    if errors:
        status["evaluationError"] = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": f"{AUTHORIZATION}/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"namespace": namespace} if namespace else {},
        "status": status,
    }
