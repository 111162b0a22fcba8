"""The brain's side of the sync stream (gRPC, asyncio): authenticate, authorize, fan out.

Each stream starts with the agent's Hello. The node it names must be the node identity of the
client certificate (its ``stockade://node/<node>`` URI SAN, `stockade.tls.identity`), so an
agent can only ever receive its own node's rules, and an operator's certificate is refused. Every
message is parsed and validated here; a bad one ends that stream with INVALID_ARGUMENT (or
PERMISSION_DENIED / UNAUTHENTICATED) and never reaches the fan-out or stops the brain.

An agent of an older sync protocol (`stockade.codec.version`) would skip the IPv6 part of its
rules silently, so its stream ends with FAILED_PRECONDITION naming both versions, and the node
shows as refused until an agent this brain accepts connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
from google.protobuf.message import DecodeError

from stockade.brain.fanout import FanOut, Session
from stockade.brain.nodeauth import CALLER_NODE
from stockade.codec.validate import ValidationError, check_digest, check_epoch, check_node_name, check_problems
from stockade.codec.version import agent_too_old, compatible
from stockade.tls import IdentityError, ServerTLS, peer_identity
from stockade.v1 import sync_pb2

log = logging.getLogger(__name__)

SYNC_METHOD = "/stockade.v1.Sync/Sync"
MAX_AGENT_MESSAGE = 64 * 1024  # hellos and acks are tiny


# Keepalive: the brain pings every agent; a half-open connection (a node that vanished without
# a FIN) fails its ping and its stream ends, instead of lingering for the TCP timeout.
def server_options(keepalive_time_ms: int = 10_000, keepalive_timeout_ms: int = 5_000) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        # Newer gRPC cores time out an unanswered ping with this, not with keepalive_timeout.
        ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Agents ping twice a second (to notice a frozen brain within the 2 s failover target,
        # `stockade.agent.sync.client.KEEPALIVE_TIME`); don't punish them for it (0: no limit).
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 100),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_receive_message_length", MAX_AGENT_MESSAGE),
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ]


class _EndStream(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def peer_node(context: grpc.aio.ServicerContext) -> str | None:
    """The node a sync/drops caller proved with its certificate; None without a certificate.

    A verified certificate that is not a node's (an operator's, or one without the node URI
    SAN) ends the call with UNAUTHENTICATED: such callers are never trusted as a node. A node
    the call's guard already proved (a token, `stockade.brain.nodeauth`) comes first.
    """
    proven = CALLER_NODE.get()
    if proven is not None:
        return proven
    try:
        ident = peer_identity(context.auth_context())
    except IdentityError as e:
        raise _EndStream(grpc.StatusCode.UNAUTHENTICATED, f"not a node certificate: {e}") from None
    if ident is None:
        return None
    if ident.kind != "node":
        raise _EndStream(
            grpc.StatusCode.UNAUTHENTICATED,
            f"this is an operator certificate ({ident.name}, role {ident.role}); the sync port serves "
            "node agents only (their certificates carry stockade://node/<node>)",
        )
    return ident.name


def _parse(raw: bytes) -> sync_pb2.AgentMessage:
    try:
        return sync_pb2.AgentMessage.FromString(raw)
    except DecodeError as e:
        raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, f"malformed AgentMessage: {e}") from None


class SyncService:
    """Serves the Sync stream from a `FanOut`.

    ``allow_insecure``: accept streams without a client certificate and trust the node name in
    the hello. Only for tests and benchmarks; every deployed configuration uses mTLS.
    """

    def __init__(
        self,
        fanout: FanOut,
        *,
        allow_insecure: bool = False,
        hello_timeout: float = 10.0,
        before_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.fanout = fanout
        # Awaited right before a session starts (no await after it): the brain waits there until
        # its engine is between changes, since a new feed starts from the engine's model.
        self.before_connect = before_connect
        self.allow_insecure = allow_insecure
        self.hello_timeout = hello_timeout
        self.refused = 0  # streams ended for authentication, authorization or malformed input

    def handler(self) -> grpc.GenericRpcHandler:
        # Raw bytes in, so that a message that does not parse ends with INVALID_ARGUMENT here.
        method = grpc.stream_stream_rpc_method_handler(
            self.sync, request_deserializer=None, response_serializer=sync_pb2.BrainMessage.SerializeToString
        )
        return grpc.method_handlers_generic_handler("stockade.v1.Sync", {"Sync": method})

    async def sync(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        peer = context.peer()
        try:
            hello = await self._hello(requests, context)
        except _EndStream as e:
            self.refused += 1
            log.warning("sync stream from %s refused: %s", peer, e.message)
            await context.abort(e.code, e.message)
            return
        if self.before_connect is not None:
            await self.before_connect()
        session, _ = self.fanout.connect(hello, peer)
        reader = asyncio.create_task(self._read_acks(requests, session))
        try:
            while session.end is None:
                msg = session.next_message()
                if msg is not None:
                    await context.write(msg)
                    continue
                await session.wait()
            code, message = session.end
            if code != "OK":
                self.refused += code == "INVALID_ARGUMENT"
                # Shutting down ends every stream on purpose: the brain says so once (main.py).
                log.log(
                    logging.DEBUG if self.fanout.closing is not None else logging.WARNING,
                    "sync stream of %s (%s) ended: %s",
                    hello.node,
                    peer,
                    message,
                )
                await context.abort(grpc.StatusCode[code], message)
        except asyncio.CancelledError:
            # The server is stopping (or the RPC was cancelled): nothing left to send.
            # Returning instead of re-raising keeps gRPC from logging a traceback per stream.
            return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.fanout.disconnect(session)

    async def _hello(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> sync_pb2.Hello:
        node = peer_node(context)
        if node is None and not self.allow_insecure:
            raise _EndStream(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        try:
            raw = await asyncio.wait_for(anext(requests), self.hello_timeout)
        except TimeoutError:
            raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, "no hello within the timeout") from None
        except StopAsyncIteration:
            raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before its hello") from None
        msg = _parse(raw)
        if msg.WhichOneof("kind") != "hello":
            raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        hello = msg.hello
        try:
            check_node_name(hello.node, "hello.node")
            check_epoch(hello.epoch, "hello.epoch")
            check_digest(hello.digest, "hello.digest")
            if len(hello.agent_version) > 128:
                raise ValidationError("hello.agent_version: longer than 128 characters")
            if len(hello.backend) > 32:
                raise ValidationError("hello.backend: longer than 32 characters")
            check_problems(hello.status.problems, "hello.status.problems")
        except ValidationError as e:
            raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        if node is not None and hello.node != node:
            raise _EndStream(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this client's credentials are node {node!r}'s, not node {hello.node!r}'s",
            )
        # Checked last, so only an authenticated agent can mark its node refused.
        if not compatible(hello.protocol):
            reason = agent_too_old(hello.node, hello.protocol, hello.agent_version)
            self.fanout.refuse(hello, reason)
            raise _EndStream(grpc.StatusCode.FAILED_PRECONDITION, reason)
        return hello

    async def _read_acks(self, requests: AsyncIterator[bytes], session: Session) -> None:
        try:
            async for raw in requests:
                msg = _parse(raw)
                kind = msg.WhichOneof("kind")
                if kind not in ("ack", "status"):
                    raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, "only acks and statuses may follow the hello")
                try:
                    if kind == "ack":
                        await self.fanout.ack(session, msg.ack)
                    else:
                        self.fanout.report(session, msg.status)
                except ValidationError as e:
                    raise _EndStream(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            session.close("OK", "the agent closed the stream")
        except _EndStream as e:
            session.close(e.code.name, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a broken stream: end it, quietly
            session.close("UNAVAILABLE", f"stream broken: {e}")


async def serve_sync(
    fanout: FanOut,
    tls: ServerTLS | None,
    address: str = "127.0.0.1:0",
    *,
    allow_insecure: bool = False,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    keepalive_time_ms: int = 10_000,
    keepalive_timeout_ms: int = 5_000,
) -> tuple[grpc.aio.Server, int, SyncService]:
    """Start a gRPC server with the Sync service (and ``extra_handlers``, e.g. health, admin).

    Returns the started server, the bound port (useful with port 0) and the service. Without
    ``tls`` it listens in plain text, and only when ``allow_insecure`` says so.
    """
    if tls is None and not allow_insecure:
        raise ValueError("the sync service needs mTLS (pass allow_insecure=True only in tests)")
    service = SyncService(fanout, allow_insecure=allow_insecure)
    server = grpc.aio.server(options=server_options(keepalive_time_ms, keepalive_timeout_ms))
    server.add_generic_rpc_handlers((service.handler(), *extra_handlers))
    port = server.add_insecure_port(address) if tls is None else server.add_secure_port(address, tls.credentials())
    if port == 0:
        raise OSError(f"could not listen on {address}")
    await server.start()
    return server, port, service
