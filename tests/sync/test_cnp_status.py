"""ClusterNetworkPolicy status.conditions (stockade.brain.cnp_status): the whole brain against the
lab's real API server, real agent clients over gRPC acking their models, the real
kubernetes-asyncio client and the real kubectl reading the status back.

Accepted is True for a policy the engine holds and False, naming the field, for one it refused
(served past the API server's validation by fault injection: the lab admits only what the engine
does); Realized counts the nodes hosting the subject's pods whose agents acked the policy; only
the leader writes, and only when the content changes."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import generate_latest
from sync_helpers import eventually, start_agent

from stockade.brain.leader import LEASE_NAME, ElectionConfig
from stockade.brain.main import Brain, BrainConfig
from stockade.brain.sources import api_client
from stockade.lab.apiserver import ApiServer

KUBECTL = shutil.which("kubectl")
GROUP, VERSION, PLURAL = "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"
LEASE_NS = "stockade-system"
Obj = dict[str, Any]


def pod(name: str, node: str, ip: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def objects() -> list[Obj]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NS}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-2"}},
        pod("web-1", "node-1", "10.60.1.2"),
        pod("web-2", "node-2", "10.60.2.2"),
    ]


def cnp(name: str, priority: int = 10, namespace: str = "demo") -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2, fault_injection=True)
    await srv.start("127.0.0.1", 0)
    for obj in objects():
        srv.put_object(obj)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def api(server: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.CustomObjectsApi]:
    ac = await api_client(str(server.kubeconfig(tmp_path / "kc")))
    try:
        yield k8s.CustomObjectsApi(ac)
    finally:
        await ac.close()


def brain_config(server: ApiServer, tmp_path: Path, election: ElectionConfig | None = None) -> BrainConfig:
    return BrainConfig(
        kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        admin_mtls_listen=None,
        http="127.0.0.1:0",
        insecure=True,
        election=election,
        cnp_status_interval=0.2,
    )


@pytest.fixture
async def brain(server: ApiServer, tmp_path: Path) -> AsyncIterator[Brain]:
    b = Brain(brain_config(server, tmp_path))  # no election: the only brain, always the writer
    await asyncio.wait_for(b.start(), 60)
    try:
        yield b
    finally:
        await b.stop()


async def read(api: k8s.CustomObjectsApi, name: str) -> Obj:
    obj: Obj = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    return obj


def by_type(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


async def conditions_until(api: k8s.CustomObjectsApi, name: str, want: dict[str, str], timeout: float = 60.0) -> Obj:
    """The object once its conditions hold ``want`` (type -> a part of "status reason message")."""
    seen: list[Obj] = []

    async def probe() -> bool:
        obj = await read(api, name)
        seen[:] = [obj]
        found = by_type(obj)
        return all(
            t in found and part in f"{found[t]['status']} {found[t]['reason']} {found[t]['message']}"
            for t, part in want.items()
        )

    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {want}; last: {seen[0].get('status') if seen else None}")
        await asyncio.sleep(0.1)
    return seen[0]


async def kubectl_conditions(server: ApiServer, tmp_path: Path, name: str) -> list[Obj]:
    assert KUBECTL, "kubectl is not installed"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(server.kubeconfig(tmp_path / "kc")),
        "get",
        "clusternetworkpolicies",
        name,
        "-o",
        "jsonpath={.status.conditions}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    found: list[Obj] = json.loads(out)
    return found


async def test_accepted_and_realized_as_agents_ack(
    server: ApiServer, tmp_path: Path, api: k8s.CustomObjectsApi, brain: Brain
) -> None:
    await api.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp("guard"))
    first = await conditions_until(api, "guard", {"Accepted": "True Accepted", "Realized": "False Pending"})
    conds = by_type(first)
    assert conds["Realized"]["message"] == (
        "realized on 0 of 2 nodes (those hosting the pods its subject selects); not yet on node-1, node-2"
    )
    assert all(c["observedGeneration"] == first["metadata"]["generation"] == 1 for c in conds.values())
    accepted_since = conds["Accepted"]["lastTransitionTime"]

    agents = [start_agent("node-1", f"127.0.0.1:{brain.grpc_port}", None)]
    try:
        one = await conditions_until(api, "guard", {"Realized": "realized on 1 of 2 nodes"})
        assert by_type(one)["Realized"]["message"].endswith("not yet on node-2")
        assert by_type(one)["Accepted"]["lastTransitionTime"] == accepted_since  # its status stayed
        agents.append(start_agent("node-2", f"127.0.0.1:{brain.grpc_port}", None))
        done = await conditions_until(api, "guard", {"Realized": "True Realized realized on 2 of 2 nodes"})

        # The real kubectl reads the same conditions.
        assert await kubectl_conditions(server, tmp_path, "guard") == done["status"]["conditions"]

        # Nothing changes: no more writes, however many rounds the writer makes meanwhile (an
        # unrelated engine change makes it read the engine again).
        writes, version = brain.cnp_status.writes, done["metadata"]["resourceVersion"]
        server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        rounds = brain.cnp_status.rounds
        await eventually(lambda: brain.cnp_status.rounds >= rounds + 5, what="five more rounds")
        assert brain.cnp_status.writes == writes
        assert (await read(api, "guard"))["metadata"]["resourceVersion"] == version
        exposed = generate_latest(brain.registry).decode()
        assert f"stockade_brain_cnp_status_written_total {float(writes)}" in exposed
        assert "stockade_brain_cnp_status_failed_total 0.0" in exposed

        # A new generation of the spec: observedGeneration follows.
        body = await read(api, "guard")
        body["spec"]["priority"] = 20
        await api.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "guard", body)

        async def observed_2() -> bool:
            conds = by_type(await read(api, "guard"))
            return bool(conds) and all(c["observedGeneration"] == 2 for c in conds.values())

        await until_async(observed_2, "observedGeneration 2")
        conds = by_type(await read(api, "guard"))
        assert conds["Accepted"]["lastTransitionTime"] == accepted_since
        assert conds["Realized"]["status"] == "True"
    finally:
        for a in agents:
            await a.shutdown()


async def until_async(probe: Any, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_policy_the_engine_refuses_is_not_accepted(
    server: ApiServer, api: k8s.CustomObjectsApi, brain: Brain
) -> None:
    bad = cnp("too-late", priority=1001)
    with pytest.raises(k8s.ApiException) as refused:  # the API server refuses it as the engine would
        await api.create_cluster_custom_object(GROUP, VERSION, PLURAL, bad)
    assert refused.value.status == 422
    bad["metadata"]["generation"] = 1
    server.inject_object(bad)  # an API server with a validation gap serves it anyway
    obj = await conditions_until(api, "too-late", {"Accepted": "False Invalid", "Realized": "False NotAccepted"})
    message = by_type(obj)["Accepted"]["message"]
    assert message.startswith("not enforced: spec.priority: ") and "1000" in message, message
    # Fixed: accepted, and (no agents here) pending on the subject's nodes.
    fixed = await read(api, "too-late")
    fixed["spec"]["priority"] = 5
    await api.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "too-late", fixed)
    await conditions_until(api, "too-late", {"Accepted": "True Accepted", "Realized": "0 of 2 nodes"})


async def test_no_subjects_is_realized_and_deleted_policies_are_let_go(api: k8s.CustomObjectsApi, brain: Brain) -> None:
    await api.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp("nobody", namespace="absent"))
    await conditions_until(api, "nobody", {"Accepted": "True", "Realized": "True NoSubjects realized on 0 of 0"})
    await api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "nobody")
    await eventually(lambda: "nobody" not in brain.cnp_status.wanted(), what="the policy gone from the writer")
    failed = brain.cnp_status.failed
    rounds = brain.cnp_status.rounds
    await eventually(lambda: brain.cnp_status.rounds >= rounds + 3, what="three more rounds")
    assert brain.cnp_status.failed == failed


async def test_a_brain_that_is_not_the_leader_writes_nothing(
    server: ApiServer, tmp_path: Path, api: k8s.CustomObjectsApi
) -> None:
    # The Lease is held by another identity, renewed (as far as this brain can tell) forever.
    server.put_object(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NS},
            "spec": {"holderIdentity": "another-brain", "leaseDurationSeconds": 3600},
        }
    )
    election = ElectionConfig(
        namespace=LEASE_NS, identity="follower", lease_duration=4.0, renew_deadline=3.0, retry=0.3
    )
    b = Brain(brain_config(server, tmp_path, election))
    await asyncio.wait_for(b.start(), 60)
    try:
        await api.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp("quiet"))
        await eventually(lambda: b.engine.cluster_policy("quiet") is not None, what="the policy in the engine")
        held = b.cnp_status.held_back
        await eventually(lambda: b.cnp_status.held_back >= held + 5, what="five rounds held back")
        assert not b.is_leader() and b.cnp_status.writes == 0
        assert "status" not in await read(api, "quiet")

        # Handed the Lease (released by its holder), the brain writes at once.
        lease = server.get_object("Lease", LEASE_NAME, LEASE_NS)
        lease["spec"] = {"holderIdentity": "", "leaseDurationSeconds": 1}
        server.put_object(lease)
        await eventually(b.is_leader, what="the brain leads")
        await conditions_until(api, "quiet", {"Accepted": "True", "Realized": "0 of 2 nodes"})
    finally:
        await b.stop()
