"""Which node an agent's ServiceAccount token proves, asked of the Kubernetes TokenReview API.

Each agent sends its projected token (an audience of our own, short-lived, rotated by the
kubelet). The API server checks the signature, the expiry, the audience and that the pod it is
bound to still exists; the brain then checks that the token is of an expected service account
and binds it to a node: the ``authentication.kubernetes.io/node-name`` extra (API servers since
1.30), else the bound pod's ``spec.nodeName`` (read from the API, matching the pod's uid).

Results are cached briefly (never past the token's own ``exp``), so a reconnect storm costs
one review per token, and concurrent reviews of one token share a single call. The API being
unreachable fails closed: the agent is refused with UNAVAILABLE and retries; its last rules
stay in force on its node.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import grpc
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.brain.reviewcache import ReviewCache

log = logging.getLogger(__name__)

# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("authentication.k8s.io", "tokenreviews", ("create",)),
    ("", "pods", ("get",)),
)

DEFAULT_AUDIENCE = "stockade"
DEFAULT_SERVICE_ACCOUNT = "stockade-system:stockade-agent"
EXTRA = "authentication.kubernetes.io/"
MAX_TOKEN = 16 * 1024  # projected tokens are ~1 KiB; anything far larger is not one


@dataclass(frozen=True)
class TokenIdentity:
    node: str
    namespace: str
    service_account: str
    pod: str


class TokenRefused(Exception):
    """``code`` is the gRPC status the caller gets; the message says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


CANNOT_VERIFY = "cannot verify the token"
T = TypeVar("T")


async def api_answer(call: Callable[[], Awaitable[T]], what: str, plural: str, cannot: str) -> T:
    """``call()``'s answer from the API server; its failure as TokenRefused UNAVAILABLE, the
    message opening with ``cannot`` (the API's trouble, not the caller's verdict: `is_verdict`)."""
    try:
        return await call()
    except ApiException as e:
        hint = f"; grant the brain `create` on {plural} (deploy/rbac.yaml)" if e.status == 403 else ""
        raise TokenRefused(
            grpc.StatusCode.UNAVAILABLE, f"{cannot}: {what} answered {e.status} {e.reason}{hint}"
        ) from None
    except (OSError, TimeoutError, aiohttp.ClientError) as e:
        raise TokenRefused(grpc.StatusCode.UNAVAILABLE, f"{cannot}: the API server is unreachable ({e})") from None


def is_verdict(e: Exception) -> bool:
    """Whether a review's failure is its verdict on the caller (kept), not the API's trouble."""
    return isinstance(e, TokenRefused) and e.code != grpc.StatusCode.UNAVAILABLE


def _unverified_exp(token: str) -> float | None:
    """The token's ``exp`` claim, read without checking it: only to bound the cache's lifetime."""
    try:
        payload = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp")
    except (IndexError, ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, (int, float)) else None


def _one(extra: dict[str, list[str]] | None, key: str) -> str | None:
    values = (extra or {}).get(EXTRA + key) or []
    return values[0] if len(values) == 1 and values[0] else None


class TokenAuthenticator:
    """``service_accounts``: the ``namespace:name`` pairs whose tokens may prove a node."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        audience: str = DEFAULT_AUDIENCE,
        service_accounts: Collection[str] = (DEFAULT_SERVICE_ACCOUNT,),
        ttl: float = 30.0,
        max_entries: int = 10_000,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth_api = k8s.AuthenticationV1Api(api)
        self.core_api = k8s.CoreV1Api(api)
        self.audience = audience
        self.usernames = {f"system:serviceaccount:{sa}": sa for sa in service_accounts}
        self._answers: ReviewCache[TokenIdentity] = ReviewCache(ttl, max_entries, clock)
        self._limit = asyncio.Semaphore(concurrency)
        self.reviews = 0  # TokenReview calls made, for tests and metrics

    async def verify(self, token: str) -> TokenIdentity:
        """The identity the token proves, or TokenRefused."""
        if not token or len(token) > MAX_TOKEN:
            raise TokenRefused(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is empty or too long to be a token")
        return await self._answers.get(
            hashlib.sha256(token.encode()).digest(),
            lambda: self._review(token),
            expires=_unverified_exp(token),
            keep=is_verdict,
        )

    async def _review(self, token: str) -> TokenIdentity:
        review = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token, audiences=[self.audience]))
        async with self._limit:
            self.reviews += 1
            answer = await api_answer(
                lambda: self.auth_api.create_token_review(review), "TokenReview", "tokenreviews", CANNOT_VERIFY
            )
        status = answer.status
        if status is None or not status.authenticated:
            why = (status.error if status is not None else None) or "not authenticated"
            raise TokenRefused(grpc.StatusCode.UNAUTHENTICATED, f"the API server refused the token: {why}")
        if self.audience not in (status.audiences or []):
            raise TokenRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the token is not for audience {self.audience!r}: mount a projected serviceAccountToken with "
                f"audience {self.audience!r}",
            )
        user = status.user
        username = (user.username if user is not None else None) or ""
        sa = self.usernames.get(username)
        if sa is None:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{username or 'this user'} may not act as a node agent (expected "
                f"{', '.join(sorted(self.usernames.values()))}: see --agent-service-account)",
            )
        namespace, _, name = sa.partition(":")
        extra = user.extra if user is not None else None
        pod = _one(extra, "pod-name")
        if pod is None:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                "the token is not bound to a pod, so it proves no node: use a projected serviceAccountToken volume",
            )
        node = _one(extra, "node-name") or await self._node_of_pod(namespace, pod, _one(extra, "pod-uid"))
        return TokenIdentity(node, namespace, name, pod)

    async def _node_of_pod(self, namespace: str, pod: str, uid: str | None) -> str:
        """For API servers older than 1.30 (no node-name extra): the bound pod's node."""
        try:
            obj = await self.core_api.read_namespaced_pod(pod, namespace)
        except ApiException as e:
            if e.status == 404:
                raise TokenRefused(
                    grpc.StatusCode.UNAUTHENTICATED, f"the token's pod {namespace}/{pod} is gone"
                ) from None
            raise TokenRefused(
                grpc.StatusCode.UNAVAILABLE, f"cannot read the token's pod {namespace}/{pod}: {e.status} {e.reason}"
            ) from None
        except (OSError, TimeoutError, aiohttp.ClientError) as e:
            raise TokenRefused(grpc.StatusCode.UNAVAILABLE, f"cannot read the token's pod: {e}") from None
        meta: Any = obj.metadata
        if uid and meta is not None and meta.uid != uid:
            raise TokenRefused(
                grpc.StatusCode.UNAUTHENTICATED, f"the token's pod {namespace}/{pod} was replaced (uid changed)"
            )
        node = obj.spec.node_name if obj.spec is not None else None
        if not node:
            raise TokenRefused(grpc.StatusCode.PERMISSION_DENIED, f"the token's pod {namespace}/{pod} is on no node")
        return str(node)
