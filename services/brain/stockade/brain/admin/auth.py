"""Who may call the admin API: bearer tokens with roles, or client certificates.

A tokens file (YAML or JSON) lists ``{"tokens": [{"name": "ops", "token": "...", "role": "read"}]}``;
roles are ``read`` (every query) and ``admin`` (queries and the calls that change something).
A client certificate whose common name is ``stockade-admin`` or ``stockade-reader`` (signed by the
brain's CA) gets the admin or read role. Anything else is refused with UNAUTHENTICATED, and a
read-only caller asking for a write gets PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

ROLES = ("read", "admin")
CERT_ROLES = {"stockade-admin": "admin", "stockade-reader": "read"}


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


class Authorizer:
    def __init__(self, tokens: Mapping[str, Caller] | None = None) -> None:
        self.tokens = dict(tokens or {})

    def caller(self, context: Any) -> Caller | None:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                presented = value[len("Bearer ") :].strip()
                for token, caller in self.tokens.items():
                    if hmac.compare_digest(token.encode(), presented.encode()):
                        return caller
                return None
        auth = context.auth_context() or {}
        for cn in auth.get("x509_common_name", []):
            name = cn.decode() if isinstance(cn, bytes) else str(cn)
            if name in CERT_ROLES:
                return Caller(name, CERT_ROLES[name])
        return None

    async def require(self, context: Any, role: str = "read") -> Caller:
        caller = self.caller(context)
        if caller is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the admin API needs credentials: pass a bearer token (--token or STOCKADE_TOKEN) "
                "or a client certificate for stockade-admin / stockade-reader",
            )
            raise AssertionError("unreachable")
        if not caller.may(role):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.name} has the {caller.role} role; this call needs the {role} role",
            )
        return caller
