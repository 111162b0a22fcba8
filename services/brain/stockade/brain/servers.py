"""The brain's listeners and who may use each.

- sync + drops (``--listen``): mutual TLS, node certificates only (``stockade://node/<node>``).
- admin (``--admin-listen``): TLS; bearer tokens. grpcio cannot ask for a client certificate
  without requiring one, so operator certificates are verified on a second port of the same
  admin server (``--admin-mtls-listen``), which requires one (tokens work there too).
- HTTP (``--http``): /healthz /readyz /metrics for the kubelet and the scraper; /v1/realized
  only with an admin token.
Every gRPC call is authenticated before its message is read (`stockade.brain.guard`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from stockade.brain.admin.auth import Authorizer, Refused, load_tokens, refusal
from stockade.brain.guard import Guard
from stockade.brain.nodeauth import CALLER_NODE
from stockade.brain.tokenauth import TokenRefused
from stockade.tls import IdentityError, peer_identity
from stockade.tls.reload import ReloadingServerTLS, TLSFileError

log = logging.getLogger(__name__)

ADMIN_METHOD = "/stockade.v1.Admin/"
# Only DryRun carries manifests (the service checks 16 MiB of content in total), and Suggest
# up to 500 flows; everything else is a small query.
ADMIN_LIMITS = {f"{ADMIN_METHOD}DryRun": (16 << 20) + (1 << 20), f"{ADMIN_METHOD}Suggest": 256 * 1024}
ADMIN_DEFAULT_LIMIT = 64 * 1024
ADMIN_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", max(ADMIN_LIMITS.values())),
    ("grpc.max_concurrent_streams", 64),
    # No window growth by BDP probing: a caller not yet authenticated can then push only the
    # initial 64 KiB window per stream before the guard refuses it (4 MB instead of 48 MB of
    # growth for 1,000 refused 4 MiB calls, benchmarks/admin_unauth_flood.py).
    ("grpc.http2.bdp_probe", 0),
]


class TLSConfig(Protocol):
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None
    insecure: bool


def server_tls(c: TLSConfig) -> ReloadingServerTLS | None:
    """The brain's certificate, key and CA, re-read from disk when they are renewed; one per set
    of files, shared by the sync and admin ports and the expiry metric."""
    if c.insecure:
        return None
    if not (c.tls_cert and c.tls_key and c.tls_ca):
        raise SystemExit(
            "stockade brain: --tls-cert, --tls-key and --tls-ca are required (create them with "
            "`stockade certs init`); --insecure is for tests only"
        )
    paths = (Path(c.tls_cert).resolve(), Path(c.tls_key).resolve(), Path(c.tls_ca).resolve())
    tls = _reloading.get(paths)
    if tls is None:
        try:
            tls = _reloading[paths] = ReloadingServerTLS.from_files(Path(c.tls_cert), Path(c.tls_key), Path(c.tls_ca))
        except OSError as e:
            raise SystemExit(f"stockade brain: cannot read TLS file {e.filename}: {e.strerror}") from None
        except TLSFileError as e:
            raise SystemExit(f"stockade brain: {e}") from None
        log.info("serving with %s", tls.files.material.describe())
    return tls


_reloading: dict[tuple[Path, Path, Path], ReloadingServerTLS] = {}


def server_credentials(c: TLSConfig, require_client_auth: bool) -> grpc.ServerCredentials | None:
    """Dynamic credentials: grpc asks before each new handshake, and gets the renewed
    certificate once its files changed; established connections keep theirs."""
    tls = server_tls(c)
    if tls is None:
        return None
    # require_client_auth=False: grpcio then does not request a client certificate at all.
    return tls.credentials(require_client_auth)


class CertificateExpiry:
    """``stockade_brain_certificate_expiry_seconds``: seconds until the brain's certificate in
    use expires (negative once expired). Each scrape also picks up renewed files and warns when
    the end is near (`stockade.tls.reload.TLSFiles.check_expiry`)."""

    def __init__(self, c: TLSConfig) -> None:
        self.config = c

    def collect(self) -> Iterator[Metric]:
        if self.config.insecure or not (self.config.tls_cert and self.config.tls_key and self.config.tls_ca):
            return
        try:
            tls = server_tls(self.config)
        except SystemExit as e:  # unreadable files: the start says so; a scrape must not raise
            log.error("%s", e)
            return
        assert tls is not None
        tls.files.refresh()
        tls.files.check_expiry()
        m = tls.files.material
        g = GaugeMetricFamily(
            "stockade_brain_certificate_expiry_seconds",
            "Seconds until the brain's serving certificate in use expires (renewed files are picked up "
            "without a restart; alert well before 0).",
            labels=["serial"],
        )
        g.add_metric([f"{m.serial:x}"], tls.files.seconds_left())
        yield g
        yield GaugeMetricFamily(
            "stockade_brain_certificate_renewals",
            "Renewed certificate sets the brain adopted from disk since it started.",
            value=tls.files.renewals,
        )
        yield GaugeMetricFamily(
            "stockade_brain_certificate_files_unusable",
            "1 while the certificate files on disk changed but cannot be used (the previous set is still served).",
            value=1 if tls.files.problem else 0,
        )


def node_of_peer(context: grpc.aio.ServicerContext) -> str | None:
    """The node a caller's token (proven by the guard) or certificate proves; None for anything else."""
    proven = CALLER_NODE.get()
    if proven is not None:
        return proven
    try:
        ident = peer_identity(context.auth_context())
    except IdentityError:
        return None
    return ident.name if ident is not None and ident.kind == "node" else None


