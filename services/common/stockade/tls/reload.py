"""Certificates that renew while the brain and the agents run.

cert-manager (or an operator) replaces the certificate, key and CA files in place; a Kubernetes
Secret volume swaps them atomically through a symlink. `TLSFiles` notices with a cheap ``stat``
of the three files (device, inode, mtime, size), re-reads them only then (or while they are
under a second old: file times are coarse), and adopts the new set only once it is whole:
every PEM parses and the key belongs to the certificate. A half written set (a new certificate
next to the old key) keeps the last good set in use and is re-read when the files change
again, so enforcement never loses its channel to a bad write.

The brain serves with `ReloadingServerTLS` (grpc's dynamic server credentials ask before every
handshake; existing connections keep their session); agents use `ClientTLSFiles`, re-read at
every connect and polled between them (`stockade.agent.sync.client`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stockade.tls.config import ClientTLS, ServerTLS

log = logging.getLogger(__name__)

# Warn once this share of the certificate's lifetime is left: cert-manager renews at 2/3 of it
# by default, so a certificate still in use past that point means its renewal did not arrive.
WARN_REMAINING_SHARE = 1 / 3
WARN_EVERY = 3600.0  # seconds between repeated warnings about the same certificate

Stamp = tuple[tuple[int, int, int, int], ...]


class TLSFileError(ValueError):
    """A certificate, key or CA file that cannot be read or does not fit the others."""


@dataclass(frozen=True)
class Material:
    """One whole, consistent set: the PEM bytes and what the logs and metrics say of them."""

    cert: bytes
    key: bytes
    ca: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    subject: str

    def seconds_left(self, now: float | None = None) -> float:
        return self.not_after.timestamp() - (time.time() if now is None else now)

    def describe(self) -> str:
        return f"{self.subject} serial {self.serial:x}, valid until {self.not_after:%Y-%m-%d %H:%M:%SZ}"


def _stamp(paths: tuple[Path, ...]) -> Stamp:
    out = []
    for p in paths:
        try:
            st = os.stat(p)  # follows the Secret volume's ..data symlink
        except OSError:
            out.append((-1, -1, -1, -1))
            continue
        out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _settled(stamp: Stamp) -> Stamp | None:
    """The stamp, if it can be trusted to change with the next write. File times tick with the
    kernel's clock (milliseconds), so a file rewritten in place within the same tick keeps its
    mtime (and maybe its size): until the files are a second old, compare their content instead."""
    recent = time.time_ns() - 1_000_000_000
    return stamp if all(mtime < recent for _, _, mtime, _ in stamp) else None


def parse_material(cert: bytes, key: bytes, ca: bytes, paths: tuple[Path, Path, Path]) -> Material:
    """Check that the three PEMs parse and fit together; TLSFileError says which file is wrong."""
    cert_path, key_path, ca_path = paths
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError as e:
        raise TLSFileError(f"{cert_path}: not a PEM certificate ({e})") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise TLSFileError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError as e:
        raise TLSFileError(f"{ca_path}: not a PEM CA bundle ({e})") from None
    leaf = chain[0]
    fmt, pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(fmt, pub) != leaf.public_key().public_bytes(fmt, pub):
        raise TLSFileError(
            f"{key_path} is not the key of {cert_path} (a renewal half written?): "
            "write the certificate and its key together"
        )
    return Material(
        cert,
        key,
        ca,
        leaf.serial_number,
        leaf.not_valid_before_utc,
        leaf.not_valid_after_utc,
        leaf.subject.rfc4514_string(),
    )


class TLSFiles:
    """A certificate, its key and a CA bundle on disk; `refresh` adopts a renewed set.

    Safe to call from grpc's handshake threads and the event loop alike (one lock, and the
    unchanged case is three ``stat`` calls).
    """

    def __init__(self, cert: Path, key: Path, ca: Path, *, what: str, clock: Callable[[], float] = time.time) -> None:
        self.paths = (Path(cert), Path(key), Path(ca))
        self.what = what  # "the brain's certificate", "node n1's client certificate", ...
        self.clock = clock
        self.version = 0  # bumped at every adopted set
        self.problem: str | None = None  # why the files on disk are not in use, while they are not
        self.renewals = 0
        self._lock = threading.Lock()
        self._warned: tuple[int, float] = (0, 0.0)  # (serial, when) of the last expiry warning
        self._stamp = _settled(_stamp(self.paths))
        self._material = self._read()  # the first read must succeed: raises TLSFileError/OSError

    def _read(self) -> Material:
        raw = tuple(p.read_bytes() for p in self.paths)
        return parse_material(raw[0], raw[1], raw[2], self.paths)

    @property
    def material(self) -> Material:
        return self._material

    def refresh(self) -> bool:
        """Re-read the files if they changed; True when a new set was adopted."""
        stamp = _stamp(self.paths)
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            self._stamp = _settled(stamp)  # a bad set is re-read only when the files change again
            try:
                new = self._read()
            except (OSError, TLSFileError) as e:
                text = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
                if text != self.problem:
                    log.error(
                        "%s: the files changed but cannot be used (%s); still serving %s",
                        self.what,
                        text,
                        self._material.describe(),
                    )
                self.problem = text
                return False
            self.problem = None
            old = self._material
            if (new.cert, new.key, new.ca) == (old.cert, old.key, old.ca):
                return False  # touched, not changed
            self._material = new
            self.version += 1
            self.renewals += 1
        log.info("%s renewed: now %s (was serial %x)", self.what, new.describe(), old.serial)
        return True

    def seconds_left(self) -> float:
        return self._material.seconds_left(self.clock())

    def check_expiry(self) -> str | None:
        """Warn (at most hourly per certificate) when the certificate in use nears its end."""
        m = self._material
        now = self.clock()
        left = m.seconds_left(now)
        lifetime = max(1.0, m.not_after.timestamp() - m.not_before.timestamp())
        if left > lifetime * WARN_REMAINING_SHARE:
            return None
        if left <= 0:
            text = f"{self.what} EXPIRED at {m.not_after:%Y-%m-%d %H:%M:%SZ}: handshakes with it fail"
        else:
            text = f"{self.what} expires in {_human(left)} and no renewed one was found"
        text += f" ({m.describe()}; files {', '.join(map(str, self.paths))})"
        if self.problem:
            text += f"; the files on disk are unusable: {self.problem}"
        serial, when = self._warned
        if serial != m.serial or now - when >= WARN_EVERY:
            self._warned = (m.serial, now)
            (log.error if left <= 0 else log.warning)("%s", text)
        return text


def _human(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds:.0f} s"


class ReloadingServerTLS:
    """The brain's server credentials, renewed from disk before each new handshake."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> ReloadingServerTLS:
        return cls(TLSFiles(cert, key, ca, what="the brain's certificate"))

    def current(self) -> ServerTLS:
        m = self.files.material
        return ServerTLS(m.cert, m.key, m.ca)

    def _configuration(self, m: Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.ca)

    def credentials(self, require_client_auth: bool = True) -> grpc.ServerCredentials:
        # Each port keeps its own view of the version: several credentials share one TLSFiles.
        served = [self.files.version]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by grpc before every handshake; None keeps the current configuration.
            try:
                self.files.refresh()
                if self.files.version == served[0]:
                    return None
                m = self.files.material
                served[0] = self.files.version
                return self._configuration(m)
            except Exception:  # never fail a handshake over the reload itself
                log.exception("%s: reload failed; keeping the current one", self.files.what)
                return None

        # grpc-stubs say the fetcher never returns None; grpc documents None as "no change".
        fetcher: Callable[[], grpc.ServerCertificateConfiguration] = fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self.files.material), fetcher, require_client_authentication=require_client_auth
        )


