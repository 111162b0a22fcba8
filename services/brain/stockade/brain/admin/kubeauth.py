"""Admin callers who bring a Kubernetes token, authorized by Kubernetes RBAC.

A bearer token that is not in the brain's ``--admin-tokens-file`` goes to the API server's
TokenReview for the API server's own audience (the token kubectl itself uses: a kubeconfig's,
or ``kubectl create token``'s; an agent's token, of audience ``stockade``, is refused). Each
call is then authorized by a SubjectAccessReview of that user: the calls that read need
``get`` on ``brains.stockade.io``, the calls that change something ``update`` (cluster-scoped;
the ClusterRoles ``stockade-viewer`` and ``stockade-admin`` in deploy/rbac.yaml grant them).
Answers are kept briefly (`ReviewCache`); the API unreachable fails closed with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from kubernetes_asyncio import client as k8s

from stockade.brain.reviewcache import ReviewCache
from stockade.brain.tokenauth import MAX_TOKEN, TokenRefused, api_answer, is_verdict

GROUP, RESOURCE = "stockade.io", "brains"
VERBS = {"read": "get", "admin": "update"}  # the admin API's roles as RBAC verbs
CLUSTER_ROLES = {"read": "stockade-viewer", "admin": "stockade-admin"}
# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("authentication.k8s.io", "tokenreviews", ("create",)),
    ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
)
CANNOT_CHECK = "the brain cannot check the caller"  # the CLI tells it from "cannot reach the brain"


@dataclass(frozen=True)
class KubeUser:
    name: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class KubeAuthorizer:
    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        ttl: float = 10.0,
        max_entries: int = 10_000,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth_api = k8s.AuthenticationV1Api(api)
        self.authz_api = k8s.AuthorizationV1Api(api)
        self._users: ReviewCache[KubeUser] = ReviewCache(ttl, max_entries, clock)
        self._grants: ReviewCache[bool] = ReviewCache(ttl, max_entries, clock)
        self._limit = asyncio.Semaphore(concurrency)
        self.token_reviews = 0  # calls made, for tests
        self.access_reviews = 0

    async def user(self, token: str) -> KubeUser:
        """Who the API server says the token is; TokenRefused (UNAUTHENTICATED, or UNAVAILABLE)."""
        if not token or len(token) > MAX_TOKEN:
            raise TokenRefused(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is empty or too long to be a token")
        return await self._users.get(
            hashlib.sha256(token.encode()).digest(), lambda: self._review(token), keep=is_verdict
        )

    async def allowed(self, user: KubeUser, role: str) -> bool:
        """Whether RBAC lets ``user`` make a call of ``role`` ("read" or "admin")."""
        key = hashlib.sha256(repr((user, role)).encode()).digest()
        return await self._grants.get(key, lambda: self._access(user, role), keep=is_verdict)

    async def _review(self, token: str) -> KubeUser:
        self.token_reviews += 1
        review = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
        async with self._limit:
            answer = await api_answer(
                lambda: self.auth_api.create_token_review(review), "TokenReview", "tokenreviews", CANNOT_CHECK
            )
        status = answer.status
        if status is None or not status.authenticated or status.user is None or not status.user.username:
            why = (status.error if status is not None else None) or "not authenticated"
            raise TokenRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this token is not in the brain's --admin-tokens-file, and the Kubernetes API refused it: {why}",
            )
        u = status.user
        extra = tuple(sorted((k, tuple(v or ())) for k, v in (u.extra or {}).items()))
        return KubeUser(u.username, u.uid or "", tuple(u.groups or ()), extra)

    async def _access(self, user: KubeUser, role: str) -> bool:
        self.access_reviews += 1
        review = k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=user.name,
                uid=user.uid or None,
                groups=list(user.groups),
                extra={k: list(v) for k, v in user.extra} or None,
                resource_attributes=k8s.V1ResourceAttributes(group=GROUP, resource=RESOURCE, verb=VERBS[role]),
            )
        )
        async with self._limit:
            answer = await api_answer(
                lambda: self.authz_api.create_subject_access_review(review),
                "SubjectAccessReview",
                "subjectaccessreviews",
                CANNOT_CHECK,
            )
        return bool(answer.status is not None and answer.status.allowed and not answer.status.denied)


def denied_message(user: str, role: str) -> str:
    return (
        f"{user} may not {VERBS[role]} {RESOURCE}.{GROUP} (Kubernetes RBAC): this call needs the {role} role; "
        f"bind the ClusterRole {CLUSTER_ROLES[role]} to it (deploy/rbac.yaml)"
    )
