"""The CLI prints what agents sent with every control character escaped: `drops follow` and
`drops top` over the real admin API (real gRPC), and the escaping itself."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.brain.engine import Engine
from stockade.cli.commands import admin as cli_admin
from stockade.cli.printable import printable
from stockade.v1 import admin_pb2, admin_pb2_grpc

TOKEN = "r" * 20
MD = [("authorization", f"Bearer {TOKEN}")]
CLEAR = "\x1b[2J\x1b]0;pwned\x07"  # clear the screen, retitle the terminal


class _Drops:
    """A drop store answering with hostile values (as if Redis held them)."""

    async def top(self, window: str, group_by: list[str], limit: int) -> list[dict[str, object]]:
        return [{"dst_pod": f"db{CLEAR}", "dport": "5432", "count": 3}]

    async def refused_by_node(self, window: str) -> list[dict[str, object]]:
        return [{"node": f"n{CLEAR}", "reason": "quota", "count": 7}, {"node": "n-2", "reason": "invalid", "count": 2}]


@pytest.fixture
async def admin() -> AsyncIterator[tuple[admin_pb2_grpc.AdminStub, DropFeed]]:
    feed = DropFeed()
    svc = AdminService(Engine(), Authorizer({TOKEN: Caller("ops", "read")}), objects=list, drops=_Drops(), feed=feed)
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield admin_pb2_grpc.AdminStub(ch), feed
    finally:
        await server.stop(0)


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("web-1 10.0.0.1 TCP") == "web-1 10.0.0.1 TCP"
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\ny\rz\x00") == "x\\x0ay\\x0dz\\x00"
    assert printable("\x9b2J") == "\\x9b2J"  # C1 control sequence introducer
    assert printable("evil\u202egnp.exe") == "evil\\u202egnp.exe"  # right-to-left override
    assert printable("a\\x1b") == "a\\\\x1b"  # a shown escape is never one that was sent
    assert printable("prod/wëb") == "prod/wëb"  # printable non-ASCII stays readable
    for ch in map(chr, range(0x110000)):
        if not ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            assert printable(ch).isprintable()


async def _follow(stub: admin_pb2_grpc.AdminStub, feed: DropFeed, rec: admin_pb2.DropRecord, output: str) -> None:
    args = argparse.Namespace(namespace=None, pod=None, direction=None, protocol=None, port=None, count=1,
                              duration=10, output=output)  # fmt: skip
    for _ in range(200):  # the previous follower, if any, gone
        if not feed.followers:
            break
        await asyncio.sleep(0.01)
    task = asyncio.create_task(cli_admin._drops_follow(stub, MD, 5, args))
    for _ in range(200):
        if feed.followers:
            break
        await asyncio.sleep(0.01)
    feed.publish([rec])
    assert await asyncio.wait_for(task, 10) == 0


async def test_follow_escapes_agent_fields(admin: tuple[admin_pb2_grpc.AdminStub, DropFeed],
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    stub, feed = admin
    rec = admin_pb2.DropRecord(time=1.7e9, node=f"node{CLEAR}", direction="ingress", src="10.0.0.1",
                               dst=f"10.0.0.2{CLEAR}", protocol="TCP\nforged line", sport=1, dport=80,
                               policies=[f"prod/p{CLEAR}"])  # fmt: skip
    await _follow(stub, feed, rec, "table")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.count("\n") == 1  # one record, one line: no forged second line
    assert "node\\x1b[2J\\x1b]0;pwned\\x07" in out and "TCP\\x0aforged line" in out
    await _follow(stub, feed, rec, "json")
    out = capsys.readouterr().out
    assert "\x1b" not in out and json.loads(out)["node"] == rec.node


async def test_top_escapes_and_says_what_was_refused(admin: tuple[admin_pb2_grpc.AdminStub, DropFeed],
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    stub, _ = admin
    args = argparse.Namespace(window="15m", by="dst_pod,dport", limit=5, output="table")
    assert await cli_admin._drops_top(stub, MD, 5, args) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "db\\x1b[2J" in out
    assert "node n\\x1b[2J\\x1b]0;pwned\\x07: 7 events refused over its quota" in out
    assert "node n-2: 2 invalid events refused" in out
    for output in ("json", "yaml"):
        args.output = output
        assert await cli_admin._drops_top(stub, MD, 5, args) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "refused" in out
