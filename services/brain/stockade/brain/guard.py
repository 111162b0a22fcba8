"""Authenticate before parsing: a server interceptor that checks who calls before any request
message is read, and limits each method's message size.

gRPC receives a unary request whole before its handler runs, and interceptors see neither the
peer's certificate nor the message. So the interceptor re-registers every guarded method as a
*streaming-request* method with raw bytes in (the wire format does not change: a unary call is
a stream of one message): its handler first runs ``check`` on the call's metadata and TLS auth
context, and only then reads the message, refuses one over the method's size limit with
RESOURCE_EXHAUSTED, and parses it. An unauthenticated caller costs no more than its headers.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

# Raises (after aborting the call) when the caller may not use this method.
Check = Callable[[grpc.aio.ServicerContext, str], Awaitable[None]]

EXEMPT = ("/grpc.health.v1.Health/",)  # probes carry no credentials


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    await context.abort(code, message)
    raise AssertionError("unreachable")


class Guard(grpc.aio.ServerInterceptor):
    """``limits``: method path -> largest request message in bytes; ``default_limit`` for the rest."""

    def __init__(
        self,
        check: Check,
        *,
        limits: Mapping[str, int] | None = None,
        default_limit: int = 64 * 1024,
        exempt: Collection[str] = EXEMPT,
    ) -> None:
        self.check = check
        self.limits = dict(limits or {})
        self.default_limit = default_limit
        self.exempt = tuple(exempt)

    def limit(self, method: str) -> int:
        return self.limits.get(method, self.default_limit)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(self.exempt):
            return handler
        return self._wrap(handler, method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        decode = handler.request_deserializer or (lambda raw: raw)
        limit = self.limit(method)
        check = self.check

        async def messages(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for raw in requests:
                if len(raw) > limit:
                    await _abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{method}: a request of {len(raw)} bytes is over this method's limit of {limit} bytes",
                    )
                try:
                    yield decode(raw)
                except DecodeError as e:
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{method}: malformed request: {e}")

        async def one(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            async for msg in messages(requests, context):
                return msg
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{method}: no request message")

        ser = handler.response_serializer
        h: Any = handler  # the aio behaviours are coroutines and async generators, not what the stubs say
        if handler.unary_unary is not None:
            inner_uu = h.unary_unary

            async def uu(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
                await check(context, method)
                return await inner_uu(await one(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(uu, request_deserializer=None, response_serializer=ser)
        if handler.unary_stream is not None:
            inner_us = h.unary_stream

            async def us(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context, method)
                async for out in inner_us(await one(requests, context), context):
                    yield out

            return grpc.stream_stream_rpc_method_handler(us, request_deserializer=None, response_serializer=ser)
        if handler.stream_unary is not None:
            inner_su = h.stream_unary

            async def su(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
                await check(context, method)
                return await inner_su(messages(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(su, request_deserializer=None, response_serializer=ser)
        inner_ss = h.stream_stream
        if inspect.isasyncgenfunction(inner_ss):

            async def ss_gen(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context, method)
                async for out in inner_ss(messages(requests, context), context):
                    yield out

            return grpc.stream_stream_rpc_method_handler(ss_gen, request_deserializer=None, response_serializer=ser)

        async def ss(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            await check(context, method)  # a handler that answers with context.write()
            await inner_ss(messages(requests, context), context)

        return grpc.stream_stream_rpc_method_handler(ss, request_deserializer=None, response_serializer=ser)
