"""The CLI given several brains (``--brain H:P,H:P``, or the lab's ``admin.json`` list): the first
that answers serves, so a stopped brain does not stop the operator's tools."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.reachability import compile_manifests
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.cli.client import ConnectionError, grpc_target
from stockade.manifests import build_cluster, read_documents
from stockade.v1 import admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SOCK_SHOP = ROOT / "examples" / "sock-shop"
TOKEN = "a" * 20


def test_lists_become_one_target_that_grpc_tries_in_order() -> None:
    assert grpc_target("127.0.0.1:7444") == "127.0.0.1:7444"
    assert grpc_target("stockade-brain.stockade-system.svc:7444") == "stockade-brain.stockade-system.svc:7444"
    assert grpc_target("10.0.0.1:7444,10.0.0.2:7444") == "ipv4:10.0.0.1:7444,10.0.0.2:7444"
    assert grpc_target("[fd00::1]:7444,[fd00::2]:7444") == "ipv6:[fd00::1]:7444,[fd00::2]:7444"
    for bad, says in (
        ("10.0.0.1:7444,[fd00::2]:7444", "cannot be mixed"),
        ("10.0.0.1:7444,brain:7444", "one name"),
        ("10.0.0.1:7444,10.0.0.2", "HOST:PORT"),
    ):
        with pytest.raises(ConnectionError, match=says):
            grpc_target(bad)


@pytest.fixture
def dead_port() -> Iterator[int]:
    # Bound, never listening, for the whole test: connections are refused. (A port closed again
    # at once is free for anything to take, a client's own source port included, and a client
    # whose source port is the one it dials connects to itself.)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
async def admin_port() -> AsyncIterator[int]:
    cluster = build_cluster(read_documents([SOCK_SHOP]))
    svc = AdminService(
        compile_manifests([str(SOCK_SHOP)]),
        Authorizer({TOKEN: Caller("ops", "admin")}),
        objects=cluster.objects,
        feed=DropFeed(),
    )
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def cli(*args: str, lab_dir: Path) -> tuple[int, str, str]:
    env = {**os.environ, "STOCKADE_LAB_DIR": str(lab_dir)}
    env.pop("STOCKADE_BRAIN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stockade.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_first_brain_that_answers_serves(admin_port: int, dead_port: int, tmp_path: Path) -> None:
    down = dead_port
    both = f"127.0.0.1:{down},127.0.0.1:{admin_port}"
    code, out, err = await cli("policies", "--brain", both, "--token", TOKEN, "--insecure", lab_dir=tmp_path)
    assert code == 0, err
    assert "carts" in out
    alone = f"127.0.0.1:{down}"
    code, _, err = await cli("policies", "--brain", alone, "--token", TOKEN, "--insecure", lab_dir=tmp_path)
    assert code == 3 and "cannot reach the brain" in err  # the dead one alone: said, not traced back


async def test_the_labs_brain_list_is_used(admin_port: int, dead_port: int, tmp_path: Path) -> None:
    down = dead_port
    (tmp_path / "admin.json").write_text(
        f'{{"brain": "127.0.0.1:{down}", "brains": ["127.0.0.1:{down}", "127.0.0.1:{admin_port}"], "token": "{TOKEN}"}}'
    )
    code, out, err = await cli("policies", "--insecure", lab_dir=tmp_path)
    assert code == 0, err
    assert "carts" in out
