"""Two real brains against the lab API server (issue 13, items 4 and 7): exactly one holds the
Lease and writes Events; the real kubectl shows a refused NetworkPolicy's Event once, its count
growing on repeats; when the leader stops, the other brain takes the Lease and writes the next
Event; the Lease reads back with kubernetes-asyncio, and its own LeaderElection candidate
respects a Lease that a brain holds."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
from prometheus_client import generate_latest

from stockade.brain.events import POLICY_REJECTED
from stockade.brain.leader import LEASE_NAME, ElectionConfig, LeaderElector
from stockade.brain.main import Brain, BrainConfig
from stockade.brain.sources import api_client
from stockade.lab.apiserver import ApiServer

KUBECTL = shutil.which("kubectl")
LEASE_NS = "stockade-system"
TEAM = "team"
# Short but ordered like the defaults (retry < renew deadline < lease duration); nothing below
# asserts on how long anything took, only on what happened, with generous deadlines.
FAST = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry": 0.3}

T = TypeVar("T")


async def until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def policy(ports: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "wide", "namespace": TEAM},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 1000 + i} for i in range(ports)]}]},
    }


async def kubectl_events(kubeconfig: Path, name: str) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is not installed"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        "get",
        "events",
        "-n",
        TEAM,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


@pytest.fixture
async def api(server: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    ac = await api_client(str(server.kubeconfig(tmp_path / "kc")))
    core = k8s.CoreV1Api(ac)
    for ns in (LEASE_NS, TEAM):
        await core.create_namespace({"metadata": {"name": ns}})
    try:
        yield ac
    finally:
        await ac.close()


@pytest.fixture
async def brains(server: ApiServer, tmp_path: Path, api: k8s.ApiClient) -> AsyncIterator[dict[str, Brain]]:
    made: dict[str, Brain] = {}
    for identity in ("brain-a", "brain-b"):
        made[identity] = Brain(
            BrainConfig(
                kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
                listen="127.0.0.1:0",
                admin_listen="127.0.0.1:0",
                admin_mtls_listen=None,
                http="127.0.0.1:0",
                insecure=True,
                election=ElectionConfig(namespace=LEASE_NS, identity=identity, **FAST),
            )
        )
    await asyncio.gather(*(b.start() for b in made.values()))
    try:
        yield made
    finally:
        for b in made.values():
            await b.stop()


def leaders(brains: dict[str, Brain]) -> list[str]:
    return [name for name, b in brains.items() if b.is_leader()]


def leader_metric(b: Brain) -> str:
    lines = generate_latest(b.registry).decode().splitlines()
    return next(line for line in lines if line.startswith("stockade_brain_leader "))


async def test_one_leader_writes_deduplicated_events_and_hands_over(
    server: ApiServer, tmp_path: Path, api: k8s.ApiClient, brains: dict[str, Brain]
) -> None:
    kc = tmp_path / "kc"

    async def one_leader() -> str | None:
        found = leaders(brains)
        return found[0] if len(found) == 1 else None

    first = await until("one leader", one_leader)
    other = next(n for n in brains if n != first)
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, LEASE_NS)
    assert lease.spec.holder_identity == first and lease.spec.lease_duration_seconds == 4
    assert leader_metric(brains[first]) == "stockade_brain_leader 1.0"
    assert leader_metric(brains[other]) == "stockade_brain_leader 0.0"

    net = k8s.NetworkingV1Api(api)
    await net.create_namespaced_network_policy(TEAM, policy(1001))  # over the 1000-ports limit

    async def events(count: int) -> list[dict[str, Any]] | None:
        found = await kubectl_events(kc, "wide")
        return found if found and max(e.get("count", 1) for e in found) >= count else None

    (ev,) = await until("the PolicyRejected Event", lambda: events(1))
    stored = await net.read_namespaced_network_policy("wide", TEAM)
    assert ev["reason"] == POLICY_REJECTED and ev["type"] == "Warning" and ev["count"] == 1
    assert "spec.ingress[0].ports" in ev["message"] and "over the limit of 1000" in ev["message"]
    assert ev["source"] == {"component": "stockade-brain"} and ev["reportingInstance"] == first
    assert ev["involvedObject"] == {
        "kind": "NetworkPolicy",
        "namespace": TEAM,
        "name": "wide",
        "uid": stored.metadata.uid,
        "apiVersion": "networking.k8s.io/v1",
        "resourceVersion": stored.metadata.resource_version,
    }

    async def flip(ports: int) -> None:
        body = copy.deepcopy(policy(ports))
        await net.replace_namespaced_network_policy("wide", TEAM, body)

    for repeat in (2, 3):  # accepted, then refused again the same way: the same Event, counted
        await flip(1)
        await until("the policy accepted", lambda: _accepted(brains))
        await flip(1001)
        found = await until(f"count {repeat}", lambda r=repeat: events(r))  # type: ignore[misc]
        assert len(found) == 1 and found[0]["count"] == repeat, found
        assert found[0]["metadata"]["name"] == ev["metadata"]["name"]
    assert brains[other].recorder.created == brains[other].recorder.patched == 0  # the follower wrote nothing

    await brains[first].stop()  # releases the Lease
    await until(f"{other} the leader", lambda: _is(brains[other]))
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, LEASE_NS)
    assert lease.spec.holder_identity == other

    # The new leader reports what is refused now, and writes the next Events.
    async def by_new_leader() -> list[dict[str, Any]] | None:
        found = [e for e in await kubectl_events(kc, "wide") if e.get("reportingInstance") == other]
        return found or None

    (mine,) = await until("an Event from the new leader", by_new_leader)
    assert mine["reason"] == POLICY_REJECTED and mine["count"] == 1
    await flip(1)
    await until("the policy accepted", lambda: _accepted({other: brains[other]}))
    await flip(1001)

    async def bumped() -> list[dict[str, Any]] | None:
        found = [e for e in await kubectl_events(kc, "wide") if e.get("reportingInstance") == other]
        return found if found and found[0]["count"] == 2 else None

    assert len(await until("the new leader's Event counted", bumped)) == 1


async def _accepted(brains: dict[str, Brain]) -> bool:
    return all(
        not any(r.object == f"NetworkPolicy {TEAM}/wide" for r in b.engine.rejections()) for b in brains.values()
    )


async def _is(b: Brain) -> bool:
    return b.is_leader()


async def test_kubernetes_asyncio_candidate_respects_a_brains_lease(api: k8s.ApiClient) -> None:
    """The real protocol: kubernetes-asyncio's own LeaderElection, on the same Lease, does not
    take it while a brain renews it, and takes it once the brain released it; then the brain
    stays a follower while that candidate holds it."""
    ours = LeaderElector(api, ElectionConfig(namespace=LEASE_NS, identity="brain-a", **FAST))
    task = asyncio.create_task(ours.run())
    try:
        await until("the brain leads", lambda: _leads(ours))
        lock = LeaseLock(LEASE_NAME, LEASE_NS, "other-controller", api)
        cfg = electionconfig.Config(lock, 4, 3, 1, lambda: asyncio.sleep(0), None)  # its timers are unused here
        theirs = leaderelection.LeaderElection(cfg)
        assert await theirs.try_acquire_or_renew() is False
        assert ours.is_leader
        await ours.release()
        assert await theirs.try_acquire_or_renew() is True  # a released Lease is free at once
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, LEASE_NS)
        assert lease.spec.holder_identity == "other-controller"
        for _ in range(5):  # it renews; the brain, trying meanwhile, stays a follower
            await asyncio.sleep(0.4)
            assert await theirs.try_acquire_or_renew() is True
            assert not ours.is_leader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _leads(e: LeaderElector) -> bool:
    return e.is_leader


async def test_a_lease_without_renewals_is_taken_over(api: k8s.ApiClient) -> None:
    """A leader that stops renewing (crashed, partitioned: no release) loses the Lease to the
    other after the lease duration, and knows it is no longer the leader before that."""
    a = LeaderElector(api, ElectionConfig(namespace=LEASE_NS, identity="a", **FAST))
    b = LeaderElector(api, ElectionConfig(namespace=LEASE_NS, identity="b", **FAST))
    assert await a.try_acquire_or_renew() is True and a.is_leader
    assert await b.try_acquire_or_renew() is False and not b.is_leader
    task = asyncio.create_task(b.run())
    try:
        await until("b takes over", lambda: _leads(b))
        assert not a.is_leader  # its renew deadline passed long before
        assert await a.try_acquire_or_renew() is False
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, LEASE_NS)
        assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
