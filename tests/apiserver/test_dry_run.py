"""dryRun=All as the real server answers it: validated in full, answered as if done (a created
object has its uid and creationTimestamp, no resourceVersion), nothing stored, no allocation kept,
no watch event; a delete's dry run may come in its DeleteOptions body. Raw HTTP and the real
kubernetes-asyncio client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiServer

Obj = dict[str, Any]
SERVICES = "/api/v1/namespaces/demo/services"
POLICIES = "/apis/networking.k8s.io/v1/namespaces/demo/networkpolicies"


def service(name: str, node_port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": node_port}]},
    }


@pytest.fixture
async def demo(server: ApiServer) -> ApiServer:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    return server


async def send(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Obj]:
    data = None if body is None else json.dumps(body)
    async with http.request(method, path, data=data, params=params) as r:
        return r.status, await r.json()


async def test_dry_run_stores_nothing_and_keeps_no_allocation(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    watcher = demo.store.watch("services", "", None, demo.resource_version)
    before = demo.resource_version
    status, answer = await send(http, "POST", SERVICES, service("web", 30001), dryRun="All")
    assert status == 201
    assert answer["metadata"]["uid"] and answer["metadata"]["creationTimestamp"]
    assert "resourceVersion" not in answer["metadata"]
    assert answer["spec"]["clusterIP"].startswith("10.96.") and answer["spec"]["ports"][0]["nodePort"] == 30001
    assert demo.list_objects("Service") == [] and demo.resource_version == before and watcher.queue.empty()

    status, made = await send(http, "POST", SERVICES, service("web", 30001))  # the port is still free
    assert status == 201
    status, answer = await send(http, "POST", SERVICES, service("other", 30001), dryRun="All")
    assert status == 422 and answer["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"  # validated in full

    changed = {**made, "metadata": {**made["metadata"], "labels": {"tier": "front"}}}
    status, answer = await send(http, "PUT", f"{SERVICES}/web", changed, dryRun="All")
    assert status == 200 and answer["metadata"]["labels"] == {"tier": "front"}
    assert answer["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    status, answer = await send(http, "DELETE", f"{SERVICES}/web", {"dryRun": ["All"]})
    assert status == 200 and answer["metadata"]["name"] == "web"
    stored = demo.get_object("Service", "web", "demo")
    assert (
        "labels" not in stored["metadata"]
        and stored["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    )
    assert [e.type for e in [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]] == ["ADDED"]
    demo.store.unwatch(watcher)

    status, answer = await send(http, "POST", SERVICES, service("x", 30002), dryRun="Some")
    assert status == 422 and answer["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"Some"}: supported values: "All"'
    )
    status, answer = await send(http, "DELETE", f"{SERVICES}/web", dryRun="Some")
    assert status == 422 and answer["details"]["kind"] == "DeleteOptions"
    # preconditions in DeleteOptions: the object must still be the one named
    status, answer = await send(http, "DELETE", f"{SERVICES}/web", {"preconditions": {"uid": "someone-else"}})
    assert status == 409 and "Precondition failed: UID in precondition: someone-else" in answer["message"]
    assert demo.list_objects("Service") != []


async def test_dry_run_with_kubernetes_asyncio(demo: ApiServer, tmp_path: Path) -> None:
    async with await config.new_client_from_config(str(demo.kubeconfig(tmp_path / "kc"))) as ac:
        net = client.NetworkingV1Api(ac)
        body = {
            "metadata": {"name": "web"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
        }
        made = await net.create_namespaced_network_policy("demo", body, dry_run="All")
        assert made.metadata.uid and made.spec.policy_types == ["Ingress"]
        assert (await net.list_namespaced_network_policy("demo")).items == []
        body["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] = "10.0.0.0/33"  # type: ignore[index]
        with pytest.raises(ApiException) as bad:
            await net.create_namespaced_network_policy("demo", body, dry_run="All")
        assert bad.value.status == 422
        assert json.loads(bad.value.body)["details"]["causes"][0]["field"] == "spec.ingress[0].from[0].ipBlock.cidr"
