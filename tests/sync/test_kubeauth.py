"""`KubeAuthorizer` when the API server cannot answer: the caller is refused with UNAVAILABLE
(fail closed, retry later), saying the brain could not check it, and nothing is kept, so the
next call asks again."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from kubernetes_asyncio import client as k8s

from stockade.brain.admin.kubeauth import KubeAuthorizer, KubeUser
from stockade.brain.tokenauth import TokenRefused


@pytest.fixture
async def dead_api() -> AsyncIterator[k8s.ApiClient]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        api = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{sock.getsockname()[1]}"))
        try:
            yield api
        finally:
            await api.close()


async def test_an_unreachable_api_server_fails_closed_and_is_asked_again(dead_api: k8s.ApiClient) -> None:
    auth = KubeAuthorizer(dead_api)
    for expected in (1, 2):
        with pytest.raises(TokenRefused) as e:
            await auth.user("some-token-0123456789")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        assert e.value.message.startswith("the brain cannot check the caller")
        assert auth.token_reviews == expected
    with pytest.raises(TokenRefused) as e:
        await auth.allowed(KubeUser("alice", "", ("ops",)), "read")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_token_too_long_to_be_one_is_refused_without_asking(dead_api: k8s.ApiClient) -> None:
    auth = KubeAuthorizer(dead_api)
    with pytest.raises(TokenRefused) as e:
        await auth.user("x" * 20_000)
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and auth.token_reviews == 0
