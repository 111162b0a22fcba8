"""What unauthenticated admin calls cost the brain: 1,000 calls of 4 MiB each without credentials
(issue 11 measured ~420 MB of growth when they were parsed before being authenticated).

The admin server (the real service behind the real guard, as the brain builds it) runs in this
process; the flood comes from a child process so its buffers are not counted. Prints the RSS
growth and its ratio to the target (≤ 50 MB). Run: .venv/bin/python benchmarks/admin_unauth_flood.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc

from stockade.brain import servers
from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.engine import Engine
from stockade.v1 import admin_pb2_grpc

TARGET_MB = 50.0
CALLS, SIZE, PARALLEL = 1000, 4 << 20, 50

CLIENT = f"""
import asyncio, sys, grpc
async def main():
    async with grpc.aio.insecure_channel(sys.argv[1], options=[("grpc.max_send_message_length", {SIZE * 2})]) as ch:
        call = ch.unary_unary("/stockade.v1.Admin/ListPolicies", request_serializer=None, response_deserializer=None)
        payload = b"\\xff" * {SIZE}
        codes = {{}}
        async def one():
            try:
                await call(payload, timeout=30)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as e:
                codes[e.code().name] = codes.get(e.code().name, 0) + 1
        for _ in range({CALLS} // {PARALLEL}):
            await asyncio.gather(*(one() for _ in range({PARALLEL})))
        print(codes)
asyncio.run(main())
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    auth = Authorizer({"t" * 20: Caller("ops", "admin")})
    server = grpc.aio.server(options=servers.ADMIN_OPTIONS, interceptors=[servers.admin_guard(auth)])
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(Engine(), auth, objects=list), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = rss_mb()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, f"127.0.0.1:{port}", stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    after = rss_mb()
    await server.stop(None)
    growth = after - before
    print(f"{CALLS} unauthenticated calls of {SIZE >> 20} MiB: {out.decode().strip()}")
    print(f"brain RSS growth: {growth:.1f} MB (target ≤ {TARGET_MB:.0f} MB; ratio {growth / TARGET_MB:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
