"""The admin API over real gRPC on loopback: auth, explain, dry-run, lint, policies, follow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stockade.brain.admin.auth import Authorizer, Caller, TokensFileError, load_tokens
from stockade.brain.admin.reachability import compile_manifests
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.manifests import assign_addresses, build_cluster, node_names, read_documents
from stockade.v1 import admin_pb2, admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SOCK_SHOP = ROOT / "examples" / "sock-shop"
READ = "r" * 20
ADMIN = "a" * 20

FIX_CARTS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: carts-access-fixed, namespace: sock-shop}
spec:
  podSelector: {matchLabels: {name: carts}}
  ingress:
  - from: [{podSelector: {matchLabels: {name: front-end}}}, {podSelector: {matchLabels: {name: orders}}}]
    ports: [{protocol: TCP, port: 80}]
"""


@pytest.fixture
async def admin() -> AsyncIterator[tuple[admin_pb2_grpc.AdminStub, DropFeed, list[str]]]:
    cluster = build_cluster(read_documents([SOCK_SHOP]))
    assign_addresses(cluster.pods, node_names(3))
    engine = compile_manifests([str(SOCK_SHOP)])
    feed = DropFeed()
    resynced: list[str] = []

    def resync(node: str) -> bool:
        resynced.append(node)
        return True

    svc = AdminService(
        engine,
        Authorizer({READ: Caller("viewer", "read"), ADMIN: Caller("ops", "admin")}),
        objects=cluster.objects,
        feed=feed,
        resync=resync,
    )
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield admin_pb2_grpc.AdminStub(channel), feed, resynced
    finally:
        await channel.close()
        await server.stop(None)


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_refuses_without_credentials(admin: Any) -> None:
    stub, _, _ = admin
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListPolicies(admin_pb2.ListPoliciesRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=md("x" * 20))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_read_role_cannot_write(admin: Any) -> None:
    stub, _, resynced = admin
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Resync(admin_pb2.ResyncRequest(node="node-1"), metadata=md(READ))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert resynced == []
    resp = await stub.Resync(admin_pb2.ResyncRequest(node="node-1"), metadata=md(ADMIN))
    assert resp.ok and resynced == ["node-1"]


