"""The status writer alone against the lab's real API server over HTTP (real kubernetes-asyncio),
fed a fixed engine snapshot: another implementation's condition is kept, a write happens only
when the content changes, and a missing CRD or policy is no failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from stockade.brain.cnp_status import CnpStatusWriter, PolicyState
from stockade.brain.fanout.status import PolicyRealization
from stockade.brain.sources import api_client
from stockade.lab.apiserver import ApiServer

GROUP, VERSION, PLURAL = "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"
THEIRS = {
    "type": "example.com/Programmed",
    "status": "True",
    "reason": "Done",
    "message": "by another implementation",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def cnp(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Baseline",
            "priority": 1,
            "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


class Fixed:
    """An engine snapshot and realization the test sets."""

    def __init__(self) -> None:
        self.states: list[PolicyState] = []
        self.applied = 0

    async def snapshot(self) -> list[PolicyState]:
        return list(self.states)

    def realize(self, name: str, nodes: Iterable[str]) -> PolicyRealization:
        needed = sorted(nodes)
        return PolicyRealization(name, len(needed), self.applied, tuple(needed[self.applied :]))


@pytest.fixture
async def bare() -> AsyncIterator[ApiServer]:
    srv = ApiServer(crds=False)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


async def test_writes_only_changes_and_keeps_other_conditions(client: k8s.ApiClient) -> None:
    api = k8s.CustomObjectsApi(client)
    made = await api.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp("base"))
    meta = made["metadata"]
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        "base",
        {"status": {"conditions": [THEIRS]}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )
    fixed = Fixed()
    fixed.states = [PolicyState("base", meta["uid"], meta["generation"], None, frozenset({"n1", "n2"}))]
    writer = CnpStatusWriter(lambda: True, fixed.snapshot, fixed.realize)
    writer.attach(client)

    await writer.round()
    got = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "base")
    conds = {c["type"]: c for c in got["status"]["conditions"]}
    assert conds[THEIRS["type"]] == THEIRS and writer.writes == 1
    assert conds["Realized"]["reason"] == "Pending" and "0 of 2" in conds["Realized"]["message"]
    since = conds["Accepted"]["lastTransitionTime"]

    await writer.round()  # nothing changed: no request at all
    assert writer.writes == 1
    version = got["metadata"]["resourceVersion"]
    assert (await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "base"))["metadata"][
        "resourceVersion"
    ] == version

    fixed.applied = 2
    await writer.round()
    got = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "base")
    conds = {c["type"]: c for c in got["status"]["conditions"]}
    assert writer.writes == 2 and conds["Realized"]["status"] == "True"
    assert conds["Accepted"]["lastTransitionTime"] == since and conds[THEIRS["type"]] == THEIRS

    # A follower writes nothing, though the content changed.
    follower = CnpStatusWriter(lambda: False, fixed.snapshot, fixed.realize)
    follower.attach(client)
    fixed.applied = 1
    await follower.round()
    assert follower.writes == 0 and follower.held_back == 1
    got = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "base")
    assert {c["type"]: c["status"] for c in got["status"]["conditions"]}["Realized"] == "True"
    await writer.round()  # the leader does write it
    got = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "base")
    assert {c["type"]: c["status"] for c in got["status"]["conditions"]}["Realized"] == "False"


async def test_a_missing_crd_or_policy_is_no_failure(bare: ApiServer, tmp_path: Path) -> None:
    ac = await api_client(str(bare.kubeconfig(tmp_path / "kc")))
    try:
        fixed = Fixed()
        fixed.states = [PolicyState("gone", "u", 1, None, frozenset())]
        writer = CnpStatusWriter(lambda: True, fixed.snapshot, fixed.realize)
        writer.attach(ac)
        await writer.round()
        await writer.round()
        assert writer.failed == 0 and writer.writes == 0
    finally:
        await ac.close()
