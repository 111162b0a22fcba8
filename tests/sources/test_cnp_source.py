"""ClusterNetworkPolicies through the sources, against the lab's API server over HTTP with the real
kubernetes-asyncio client: listed before the sync when the CRD is installed; when it is not, the
other kinds sync without waiting, and the policies are watched once the CRD is created (one log
line each way); deleting the CRD passes its objects on as deleted. And into a real Engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from stockade.brain.engine import Engine
from stockade.brain.sources import CLUSTER_NETWORK_POLICY, Backoff, SourceEvent, Sources, api_client
from stockade.lab.apiserver import ApiServer

from .kit import Mirror, netpol, ns

CNP = CLUSTER_NETWORK_POLICY.kind
WATCHER_LOG = "stockade.brain.sources.watcher"


def cnp(name: str, priority: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": CNP,
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "a"}}},
            "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


async def until(what: Callable[[], bool], why: str, timeout: float = 30.0) -> None:
    """Wait for a condition (the deadline only guards against a hang)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not what():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {why}")
        await asyncio.sleep(0.02)


def fast_absent() -> Backoff:
    return Backoff(base=0.05, cap=0.2)  # look again at once: the test need not wait seconds


@pytest.fixture
async def bare() -> AsyncIterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2, crds=False)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def bare_client(bare: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    ac = await api_client(str(bare.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield ac
    finally:
        await ac.close()


def make_sources(ac: k8s.ApiClient, sink: Any) -> Sources:
    return Sources(
        ac, sink, inactivity_timeout=2.0, watch_timeout=30.0, request_timeout=5.0, absent_backoff=fast_absent
    )


def cnp_events(mirror: Mirror) -> list[tuple[str, str, str, int]]:
    return [
        (e.type, e.namespace, e.name, e.obj["spec"]["priority"])
        for e in mirror.events
        if e.kind == CNP and e.type != "synced"
    ]


async def test_listed_before_the_sync_and_watched(server: ApiServer, client: k8s.ApiClient, mirror: Mirror) -> None:
    server.put_object(cnp("first"))
    async with make_sources(client, mirror):
        await until(lambda: mirror.synced_at is not None, "the sync")
        before_sync = mirror.events[: mirror.synced_at]
        assert [(e.type, e.kind, e.namespace, e.name) for e in before_sync] == [("upsert", CNP, "", "first")]
        assert before_sync[0].obj["apiVersion"] == "policy.networking.k8s.io/v1alpha2"

        server.put_object(cnp("second", 20))
        server.put_object(cnp("first", 5))
        server.delete_object(CNP, "second")
        await until(lambda: len(cnp_events(mirror)) == 4, "the watch's events")
    assert cnp_events(mirror) == [
        ("upsert", "", "first", 10),
        ("upsert", "", "second", 20),
        ("upsert", "", "first", 5),
        ("delete", "", "second", 20),
    ]
    assert mirror.errors == []


async def test_without_the_crd_the_rest_syncs_and_the_policies_follow_the_crd(
    bare: ApiServer, bare_client: k8s.ApiClient, mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    bare.put_object(ns("a"))
    bare.put_object(netpol("a", "deny"))
    src = make_sources(bare_client, mirror)
    async with src:
        await until(lambda: mirror.synced_at is not None, "the sync without the CRD")
        assert {(e.kind, e.name) for e in mirror.events[: mirror.synced_at]} >= {("NetworkPolicy", "deny")}
        assert src.stats[CNP]["absent"] >= 1
        not_served = [r for r in caplog.records if "not served" in r.getMessage()]
        await until(lambda: src.stats[CNP]["absent"] >= 3, "looking again")
        assert len([r for r in caplog.records if "not served" in r.getMessage()]) == len(not_served) == 1

        # NetworkPolicies do not wait: a change is passed on while the CRD is still absent
        bare.put_object(netpol("a", "more"))
        await until(lambda: any(e.name == "more" for e in mirror.events), "a NetworkPolicy after the sync")

        bare.install_crds()  # as `kubectl apply -f deploy/crds/` would
        bare.put_object(cnp("late"))
        await until(lambda: ("upsert", "", "late", 10) in cnp_events(mirror), "the policy made after the CRD")
        assert len([r for r in caplog.records if "now served" in r.getMessage()]) == 1
        bare.put_object(cnp("late", 7))
        await until(lambda: ("upsert", "", "late", 7) in cnp_events(mirror), "a change, by the watch")

        # the CRD goes: its objects are passed on as deleted, and it is looked for again
        bare.delete_object("CustomResourceDefinition", "clusternetworkpolicies.policy.networking.k8s.io")
        await until(lambda: cnp_events(mirror)[-1][:3] == ("delete", "", "late"), "the delete")
        await until(lambda: len([r for r in caplog.records if "not served" in r.getMessage()]) == 2, "the log")
    assert mirror.synced_at is not None and mirror.errors == []
    assert (CNP, "", "late") not in mirror.state


async def test_a_real_engine_takes_the_policies(bare: ApiServer, bare_client: k8s.ApiClient) -> None:
    engine = Engine()
    synced = asyncio.Event()

    async def consume(ev: SourceEvent) -> None:  # what the brain's consumer does with each event
        if ev.type == "synced":
            synced.set()
        elif ev.type == "upsert":
            engine.upsert(ev.obj)
        else:
            engine.delete(ev.kind, ev.namespace or None, ev.name)

    bare.put_object(ns("a"))
    async with make_sources(bare_client, consume):
        await asyncio.wait_for(synced.wait(), 30)
        assert engine.cluster_policy_names() == []
        bare.install_crds()
        bare.put_object(cnp("deny-a"))
        await until(lambda: engine.cluster_policy_names() == ["deny-a"], "the engine to hold the policy")
        assert engine.rejections() == []
        bare.delete_object(CNP, "deny-a")
        await until(lambda: engine.cluster_policy_names() == [], "the engine to drop the policy")