def node_guard(insecure: bool) -> Guard:
    """Sync and drops: only node certificates (an operator certificate is refused)."""

    async def check(context: grpc.aio.ServicerContext, method: str) -> None:
        if insecure:
            return
        try:
            ident = peer_identity(context.auth_context())
        except IdentityError as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"not a node certificate: {e}")
            return
        if ident is None or ident.kind != "node":
            what = f"an operator certificate ({ident.name}, role {ident.role})" if ident else "no client certificate"
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{what}: this port serves node agents only, whose certificates carry stockade://node/<node>",
            )

    # The sync server's own receive limit (64 KiB) already bounds every message here.
    return Guard(check, default_limit=1 << 30)


def admin_guard(auth: Authorizer) -> Guard:
    async def check(context: grpc.aio.ServicerContext, method: str) -> None:
        try:
            await auth.identify(context.invocation_metadata(), context.auth_context())
        except Refused as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        except TokenRefused as e:
            await context.abort(e.code, e.message)

    return Guard(check, limits=ADMIN_LIMITS, default_limit=ADMIN_DEFAULT_LIMIT)


def authorizer(tokens_file: str | None) -> Authorizer:
    return Authorizer(load_tokens(tokens_file) if tokens_file else {})


def add_admin_ports(server: grpc.aio.Server, c: TLSConfig, listen: str, mtls_listen: str | None) -> tuple[int, int]:
    """Bind the admin port (tokens) and, with TLS, the admin mTLS port (operator certificates)."""
    creds = server_credentials(c, require_client_auth=False)
    port = server.add_secure_port(listen, creds) if creds else server.add_insecure_port(listen)
    mtls_port = 0
    if creds is not None and mtls_listen:
        mtls = server_credentials(c, require_client_auth=True)
        assert mtls is not None
        mtls_port = server.add_secure_port(mtls_listen, mtls)
    return port, mtls_port


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_required(auth: Authorizer, handler: Handler, role: str = "read") -> Handler:
    """An HTTP handler that answers only with a token of ``role`` in ``Authorization: Bearer``."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        try:
            caller = await auth.identify([("authorization", header)] if header else [], {})
            allowed = await auth.permits(caller, role)
        except (Refused, TokenRefused) as e:
            unavailable = isinstance(e, TokenRefused) and e.code == grpc.StatusCode.UNAVAILABLE
            message = e.message if isinstance(e, TokenRefused) else str(e)
            headers = {} if unavailable else {"WWW-Authenticate": "Bearer"}
            return web.json_response({"error": message}, status=503 if unavailable else 401, headers=headers)
        if not allowed:
            return web.json_response({"error": refusal(caller, role)}, status=403)
        return await handler(request)

    return guarded
