"""A TCP relay from a node namespace's loopback to the host's loopback.

Agents run inside their node's namespace but the brain listens on the host's loopback; the relay
listens on ``127.0.0.1:PORT`` inside each node and forwards every connection, byte for byte, to
``127.0.0.1:PORT`` here. TLS passes through untouched, so mTLS is end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from stockade.lab import nsenter

log = logging.getLogger(__name__)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def relay(netns: str, port: int) -> asyncio.AbstractServer:
    async def handle(r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            log.warning("relay %s:%d: nothing listens on the host side: %s", netns, port, e)
            w1.close()
            return
        await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))

    sock = nsenter.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return await asyncio.start_server(handle, sock=sock)
