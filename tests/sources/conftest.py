from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from stockade.brain.sources import Sources, api_client
from stockade.lab.apiserver import ApiServer

from .kit import Mirror


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def client(server: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    ac = await api_client(str(server.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield ac
    finally:
        await ac.close()


@pytest.fixture
async def mirror() -> Mirror:
    return Mirror()


@pytest.fixture
async def sources(client: k8s.ApiClient, mirror: Mirror) -> AsyncIterator[Sources]:
    src = Sources(client, mirror, inactivity_timeout=2.0, watch_timeout=30.0, request_timeout=5.0)
    try:
        yield src
    finally:
        await src.stop()
