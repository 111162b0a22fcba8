"""The EndpointSlice controller inside the API server: slices follow Services and Pods."""

from __future__ import annotations

from typing import Any

import aiohttp

from stockade.lab.apiserver import ApiServer

from .test_http import NS, call, read_events

PODS = "/api/v1/namespaces/demo/pods"
SVCS = "/api/v1/namespaces/demo/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices"


def pod(name: str, host: int, labels: dict[str, str], *, ready: bool = True, http: int = 8079) -> dict[str, Any]:
    ips = [f"10.244.1.{host}", f"fd00:10:244:1::{host:x}"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": labels},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": http, "protocol": "TCP"}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": ips[0],
            "podIPs": [{"ip": ip} for ip in ips],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def svc(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"app": "web"})
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": "http"}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "demo"}, "spec": spec}


def slices(server: ApiServer, service: str) -> list[dict[str, Any]]:
    return [
        s
        for s in server.list_objects("EndpointSlice")
        if s["metadata"]["labels"]["kubernetes.io/service-name"] == service
    ]


def addresses(sl: dict[str, Any]) -> list[str]:
    return sorted(a for e in sl["endpoints"] for a in e["addresses"])


async def test_slices_per_family_with_resolved_ports(server: ApiServer) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    server.put_object(pod("a", 5, {"app": "web"}))
    server.put_object(pod("b", 6, {"app": "web"}, ready=False))
    server.put_object(pod("other", 7, {"app": "db"}))
    created = server.put_object(svc("web", ipFamilyPolicy="PreferDualStack"))
    by_type = {s["addressType"]: s for s in slices(server, "web")}
    assert set(by_type) == {"IPv4", "IPv6"}
    v4 = by_type["IPv4"]
    assert addresses(v4) == ["10.244.1.5", "10.244.1.6"]
    assert addresses(by_type["IPv6"]) == ["fd00:10:244:1::5", "fd00:10:244:1::6"]
    assert v4["ports"] == [{"name": "http", "port": 8079, "protocol": "TCP"}]
    meta = v4["metadata"]
    assert meta["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert meta["name"].startswith("web-")
    assert meta["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    ep = {e["targetRef"]["name"]: e for e in v4["endpoints"]}
    assert ep["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert ep["b"]["conditions"]["ready"] is False  # not ready: listed, not ready (as Kubernetes does)
    assert ep["a"]["nodeName"] == "node-1" and ep["a"]["targetRef"]["kind"] == "Pod"
    # SingleStack: only the first family's slice
    server.put_object(svc("single"))
    assert [s["addressType"] for s in slices(server, "single")] == ["IPv4"]


async def test_named_port_resolved_per_pod(server: ApiServer) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    server.put_object(pod("a", 5, {"app": "web"}, http=8079))
    server.put_object(pod("b", 6, {"app": "web"}, http=9000))
    server.put_object(svc("web"))
    got = sorted((s["ports"][0]["port"], addresses(s)) for s in slices(server, "web"))
    assert got == [(8079, ["10.244.1.5"]), (9000, ["10.244.1.6"])]


async def test_slices_follow_pods_and_go_with_the_service(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    await call(http, "POST", SVCS, svc("web"))
    (placeholder,) = slices(server, "web")
    assert placeholder["endpoints"] == [] and placeholder["ports"] == []  # nothing selected yet
    rv = server.resource_version
    url = f"{SLICES}?watch=true&resourceVersion={rv}&timeoutSeconds=5"
    async with http.get(url) as resp:
        await call(http, "POST", PODS, pod("a", 5, {"app": "web"}))
        added = (await read_events(resp, 1))[0]
        assert added["type"] == "MODIFIED" and addresses(added["object"]) == ["10.244.1.5"]
        # the pod leaves the selector: its endpoint goes
        await call(http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "x"}}}, "application/merge-patch+json")
        left = (await read_events(resp, 1))[0]
        assert left["type"] == "MODIFIED" and left["object"]["endpoints"] == []
        # a deleted slice is put back; the Service's deletion takes its slices
        name = left["object"]["metadata"]["name"]
        assert (await call(http, "DELETE", f"{SLICES}/{name}"))[0] == 200
        types = [e["type"] for e in await read_events(resp, 2)]
        assert types == ["DELETED", "ADDED"]
        assert (await call(http, "DELETE", f"{SVCS}/web"))[0] == 200
        assert (await read_events(resp, 1))[0]["type"] == "DELETED"
    assert slices(server, "web") == []


async def test_no_selector_no_slices(server: ApiServer) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    server.put_object(pod("a", 5, {"app": "web"}))
    server.put_object({**svc("manual"), "spec": {"ports": [{"port": 80}]}})
    assert slices(server, "manual") == []