async def test_explain_names_the_reason_in_words(admin: Any) -> None:
    stub, _, _ = admin
    req = admin_pb2.ExplainRequest(to="sock-shop/carts", port=80, protocol="TCP")
    setattr(req, "from", "sock-shop/front-end")
    resp = await stub.Explain(req, metadata=md(READ))
    assert not resp.allowed
    assert "BLOCKED" in resp.text
    assert "DefaultDeny" in resp.text
    assert any("did you mean name=carts" in h for h in resp.hints)
    setattr(req, "from", "sock-shop/front-end")
    req.to = "sock-shop/catalogue"
    resp = await stub.Explain(req, metadata=md(READ))
    assert resp.allowed and "allowed by sock-shop/catalogue-access rule ingress[0]" in resp.text
    req.to = "sock-shop/nope"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Explain(req, metadata=md(READ))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_dry_run_lists_exactly_what_a_fix_opens(admin: Any) -> None:
    stub, _, _ = admin
    resp = await stub.DryRun(
        admin_pb2.DryRunRequest(manifests=[admin_pb2.Manifest(name="fix.yaml", content=FIX_CARTS)]),
        metadata=md(READ),
    )
    opened = {(getattr(c, "from"), c.to, c.port, c.protocol) for c in resp.opened}
    assert opened == {
        ("sock-shop/front-end", "sock-shop/carts", 80, "TCP"),
        ("sock-shop/orders", "sock-shop/carts", 80, "TCP"),
    }
    assert not resp.closed
    bad = await stub.DryRun(
        admin_pb2.DryRunRequest(
            manifests=[admin_pb2.Manifest(name="bad.yaml", content=FIX_CARTS.replace("port: 80", "port: 99999"))]
        ),
        metadata=md(READ),
    )
    assert not bad.opened and any("out of range" in r for r in bad.rejected)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.DryRun(
            admin_pb2.DryRunRequest(manifests=[admin_pb2.Manifest(name="x.yaml", content="a: [")]), metadata=md(READ)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "x.yaml" in (e.value.details() or "")


async def test_policies_and_lint(admin: Any) -> None:
    stub, _, _ = admin
    resp = await stub.ListPolicies(admin_pb2.ListPoliciesRequest(namespace="sock-shop"), metadata=md(READ))
    by_name = {p.name: p for p in resp.policies}
    assert by_name["catalogue-access"].selected_pods == ["sock-shop/catalogue"]
    assert by_name["catalogue-access"].nodes_needed == 1
    assert by_name["cart-access"].selected_pods == []
    assert any("did you mean name=carts" in w for w in by_name["cart-access"].warnings)
    lint = await stub.Lint(admin_pb2.LintRequest(), metadata=md(READ))
    assert any("cortex" in w for w in lint.warnings)


async def test_follow_streams_matching_records(admin: Any) -> None:
    stub, feed, _ = admin
    call = stub.FollowDrops(admin_pb2.FollowDropsRequest(namespace="sock-shop", port=80), metadata=md(READ))
    received: list[admin_pb2.DropRecord] = []

    async def read() -> None:
        async for rec in call:
            received.append(rec)
            return

    task = asyncio.create_task(read())
    deadline = asyncio.get_running_loop().time() + 30  # for a busy machine: it takes milliseconds
    while not feed.followers and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert feed.followers, "the follower never subscribed"  # records published before are not its
    feed.publish([admin_pb2.DropRecord(dst_pod="other/x", dport=80, protocol="TCP", direction="ingress")])
    feed.publish([admin_pb2.DropRecord(dst_pod="sock-shop/carts", dport=80, protocol="TCP", direction="ingress")])
    await asyncio.wait_for(task, 30)
    call.cancel()
    assert [r.dst_pod for r in received] == ["sock-shop/carts"]


def test_tokens_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "tokens.yaml"
    p.write_text("tokens: [{token: short, role: read}]")
    with pytest.raises(TokensFileError, match="shorter than 16"):
        load_tokens(p)
    p.write_text("tokens: [{token: aaaaaaaaaaaaaaaaaaaa, role: root}]")
    with pytest.raises(TokensFileError, match="role"):
        load_tokens(p)
    p.write_text(f"tokens: [{{name: ops, token: {ADMIN}, role: admin}}]")
    assert load_tokens(p)[ADMIN] == Caller("ops", "admin")


CNPS = """
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-carts-db}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {name: carts-db}}}}
  ingress: [{name: only-carts, action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: by-dns}
spec:
  tier: Admin
  priority: 6
  subject: {namespaces: {}}
  egress: [{action: Deny, to: [{domainNames: [example.com]}]}]
"""


async def test_cluster_policies_held_and_refused(tmp_path: Path) -> None:
    """ListPolicies lists ClusterNetworkPolicies (kind, tier, priority, subject pods), a refused
    one with why; a namespace's list has none (they are cluster-scoped)."""
    (tmp_path / "cnps.yaml").write_text(CNPS)
    paths = [str(SOCK_SHOP), str(tmp_path / "cnps.yaml")]
    engine = compile_manifests(paths)
    objects = build_cluster(read_documents(paths)).objects
    svc = AdminService(engine, Authorizer({READ: Caller("viewer", "read")}), objects=objects)
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            md = [("authorization", f"Bearer {READ}")]
            resp = await stub.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=md)
            cnps = {p.name: p for p in resp.policies if p.kind == "ClusterNetworkPolicy"}
            held = cnps["protect-carts-db"]
            assert (held.namespace, held.tier, held.priority, list(held.policy_types)) == ("", "Admin", 5, ["Ingress"])
            assert list(held.selected_pods) == ["sock-shop/carts-db"] and held.nodes_needed == 1
            assert held.rejected == ""
            refused = cnps["by-dns"]
            assert "domainNames" in refused.rejected and list(refused.selected_pods) == []
            assert [p.kind for p in resp.policies][:2] == ["ClusterNetworkPolicy"] * 2  # listed first
            assert all(p.kind == "NetworkPolicy" for p in resp.policies if p.namespace)
            one_ns = await stub.ListPolicies(admin_pb2.ListPoliciesRequest(namespace="sock-shop"), metadata=md)
            assert one_ns.policies and all(p.kind == "NetworkPolicy" for p in one_ns.policies)
            got = await stub.GetPolicy(admin_pb2.GetPolicyRequest(name="protect-carts-db"), metadata=md)
            assert got.kind == "ClusterNetworkPolicy"
    finally:
        await server.stop(None)
