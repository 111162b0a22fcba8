"""Who a TLS peer is: a node or an operator, never both, named by a URI SAN in its certificate.

Node agents' client certificates carry ``stockade://node/<node>``; operators' carry
``stockade://operator/<role>`` (role ``read`` or ``admin``). Both are signed by the same CA, so
the kind is read from the certificate itself and checked on each port: the sync/drops port
serves only node certificates, the admin port only operator certificates. The common name is
not an identity: a node named ``stockade-admin`` must not become an operator, nor an operator a node.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509

SCHEME = "stockade://"
NODE_PREFIX = f"{SCHEME}node/"
OPERATOR_PREFIX = f"{SCHEME}operator/"
OPERATOR_ROLES = ("read", "admin")


def node_uri(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


def operator_uri(role: str) -> str:
    if role not in OPERATOR_ROLES:
        raise ValueError(f"operator role {role!r}: use one of {', '.join(OPERATOR_ROLES)}")
    return f"{OPERATOR_PREFIX}{role}"


@dataclass(frozen=True)
class PeerIdentity:
    """``kind`` is ``node`` or ``operator``; ``name`` the node name or the operator's CN;
    ``role`` the operator's role (empty for nodes)."""

    kind: str
    name: str
    role: str = ""


class IdentityError(ValueError):
    """A verified certificate that names no Stockade identity, or more than one kind of identity."""


@functools.lru_cache(maxsize=4096)
def _identity_of_pem(pem: bytes) -> PeerIdentity:
    # The handshake already verified the chain; here only the names are read (cached: agents
    # reconnect with the same certificate, so this is parsed once per certificate).
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise IdentityError(f"unreadable peer certificate: {e}") from None
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    nodes = [u[len(NODE_PREFIX) :] for u in uris if u.startswith(NODE_PREFIX)]
    roles = [u[len(OPERATOR_PREFIX) :] for u in uris if u.startswith(OPERATOR_PREFIX)]
    if nodes and roles:
        raise IdentityError("the certificate names both a node and an operator; issue one or the other")
    if len(nodes) > 1 or len(roles) > 1:
        raise IdentityError("the certificate names more than one Stockade identity")
    if nodes:
        return PeerIdentity("node", nodes[0])
    if roles:
        if roles[0] not in OPERATOR_ROLES:
            raise IdentityError(f"operator role {roles[0]!r} is not one of {', '.join(OPERATOR_ROLES)}")
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        name = str(cns[0].value) if cns else f"operator-{roles[0]}"
        return PeerIdentity("operator", name, roles[0])
    raise IdentityError(
        f"the certificate carries no {NODE_PREFIX}<node> or {OPERATOR_PREFIX}<role> URI SAN "
        "(issue it with `stockade certs init` / `stockade certs operator`, or add the URI in cert-manager)"
    )


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> PeerIdentity | None:
    """The identity of a peer that authenticated with a certificate; None without one.

    Raises IdentityError for a verified certificate that names no (or a confusing) identity.
    """
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return None
    pems = list(auth_context.get("x509_pem_cert", ()))
    if not pems:
        return None
    return _identity_of_pem(bytes(pems[0]))
