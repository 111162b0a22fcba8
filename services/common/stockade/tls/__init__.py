"""mTLS for the sync channel: certificate generation and gRPC credentials."""

from stockade.tls.certs import CertPair, issue_brain_cert, issue_node_cert, make_ca, write_bundle
from stockade.tls.config import ClientTLS, ServerTLS, peer_names

__all__ = [
    "CertPair",
    "ClientTLS",
    "ServerTLS",
    "issue_brain_cert",
    "issue_node_cert",
    "make_ca",
    "peer_names",
    "write_bundle",
]
