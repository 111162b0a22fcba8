"""ServiceAccount tokens as the real API server issues and reviews them.

``TokenRequest`` (``POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token``) mints a
JWT-shaped token with the claims of a projected, pod-bound token: ``iss``, ``sub``
(``system:serviceaccount:<ns>:<sa>``), ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and
``kubernetes.io`` with the namespace, the service account, and for a token bound to a Pod the
pod and its node (the real server adds the node since 1.30). ``TokenReview``
(``POST /apis/authentication.k8s.io/v1/tokenreviews``) answers as the real one does: the
signature, the time window and the audiences are checked, and a pod-bound token is valid only
while that pod (same uid) exists; the user carries the pod and node extras.

The lab signs with HMAC-SHA256 under a key of its own (the real server signs with RS256 and
publishes its keys; nobody but this server verifies these tokens). ServiceAccounts are not
stored in the lab, so any name is accepted: the brain's check of the service account is what is
tested.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .store import ApiError, Obj, Store

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = ISSUER  # what a token is for when a request names no audience
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600  # as the real API server: shorter requests are refused
EXTRA = "authentication.kubernetes.io/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenIssuer:
    """Mints and reviews tokens against ``store`` (pods and nodes are looked up there)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self.reviews = 0  # TokenReviews answered, for tests
        # False: mint and review as API servers before 1.30 do (no node claim, no node extras)
        self.node_info = True
        # Static tokens (the lab kubeconfig's) → their user, as a token file: reviewed too (auth.py)
        self.static: dict[str, Obj] = {}

    # -- minting --------------------------------------------------------------------------------

    def issue(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION,
        pod: str | None = None,
    ) -> tuple[str, float]:
        """A signed token and its expiry time. ``expiration_seconds`` may be negative here (an
        already expired token, for tests); the HTTP TokenRequest enforces the real minimum."""
        now = int(self.clock())
        k8s: Obj = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, service_account))},
        }
        if pod is not None:
            p = self.store.get("pods", namespace, pod)
            k8s["pod"] = {"name": pod, "uid": p["metadata"]["uid"]}
            node = (p.get("spec") or {}).get("nodeName")
            if node and self.node_info:
                n = self.store.objects["nodes"].get(("", node))
                k8s["node"] = {"name": node, "uid": n["metadata"]["uid"] if n else ""}
        exp = now + expiration_seconds
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": list(audiences) or [API_AUDIENCE],
            "exp": exp,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s,
        }
        head = _b64(json.dumps({"alg": "HS256", "kid": "stockade-lab", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{head}.{body}.{self._sign(f'{head}.{body}')}", float(exp)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def token_request(self, namespace: str, service_account: str, body: Any) -> Obj:
        """The TokenRequest subresource: the request with ``status.token`` filled in."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a TokenRequest object")
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds") or DEFAULT_EXPIRATION
        if not isinstance(seconds, int) or seconds < MIN_EXPIRATION:
            raise ApiError(
                422, "Invalid", f"spec.expirationSeconds: may not specify a duration less than {MIN_EXPIRATION} seconds"
            )
        audiences = spec.get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise ApiError(422, "Invalid", "spec.audiences: a list of strings")
        ref = spec.get("boundObjectRef") or None
        pod = None
        if ref is not None:
            if ref.get("kind") != "Pod":
                raise ApiError(422, "Invalid", "spec.boundObjectRef.kind: the lab binds tokens to Pods only")
            pod = str(ref.get("name") or "")
            current = self.store.get("pods", namespace, pod)
            if ref.get("uid") and ref["uid"] != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"the uid in spec.boundObjectRef is not pod {pod}'s")
        token, exp = self.issue(namespace, service_account, audiences, seconds, pod)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": service_account, "namespace": namespace, "creationTimestamp": _rfc3339(self.clock())},
            "spec": {**spec, "audiences": audiences or [API_AUDIENCE], "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": _rfc3339(exp)},
        }

    # -- reviewing ------------------------------------------------------------------------------

    def token_review(self, body: Any) -> Obj:
        """A TokenReview answered: ``status.authenticated``, ``user`` and ``audiences``, or ``error``."""
        if not isinstance(body, dict) or not isinstance((body.get("spec") or {}).get("token"), str):
            raise ApiError(400, "BadRequest", "spec.token: required")
        self.reviews += 1
        spec = body["spec"]
        wanted = spec.get("audiences") or [API_AUDIENCE]
        try:
            static = self.static.get(spec["token"])
            status = self._review(spec["token"], wanted) if static is None else self._review_static(static, wanted)
        except ValueError as e:
            status = {"user": {}, "error": f"[invalid bearer token, {e}]"}
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    @staticmethod
    def _review_static(user: Obj, wanted: Sequence[str]) -> Obj:
        """A static token: valid for the API server's audience only (as the real server wraps an
        audience-agnostic authenticator: the audiences answered are the API's among those asked)."""
        if API_AUDIENCE not in wanted:
            raise ValueError("token audiences is invalid for the target audiences")
        return {"authenticated": True, "user": user, "audiences": [API_AUDIENCE]}

    def signed(self, token: str) -> bool:
        """Whether this server signed ``token`` (valid or not)."""
        parts = token.split(".")
        return len(parts) == 3 and hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}"), parts[2])

    def api_user(self, token: str) -> Obj | None:
        """The user a ServiceAccount token authenticates to this API server as: one this server
        minted, still valid, for the API audience; None otherwise. Not counted in ``reviews``."""
        try:
            return dict(self._review(token, [API_AUDIENCE])["user"])
        except (ValueError, KeyError, TypeError):
            return None

    def _review(self, token: str, wanted: Sequence[str]) -> Obj:
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("token is not a JWT")
        if not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}"), parts[2]):
            raise ValueError("square/go-jose: error in cryptographic primitive")
        claims = json.loads(_unb64(parts[1]))
        now = self.clock()
        if now >= claims["exp"]:
            raise ValueError("service account token has expired")
        if now < claims["nbf"]:
            raise ValueError("service account token is not valid yet")
        matched = [a for a in claims["aud"] if a in wanted]
        if not matched:
            raise ValueError("token audiences is invalid for the target audiences")
        k8s = claims["kubernetes.io"]
        ns, sa = k8s["namespace"], k8s["serviceaccount"]
        extra: dict[str, list[str]] = {f"{EXTRA}credential-id": [f"JTI={claims['jti']}"]}
        if "pod" in k8s:
            current = self.store.objects["pods"].get((ns, k8s["pod"]["name"]))
            if current is None or current["metadata"]["uid"] != k8s["pod"]["uid"]:
                raise ValueError(f"pod {k8s['pod']['name']} ({k8s['pod']['uid']}) no longer exists")
            extra[f"{EXTRA}pod-name"] = [k8s["pod"]["name"]]
            extra[f"{EXTRA}pod-uid"] = [k8s["pod"]["uid"]]
        if "node" in k8s and self.node_info:
            extra[f"{EXTRA}node-name"] = [k8s["node"]["name"]]
            extra[f"{EXTRA}node-uid"] = [k8s["node"]["uid"]]
        return {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{ns}:{sa['name']}",
                "uid": sa["uid"],
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                "extra": extra,
            },
            "audiences": matched,
        }
