"""gRPC credentials for the sync channel, and the identity of an authenticated peer."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509


@dataclass(frozen=True)
class ServerTLS:
    """The brain's certificate and key, and the CA whose client certificates it accepts."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_dir(cls, directory: Path) -> ServerTLS:
        """Read ``brain.crt``, ``brain.key`` and ``ca.crt`` (the layout `stockade certs init` writes)."""
        return cls.from_files(directory / "brain.crt", directory / "brain.key", directory / "ca.crt")

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> ServerTLS:
        return cls(cert.read_bytes(), key.read_bytes(), ca.read_bytes())

    def credentials(self) -> grpc.ServerCredentials:
        # require_client_auth: a client without a certificate signed by our CA fails the handshake.
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)


@dataclass(frozen=True)
class ClientTLS:
    """An agent's client certificate and key, and the CA that signed the brain's certificate.

    ``server_name`` overrides the name checked against the brain's certificate (for a brain
    reached by an address its certificate does not list).
    """

    cert: bytes
    key: bytes
    ca: bytes
    server_name: str | None = None

    @classmethod
    def from_dir(cls, directory: Path, node: str, server_name: str | None = None) -> ClientTLS:
        """Read ``nodes/<node>.crt``, ``nodes/<node>.key`` and ``ca.crt``."""
        return cls.from_files(
            directory / "nodes" / f"{node}.crt",
            directory / "nodes" / f"{node}.key",
            directory / "ca.crt",
            server_name,
        )

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path, server_name: str | None = None) -> ClientTLS:
        return cls(cert.read_bytes(), key.read_bytes(), ca.read_bytes(), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    # Fixed bytes are a certificate source that never renews (see `stockade.tls.reload`).
    version = 0

    def refresh(self) -> bool:
        return False

    def current(self) -> ClientTLS:
        return self

    def seconds_left(self) -> float | None:
        try:
            leaf = x509.load_pem_x509_certificate(self.cert)
        except ValueError:
            return None
        return leaf.not_valid_after_utc.timestamp() - time.time()

    def check_expiry(self) -> str | None:
        return None


def peer_names(auth_context: Mapping[str, Iterable[bytes]]) -> set[str]:
    """The names an authenticated peer's certificate gives: its CN and its DNS SANs.

    Empty when the peer did not authenticate with a certificate (plain-text channel).
    """
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return set()
    names = {v.decode("utf-8", "replace") for v in auth_context.get("x509_common_name", [])}
    names.update(v.decode("utf-8", "replace") for v in auth_context.get("x509_subject_alternative_name", []))
    return names
