"""Who may call the admin API: bearer tokens with roles, or operator client certificates.

A tokens file (YAML or JSON) lists ``{"tokens": [{"name": "ops", "token": "...", "role": "read"}]}``;
roles are ``read`` (every query) and ``admin`` (queries and the calls that change something).
An operator certificate (signed by the brain's CA, URI SAN ``stockade://operator/<role>``, see
`stockade.tls.identity`) gets that role; it is verified on the admin mTLS port. A node's
certificate is never an operator, whatever its common name, and is refused even with a token.
A token the file does not list may be a Kubernetes user's: the API server reviews it and RBAC
authorizes each call (`kubeauth`). Anything else is refused with UNAUTHENTICATED, and a caller
asking for more than its role (or its RBAC grants) gets PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import yaml

from stockade.brain.admin.kubeauth import KubeAuthorizer, KubeUser, denied_message
from stockade.brain.tokenauth import TokenRefused
from stockade.tls import IdentityError, peer_identity

ROLES = ("read", "admin")
NEEDS_CREDENTIALS = (
    "the admin API needs credentials: pass a bearer token (--token or STOCKADE_TOKEN: one of the brain's "
    "--admin-tokens-file, or a Kubernetes token RBAC lets get brains.stockade.io) over TLS, "
    "or an operator client certificate (`stockade certs operator`) to the admin mTLS port"
)


class TokensFileError(ValueError):
    pass


@dataclass(frozen=True)
class Caller:
    name: str
    role: str  # "read" | "admin"; "" for a Kubernetes user, whose calls RBAC authorizes one by one
    kube: KubeUser | None = None

    def may(self, role: str) -> bool:
        return self.role == "admin" or (role == "read" and self.role == "read")


def load_tokens(path: str | Path) -> dict[str, Caller]:
    """Read a tokens file; raise TokensFileError saying what is wrong with it."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TokensFileError(f"{path}: cannot read tokens file: {e}") from None
    entries = (doc or {}).get("tokens") if isinstance(doc, Mapping) else None
    if not isinstance(entries, list):
        raise TokensFileError(f"{path}: expected a mapping with a 'tokens' list")
    out: dict[str, Caller] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("token") or entry.get("role") not in ROLES:
            raise TokensFileError(f"{path}: tokens[{i}] needs 'token' and 'role' (one of {', '.join(ROLES)})")
        if len(str(entry["token"])) < 16:
            raise TokensFileError(f"{path}: tokens[{i}] is shorter than 16 characters; use a random token")
        out[str(entry["token"])] = Caller(str(entry.get("name") or f"token-{i}"), str(entry["role"]))
    return out


class Refused(Exception):
    """Why a caller is not authenticated (said to it with UNAUTHENTICATED)."""


class UnknownToken(Refused):
    """A bearer token not in the tokens file: the Kubernetes API may know it (`KubeAuthorizer`)."""

    def __init__(self, token: str) -> None:
        super().__init__("this token is not in the brain's --admin-tokens-file")
        self.token = token


class Authorizer:
    """``kube``: Kubernetes tokens and RBAC for the callers the tokens file does not know (set
    once the brain has its API client; None: the tokens file and certificates only)."""

    def __init__(self, tokens: Mapping[str, Caller] | None = None, kube: KubeAuthorizer | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.kube = kube

    def _token_caller(self, presented: str) -> Caller | None:
        found = None
        for token, caller in self.tokens.items():  # every token compared: no timing hint
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = caller
        return found

    def authenticate(self, metadata: Any, auth_context: Mapping[str, Any]) -> Caller:
        """The caller these credentials prove; raises Refused saying what is wrong."""
        try:
            ident = peer_identity(auth_context or {})
        except IdentityError as e:
            raise Refused(f"client certificate refused: {e}") from None
        if ident is not None and ident.kind != "operator":
            raise Refused(
                f"this is node {ident.name!r}'s certificate; node certificates are not accepted on the admin API "
                "(use an operator certificate from `stockade certs operator`, or a token)"
            )
        for key, value in metadata or ():
            if key == "authorization":
                if not (isinstance(value, str) and value.startswith("Bearer ")):
                    raise Refused("the authorization header must be 'Bearer <token>'")
                token = value[len("Bearer ") :].strip()
                caller = self._token_caller(token)
                if caller is None:
                    raise UnknownToken(token)
                return caller
        if ident is not None:
            return Caller(ident.name, ident.role)
        raise Refused(NEEDS_CREDENTIALS)

    async def identify(self, metadata: Any, auth_context: Mapping[str, Any]) -> Caller:
        """`authenticate`, and a token it does not know reviewed by the Kubernetes API; raises
        Refused, or TokenRefused (UNAUTHENTICATED, or UNAVAILABLE when the API cannot say)."""
        try:
            return self.authenticate(metadata, auth_context)
        except UnknownToken as e:
            if self.kube is None:
                raise
            user = await self.kube.user(e.token)
            return Caller(user.name, "", user)

    async def permits(self, caller: Caller, role: str) -> bool:
        """Whether ``caller`` may make a call of ``role``: its role, or for a Kubernetes user
        RBAC's answer (TokenRefused UNAVAILABLE when the API cannot say)."""
        if caller.kube is None or self.kube is None:
            return caller.may(role)
        return await self.kube.allowed(caller.kube, role)

    async def require(self, context: Any, role: str = "read") -> Caller:
        try:
            caller = await self.identify(context.invocation_metadata(), context.auth_context())
            allowed = await self.permits(caller, role)
        except Refused as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
            raise AssertionError("unreachable") from None
        except TokenRefused as e:
            await context.abort(e.code, e.message)
            raise AssertionError("unreachable") from None
        if not allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal(caller, role))
        return caller if caller.kube is None else replace(caller, role=role)


def refusal(caller: Caller, role: str) -> str:
    if caller.kube is not None:
        return denied_message(caller.name, role)
    return f"{caller.name} has the {caller.role} role; this call needs the {role} role"
