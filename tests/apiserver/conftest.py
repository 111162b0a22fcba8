from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from stockade.lab.apiserver import ApiServer


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session
