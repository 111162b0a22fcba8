"""Who may call the sync and drops port, and as which node (``--agent-auth``).

- ``cert``: a client certificate with ``stockade://node/<node>`` (`stockade.tls.identity`).
- ``token``: the agent's projected ServiceAccount token in ``authorization: Bearer``, verified
  with TokenReview and bound to a node (`stockade.brain.tokenauth`); no client certificate
  (the brain's server certificate is still verified by the agent).
- ``both``: a node certificate *and* a token, naming the same node (the step between the two
  while agents are rolled over; grpc cannot ask for a client certificate without requiring one).

The guard runs before any message is read and leaves the proven node in `CALLER_NODE` for the
handlers of that call (the same task), which serve only that node. A token is reviewed again
every ``recheck`` seconds while its call lasts (through the cache): once its pod is gone or the
token expired, the call ends, and the reconnecting agent is refused with the reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable

import grpc

from stockade.brain.guard import Guard
from stockade.brain.tokenauth import TokenAuthenticator, TokenRefused
from stockade.tls import IdentityError, peer_identity

log = logging.getLogger(__name__)

MODES = ("cert", "token", "both")

# The node the current call proved (set by the guard, read by the sync and drops handlers).
CALLER_NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("stockade_caller_node", default=None)


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer`` header, if there is one."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def cert_node(context: grpc.aio.ServicerContext) -> str | None:
    """The node the client certificate names; raises TokenRefused (UNAUTHENTICATED) otherwise."""
    try:
        ident = peer_identity(context.auth_context())
    except IdentityError as e:
        raise TokenRefused(grpc.StatusCode.UNAUTHENTICATED, f"not a node certificate: {e}") from None
    if ident is None or ident.kind != "node":
        what = f"an operator certificate ({ident.name}, role {ident.role})" if ident else "no client certificate"
        raise TokenRefused(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{what}: this port serves node agents only, whose certificates carry stockade://node/<node>",
        )
    return ident.name


class NodeAuth:
    def __init__(self, mode: str, tokens: TokenAuthenticator | None = None, *, recheck: float = 60.0) -> None:
        if mode not in MODES:
            raise ValueError(f"--agent-auth {mode!r}: use one of {', '.join(MODES)}")
        if mode != "cert" and tokens is None:
            raise ValueError(f"--agent-auth {mode} needs a token authenticator")
        self.mode = mode
        self.tokens = tokens
        # Seconds between re-reviews of a live call's token: a stream must not outlive its
        # pod (deleted, node removed) or its token by more than this.
        self.recheck = recheck
        self.refused = 0
        self.revoked = 0  # live calls ended because their token stopped being valid

    @property
    def wants_client_cert(self) -> bool:
        return self.mode != "token"

    async def node_of(self, context: grpc.aio.ServicerContext) -> str:
        """The node this call proves; raises TokenRefused with the status to end it with."""
        return (await self._prove(context))[0]

    async def _prove(self, context: grpc.aio.ServicerContext) -> tuple[str, str | None]:
        by_cert = cert_node(context) if self.mode != "token" else None
        if self.mode == "cert":
            assert by_cert is not None
            return by_cert, None
        token = bearer(context.invocation_metadata())
        if token is None:
            raise TokenRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                "no bearer token: this brain identifies agents by their ServiceAccount token "
                "(run the agent with --token-file, a projected serviceAccountToken)",
            )
        assert self.tokens is not None
        ident = await self.tokens.verify(token)
        if by_cert is not None and by_cert != ident.node:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the client certificate is node {by_cert!r}'s but the token is node {ident.node!r}'s",
            )
        return ident.node, token

    def _watch(self, context: grpc.aio.ServicerContext, token: str, node: str) -> None:
        """End this call (its task) once its token no longer proves ``node``; the agent reconnects
        and is refused with the reason, or accepted with the kubelet's renewed token."""
        call = asyncio.current_task()
        assert call is not None and self.tokens is not None
        tokens = self.tokens

        async def watchdog() -> None:
            while True:
                await asyncio.sleep(self.recheck)
                try:
                    again = (await tokens.verify(token)).node
                except TokenRefused as e:
                    if e.code == grpc.StatusCode.UNAVAILABLE:
                        continue  # the API's trouble, not the token's: keep serving the node
                    why = e.message
                else:
                    if again == node:
                        continue
                    why = f"the token now proves node {again!r}"
                self.revoked += 1
                log.warning("ending node %s's call: its token is no longer valid (%s)", node, why)
                call.cancel()
                return

        task = asyncio.ensure_future(watchdog())

        def stop(_: object) -> None:
            task.cancel()

        context.add_done_callback(stop)  # type: ignore[arg-type]  # the stubs want a class; grpc calls it

    def guard(self) -> Guard:
        async def check(context: grpc.aio.ServicerContext, method: str) -> None:
            try:
                node, token = await self._prove(context)
            except TokenRefused as e:
                self.refused += 1
                await context.abort(e.code, e.message)
                return
            CALLER_NODE.set(node)
            if token is not None and self.recheck > 0:
                self._watch(context, token, node)

        # The sync server's own receive limit (64 KiB) already bounds every message here.
        return Guard(check, default_limit=1 << 30)
