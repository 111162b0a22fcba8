"""TokenRequest and TokenReview on the lab API server, through the real kubernetes-asyncio client,
and the brain's `TokenAuthenticator` on top of them (issue 13, node identity from tokens)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.brain.sources import api_client
from stockade.brain.tokenauth import TokenAuthenticator, TokenRefused
from stockade.lab.apiserver import ApiServer

NS = "stockade-system"
SA = "stockade-agent"


def pod(name: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "agent"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


@pytest.fixture
async def api(server: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for node in ("node-a", "node-b"):
        server.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    server.put_object(pod("agent-a", "node-a"))
    server.put_object(pod("agent-b", "node-b"))
    ac = await api_client(str(server.kubeconfig(tmp_path / "kc")))
    try:
        yield ac
    finally:
        await ac.close()


async def request_token(api: k8s.ApiClient, pod_name: str, audience: str = "stockade", sa: str = SA) -> str:
    uid = (await k8s.CoreV1Api(api).read_namespaced_pod(pod_name, NS)).metadata.uid
    body = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(
            audiences=[audience],
            expiration_seconds=3600,
            bound_object_ref=k8s.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod_name, uid=uid),
        )
    )
    answer = await k8s.CoreV1Api(api).create_namespaced_service_account_token(sa, NS, body)
    assert answer.status.expiration_timestamp is not None
    return str(answer.status.token)


async def review(api: k8s.ApiClient, token: str, audiences: list[str]) -> k8s.V1TokenReviewStatus:
    body = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token, audiences=audiences))
    return (await k8s.AuthenticationV1Api(api).create_token_review(body)).status


async def test_token_review_answers_as_the_real_api_server(api: k8s.ApiClient) -> None:
    token = await request_token(api, "agent-a")
    assert token.count(".") == 2  # JWT-shaped
    st = await review(api, token, ["stockade"])
    assert st.authenticated is True
    assert st.audiences == ["stockade"]
    assert st.user.username == f"system:serviceaccount:{NS}:{SA}"
    assert f"system:serviceaccounts:{NS}" in st.user.groups
    extra = st.user.extra
    assert extra["authentication.kubernetes.io/pod-name"] == ["agent-a"]
    assert extra["authentication.kubernetes.io/node-name"] == ["node-a"]
    assert len(extra["authentication.kubernetes.io/pod-uid"]) == 1


async def test_token_review_refuses_audience_garbage_expiry_and_deleted_pods(
    api: k8s.ApiClient, server: ApiServer
) -> None:
    token = await request_token(api, "agent-a")
    other = await review(api, token, ["another-audience"])
    assert not other.authenticated and "audience" in other.error
    garbage = await review(api, "not.a.token", ["stockade"])
    assert not garbage.authenticated and garbage.error
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert not (await review(api, tampered, ["stockade"])).authenticated
    expired, _ = server.tokens.issue(NS, SA, ["stockade"], expiration_seconds=-5, pod="agent-a")
    st = await review(api, expired, ["stockade"])
    assert not st.authenticated and "expired" in st.error
    server.delete_object("Pod", "agent-a", NS)
    st = await review(api, token, ["stockade"])
    assert not st.authenticated and "no longer exists" in st.error


async def test_token_request_enforces_the_minimum_lifetime(api: k8s.ApiClient) -> None:
    body = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=["x"], expiration_seconds=60))
    with pytest.raises(ApiException) as e:
        await k8s.CoreV1Api(api).create_namespaced_service_account_token(SA, NS, body)
    assert e.value.status == 422


async def test_authenticator_binds_tokens_to_nodes_and_refuses_the_rest(api: k8s.ApiClient, server: ApiServer) -> None:
    auth = TokenAuthenticator(api, audience="stockade", service_accounts=[f"{NS}:{SA}"])
    ident = await auth.verify(await request_token(api, "agent-b"))
    assert (ident.node, ident.pod, ident.service_account) == ("node-b", "agent-b", SA)

    async def refused(token: str) -> TokenRefused:
        with pytest.raises(TokenRefused) as e:
            await auth.verify(token)
        return e.value

    wrong_aud = await refused(await request_token(api, "agent-a", audience="https://kubernetes.default.svc"))
    assert wrong_aud.code == grpc.StatusCode.UNAUTHENTICATED
    assert (await refused("garbage")).code == grpc.StatusCode.UNAUTHENTICATED
    expired, _ = server.tokens.issue(NS, SA, ["stockade"], expiration_seconds=-5, pod="agent-a")
    e = await refused(expired)
    assert e.code == grpc.StatusCode.UNAUTHENTICATED and "expired" in e.message
    stranger = await refused(await request_token(api, "agent-a", sa="default"))
    assert stranger.code == grpc.StatusCode.PERMISSION_DENIED and "default" in stranger.message
    unbound, _ = server.tokens.issue(NS, SA, ["stockade"])
    assert (await refused(unbound)).code == grpc.StatusCode.PERMISSION_DENIED


async def test_authenticator_caches_and_falls_back_to_the_pods_node(api: k8s.ApiClient, server: ApiServer) -> None:
    auth = TokenAuthenticator(api, audience="stockade", service_accounts=[f"{NS}:{SA}"])
    token = await request_token(api, "agent-a")
    before = server.tokens.reviews
    for _ in range(5):
        assert (await auth.verify(token)).node == "node-a"
    assert server.tokens.reviews - before == 1  # one review, then the cache
    # An API server older than 1.30 adds no node extra: the bound pod's spec.nodeName decides.
    server.tokens.node_info = False
    server.put_object(pod("agent-c", "node-b"))
    ident = await auth.verify(await request_token(api, "agent-c"))
    assert (ident.node, ident.pod) == ("node-b", "agent-c")