class ClientTLSSource(Protocol):
    """Where an agent's credentials come from: fixed bytes (`ClientTLS`) or files (`ClientTLSFiles`)."""

    @property
    def version(self) -> int: ...

    def refresh(self) -> bool: ...

    def current(self) -> ClientTLS: ...

    def seconds_left(self) -> float | None: ...

    def check_expiry(self) -> str | None: ...


class ClientTLSFiles:
    """An agent's client certificate, key and CA on disk: `current` gives the newest whole set."""

    def __init__(self, files: TLSFiles, server_name: str | None = None) -> None:
        self.files = files
        self.server_name = server_name

    @classmethod
    def from_files(
        cls, cert: Path, key: Path, ca: Path, server_name: str | None = None, node: str = ""
    ) -> ClientTLSFiles:
        what = f"node {node}'s client certificate" if node else "the agent's client certificate"
        return cls(TLSFiles(cert, key, ca, what=what), server_name)

    @property
    def version(self) -> int:
        return self.files.version

    def refresh(self) -> bool:
        return self.files.refresh()

    def current(self) -> ClientTLS:
        m = self.files.material
        return ClientTLS(m.cert, m.key, m.ca, self.server_name)

    def seconds_left(self) -> float | None:
        return self.files.seconds_left()

    def check_expiry(self) -> str | None:
        return self.files.check_expiry()
