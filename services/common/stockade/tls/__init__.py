"""mTLS: certificate generation, gRPC credentials and peer identities (nodes, operators)."""

from stockade.tls.certs import CertPair, issue_brain_cert, issue_node_cert, issue_operator_cert, make_ca, write_bundle
from stockade.tls.config import ClientTLS, ServerTLS, peer_names
from stockade.tls.identity import IdentityError, PeerIdentity, peer_identity

__all__ = [
    "CertPair",
    "ClientTLS",
    "IdentityError",
    "PeerIdentity",
    "ServerTLS",
    "issue_brain_cert",
    "issue_node_cert",
    "issue_operator_cert",
    "make_ca",
    "peer_identity",
    "peer_names",
    "write_bundle",
]
