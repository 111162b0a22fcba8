"""The agent's ServiceAccount token as gRPC call credentials (the brain's ``--agent-auth token``).

The kubelet rotates a projected token in place, well before it expires, so the file is read
again for every call (each connect of the sync stream, each drop report): the brain always gets
the current token. gRPC sends call credentials only over TLS; the brain's certificate is
verified against a CA bundle that holds no private key (``--tls-ca``), re-read when it changes.
A client certificate may be sent as well (``--agent-auth both``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from stockade.tls.config import ClientTLS
from stockade.tls.reload import ClientTLSFiles

log = logging.getLogger(__name__)


class TokenFileError(ValueError):
    """The token file cannot be read, or holds no token."""


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise TokenFileError(f"cannot read the token file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TokenFileError(f"{path} is not a token (not text)") from None
    if not token or any(c.isspace() for c in token):
        raise TokenFileError(f"{path} holds no token (empty, or more than one word)")
    return token


class TokenPlugin(grpc.AuthMetadataPlugin):
    """Adds ``authorization: Bearer <token>`` to every call, read from the file at that call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            token = read_token(self.path)
        except TokenFileError as e:
            log.error("%s; the call is not made (rules stay in force)", e)
            callback((), e)
            return
        callback((("authorization", f"Bearer {token}"),), None)


@dataclass(frozen=True)
class TokenChannelTLS(ClientTLS):
    """Server verification (and an optional client certificate) plus the token on every call."""

    token: TokenPlugin | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        ssl = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key or None, certificate_chain=self.cert or None
        )
        if self.token is None:
            return ssl
        return grpc.composite_channel_credentials(ssl, grpc.metadata_call_credentials(self.token, name="sa-token"))


class TokenTLSSource:
    """A `ClientTLSSource`: the token file, the CA bundle (or a client certificate set)."""

    def __init__(
        self, token: Path, ca: Path, server_name: str | None = None, certs: ClientTLSFiles | None = None
    ) -> None:
        read_token(token)  # fail at start with a clear message, not at the first connect
        self.plugin = TokenPlugin(token)
        self.ca_path = ca
        self.server_name = server_name
        self.certs = certs
        self._ca_version = 0
        self._ca_stamp: tuple[int, int, int] | None = None
        self._ca = b""
        if certs is None:
            self._ca = self._read_ca()
            self._ca_stamp = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.ca_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read_ca(self) -> bytes:
        data = self.ca_path.read_bytes()  # OSError: the caller says which file
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError as e:
            raise ValueError(f"{self.ca_path}: not a PEM CA bundle ({e})") from None
        if b"PRIVATE KEY" in data:
            raise ValueError(f"{self.ca_path} holds a private key: give the agents a bundle of certificates only")
        return data

    @property
    def version(self) -> int:
        return self.certs.version if self.certs is not None else self._ca_version

    def refresh(self) -> bool:
        if self.certs is not None:
            return self.certs.refresh()
        stamp = self._stamp()
        if stamp == self._ca_stamp:
            return False
        self._ca_stamp = stamp
        try:
            data = self._read_ca()
        except (OSError, ValueError) as e:
            log.error("the CA bundle changed but cannot be used (%s); keeping the previous one", e)
            return False
        if data == self._ca:
            return False
        self._ca, self._ca_version = data, self._ca_version + 1
        log.info("the CA bundle %s was renewed", self.ca_path)
        return True

    def current(self) -> ClientTLS:
        if self.certs is not None:
            base = self.certs.current()
            return TokenChannelTLS(base.cert, base.key, base.ca, base.server_name, token=self.plugin)
        return TokenChannelTLS(b"", b"", self._ca, self.server_name, token=self.plugin)

    def seconds_left(self) -> float | None:
        return self.certs.seconds_left() if self.certs is not None else None

    def check_expiry(self) -> str | None:
        return self.certs.check_expiry() if self.certs is not None else None
