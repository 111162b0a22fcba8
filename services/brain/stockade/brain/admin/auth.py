"""Who may call the admin API: bearer tokens with roles, or operator client certificates.

A tokens file (YAML or JSON) lists ``{"tokens": [{"name": "ops", "token": "...", "role": "read"}]}``;
roles are ``read`` (every query) and ``admin`` (queries and the calls that change something).
An operator certificate (signed by the brain's CA, URI SAN ``stockade://operator/<role>``, see
`stockade.tls.identity`) gets that role; it is verified on the admin mTLS port. A node's
certificate is never an operator, whatever its common name, and is refused even with a token.
Anything else is refused with UNAUTHENTICATED, and a read-only caller asking for a write gets
PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from stockade.tls import IdentityError, peer_identity

ROLES = ("read", "admin")
NEEDS_CREDENTIALS = (
    "the admin API needs credentials: pass a bearer token (--token or STOCKADE_TOKEN) over TLS, "
    "or an operator client certificate (`stockade certs operator`) to the admin mTLS port"
)


class TokensFileError(ValueError):
    pass


@dataclass(frozen=True)
class Caller:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return self.role == "admin" or role == "read"


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


class Authorizer:
    def __init__(self, tokens: Mapping[str, Caller] | None = None) -> None:
        self.tokens = dict(tokens or {})

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
                caller = self._token_caller(value[len("Bearer ") :].strip())
                if caller is None:
                    raise Refused("this token is not in the brain's --admin-tokens-file")
                return caller
        if ident is not None:
            return Caller(ident.name, ident.role)
        raise Refused(NEEDS_CREDENTIALS)

    def caller(self, context: Any) -> Caller | None:
        try:
            return self.authenticate(context.invocation_metadata(), context.auth_context())
        except Refused:
            return None

    async def require(self, context: Any, role: str = "read") -> Caller:
        try:
            caller = self.authenticate(context.invocation_metadata(), context.auth_context())
        except Refused as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
            raise AssertionError("unreachable") from None
        if not caller.may(role):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.name} has the {caller.role} role; this call needs the {role} role",
            )
        return caller
