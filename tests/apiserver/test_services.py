"""Services through plain HTTP: allocation, defaulting, validation and release, with the real
server's status codes and error bodies."""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp
import pytest

from stockade.lab.apiserver import ApiServer

from .test_http import NS, call

SVCS = "/api/v1/namespaces/demo/services"


def service(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
async def demo(http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    assert (await call(http, "POST", NS, {"metadata": {"name": "demo"}}))[0] == 201
    return http


def causes(body: dict[str, Any]) -> list[str]:
    return [c["field"] for c in body["details"]["causes"]]


async def test_cluster_ip_allocated_and_defaults(demo: aiohttp.ClientSession) -> None:
    s, svc = await call(demo, "POST", SVCS, service("web", selector={"app": "web"}))
    assert s == 201
    spec = svc["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/16")
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"], spec["type"]) == (["IPv4"], "SingleStack", "ClusterIP")
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert (spec["sessionAffinity"], spec["internalTrafficPolicy"]) == ("None", "Cluster")
    assert "externalTrafficPolicy" not in spec and "nodePort" not in spec["ports"][0]
    # a second Service gets another address; GET shows what was allocated
    _, other = await call(demo, "POST", SVCS, service("other"))
    assert other["spec"]["clusterIP"] != spec["clusterIP"]
    assert (await call(demo, "GET", f"{SVCS}/web"))[1]["spec"]["clusterIP"] == spec["clusterIP"]


async def test_dual_stack_families(demo: aiohttp.ClientSession) -> None:
    _, svc = await call(demo, "POST", SVCS, service("dual", ipFamilyPolicy="PreferDualStack"))
    v4, v6 = svc["spec"]["clusterIPs"]
    assert svc["spec"]["ipFamilies"] == ["IPv4", "IPv6"] and svc["spec"]["clusterIP"] == v4
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:96::/112")
    _, six = await call(demo, "POST", SVCS, service("six", ipFamilies=["IPv6"]))
    assert six["spec"]["ipFamilies"] == ["IPv6"] and ":" in six["spec"]["clusterIP"]
    s, body = await call(demo, "POST", SVCS, service("bad", ipFamilyPolicy="SingleStack", ipFamilies=["IPv4", "IPv6"]))
    assert s == 422 and causes(body) == ["spec.ipFamilyPolicy"]
    assert "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified" in body["message"]


async def test_single_stack_server_refuses_require_dual_stack() -> None:
    srv = ApiServer(service_cidrs=["10.96.0.0/16"])
    await srv.start()
    try:
        async with aiohttp.ClientSession(base_url=srv.url) as h:
            await call(h, "POST", NS, {"metadata": {"name": "demo"}})
            _, prefer = await call(h, "POST", SVCS, service("prefer", ipFamilyPolicy="PreferDualStack"))
            assert prefer["spec"]["ipFamilies"] == ["IPv4"] and len(prefer["spec"]["clusterIPs"]) == 1
            s, body = await call(h, "POST", SVCS, service("req", ipFamilyPolicy="RequireDualStack"))
            assert s == 422 and body["reason"] == "Invalid"
            assert body["message"] == (
                'Service "req" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
                "this cluster is not configured for dual-stack services"
            )
    finally:
        await srv.stop()


async def test_requested_cluster_ip_honoured_once_and_released_on_delete(demo: aiohttp.ClientSession) -> None:
    s, a = await call(demo, "POST", SVCS, service("a", clusterIP="10.96.0.10"))
    assert s == 201 and a["spec"]["clusterIPs"] == ["10.96.0.10"]
    s, body = await call(demo, "POST", SVCS, service("b", clusterIP="10.96.0.10"))
    assert s == 422 and causes(body) == ["spec.clusterIPs"]
    assert body["message"] == (
        'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.10"}: '
        "failed to allocate IP 10.96.0.10: provided IP is already allocated"
    )
    s, body = await call(demo, "POST", SVCS, service("c", clusterIP="10.0.0.1"))
    assert s == 422 and "the provided IP (10.0.0.1) is not in the valid range" in body["message"]
    s, body = await call(demo, "POST", SVCS, service("d", clusterIP="nope"))
    assert s == 422 and causes(body) == ["spec.clusterIPs[0]"]
    assert (await call(demo, "DELETE", f"{SVCS}/a"))[0] == 200
    s, b = await call(demo, "POST", SVCS, service("b", clusterIP="10.96.0.10"))
    assert s == 201 and b["spec"]["clusterIP"] == "10.96.0.10"


async def test_headless(demo: aiohttp.ClientSession) -> None:
    s, svc = await call(demo, "POST", SVCS, service("h", clusterIP="None", selector={"app": "x"}))
    assert s == 201 and svc["spec"]["clusterIPs"] == ["None"] and svc["spec"]["ipFamilies"] == ["IPv4"]
    s, svc = await call(demo, "POST", SVCS, service("h2", clusterIP="None", ports=[]))
    assert s == 201 and svc["spec"]["ipFamilyPolicy"] == "RequireDualStack"  # headless without selector


async def test_node_ports(demo: aiohttp.ClientSession) -> None:
    s, a = await call(demo, "POST", SVCS, service("a", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    assert s == 201 and a["spec"]["ports"][0]["nodePort"] == 30001
    assert a["spec"]["externalTrafficPolicy"] == "Cluster"
    s, body = await call(demo, "POST", SVCS, service("b", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    assert (s, body["reason"], body["code"]) == (422, "Invalid", 422)
    assert body["message"] == (
        'Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated'
    )
    assert body["details"] == {
        "name": "b",
        "kind": "Service",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: 30001: provided port is already allocated",
                "field": "spec.ports[0].nodePort",
            }
        ],
    }
    s, body = await call(demo, "POST", SVCS, service("c", type="NodePort", ports=[{"port": 80, "nodePort": 80}]))
    assert s == 422 and "The range of valid ports is 30000-32767" in body["message"]
    # automatic ones come from the range, two ports → two node ports; Local is kept
    s, d = await call(
        demo,
        "POST",
        SVCS,
        service(
            "d",
            type="NodePort",
            externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80}, {"name": "https", "port": 443}],
        ),
    )
    assert s == 201 and d["spec"]["externalTrafficPolicy"] == "Local"
    got = [p["nodePort"] for p in d["spec"]["ports"]]
    assert len(set(got)) == 2 and all(30000 <= p <= 32767 for p in got) and 30001 not in got
    # a refused create gives back what it took: the node port asked for is free afterwards
    s, _ = await call(
        demo, "POST", SVCS, service("e", type="NodePort", ports=[{"port": 80, "nodePort": 30005, "protocol": "X"}])
    )
    assert s == 422
    assert (await call(demo, "POST", SVCS, service("e", type="NodePort", ports=[{"port": 80, "nodePort": 30005}])))[
        0
    ] == 201
    # delete releases the node port
    assert (await call(demo, "DELETE", f"{SVCS}/a"))[0] == 200
    s, _ = await call(demo, "POST", SVCS, service("b", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    assert s == 201


async def test_load_balancer_local_gets_a_health_check_port(demo: aiohttp.ClientSession) -> None:
    s, lb = await call(demo, "POST", SVCS, service("lb", type="LoadBalancer", externalTrafficPolicy="Local"))
    assert s == 201
    spec = lb["spec"]
    assert spec["ports"][0]["nodePort"] and spec["healthCheckNodePort"] != spec["ports"][0]["nodePort"]
    assert spec["allocateLoadBalancerNodePorts"] is True


async def test_port_validation(demo: aiohttp.ClientSession) -> None:
    bad = service(
        "v",
        ports=[
            {"name": "a", "port": 0},
            {"name": "a", "port": 81, "protocol": "ICMP"},
            {"port": 82, "targetPort": "no_such--"},
            {"name": "d", "port": 83, "targetPort": 70000},
        ],
        sessionAffinity="Sticky",
        externalTrafficPolicy="Local",
    )
    s, body = await call(demo, "POST", SVCS, bad)
    assert s == 422 and body["reason"] == "Invalid"
    assert set(causes(body)) == {
        "spec.ports[0].port",
        "spec.ports[0].targetPort",  # defaulted to the port, 0 too (as in Kubernetes)
        "spec.ports[1].name",
        "spec.ports[1].protocol",
        "spec.ports[2].name",
        "spec.ports[2].targetPort",
        "spec.ports[3].targetPort",
        "spec.sessionAffinity",
        "spec.externalTrafficPolicy",
    }
    assert (
        'spec.ports[1].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"' in body["message"]
    )
    assert 'spec.ports[1].name: Duplicate value: "a"' in body["message"]
    assert "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive" in body["message"]
    s, body = await call(demo, "POST", SVCS, service("np", ports=[{"port": 80, "nodePort": 30010}]))
    assert s == 422 and "may not be used when `type` is 'ClusterIP'" in body["message"]
    s, body = await call(demo, "POST", SVCS, service("noports", ports=[]))
    assert s == 422 and causes(body) == ["spec.ports"]
    s, body = await call(demo, "POST", SVCS, service("1st"))
    assert s == 422 and causes(body) == ["metadata.name"] and "DNS-1035" in body["message"]
    s, body = await call(demo, "POST", SVCS, service("typed", ports=[{"port": "80"}]))
    assert s == 400 and body["reason"] == "BadRequest" and "cannot unmarshal string" in body["message"]
    # nothing refused holds an address: the next automatic one is the first of the dynamic band
    _, ok = await call(demo, "POST", SVCS, service("ok"))
    assert ok["spec"]["clusterIP"] == "10.96.1.1"


async def test_updates_keep_allocations_and_refuse_a_new_cluster_ip(demo: aiohttp.ClientSession) -> None:
    _, svc = await call(demo, "POST", SVCS, service("web", type="NodePort", ports=[{"name": "http", "port": 80}]))
    ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    # PUT without the allocated fields (as a client that never read them): they are kept
    body = service("web", type="NodePort", ports=[{"name": "http", "port": 80, "targetPort": 8080}])
    s, put = await call(demo, "PUT", f"{SVCS}/web", body)
    assert s == 200 and put["spec"]["clusterIP"] == ip and put["spec"]["ports"][0]["nodePort"] == node_port
    assert put["spec"]["ports"][0]["targetPort"] == 8080
    put["spec"]["clusterIP"] = "10.96.0.99"
    s, err = await call(demo, "PUT", f"{SVCS}/web", put)
    assert s == 422 and causes(err) == ["spec.clusterIPs[0]"]
    assert err["message"] == (
        'Service "web" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.96.0.99"}: may not change once set'
    )
    # a strategic-merge patch as kubectl apply sends it: list merged by port, nothing else lost
    patch = {"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 9090}]}}
    s, p = await call(demo, "PATCH", f"{SVCS}/web", patch, "application/strategic-merge-patch+json")
    assert s == 200
    assert p["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 9090, "nodePort": node_port, "protocol": "TCP"}
    ]
    # NodePort → ClusterIP gives the node port back; ClusterIP → NodePort may take it again
    merge = {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None}}
    s, c = await call(demo, "PATCH", f"{SVCS}/web", merge, "application/merge-patch+json")
    assert s == 200 and "nodePort" not in c["spec"]["ports"][0] and c["spec"]["clusterIP"] == ip
    again = service("again", type="NodePort", ports=[{"port": 80, "nodePort": node_port}])
    assert (await call(demo, "POST", SVCS, again))[0] == 201


async def test_namespace_deletion_releases_its_services(demo: aiohttp.ClientSession) -> None:
    await call(
        demo,
        "POST",
        SVCS,
        service("a", clusterIP="10.96.0.20", type="NodePort", ports=[{"port": 1, "nodePort": 30020}]),
    )
    assert (await call(demo, "DELETE", f"{NS}/demo"))[0] == 200
    await call(demo, "POST", NS, {"metadata": {"name": "demo"}})
    s, _ = await call(
        demo,
        "POST",
        SVCS,
        service("a", clusterIP="10.96.0.20", type="NodePort", ports=[{"port": 1, "nodePort": 30020}]),
    )
    assert s == 201


async def test_discovery_and_table(demo: aiohttp.ClientSession) -> None:
    core = (await call(demo, "GET", "/api/v1"))[1]
    svc = next(r for r in core["resources"] if r["name"] == "services")
    assert svc["shortNames"] == ["svc"] and svc["namespaced"] is True
    disc = (await call(demo, "GET", "/apis/discovery.k8s.io/v1"))[1]
    assert [r["name"] for r in disc["resources"]] == ["endpointslices"]  # no status subresource
    await call(demo, "POST", SVCS, service("web", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with demo.get(SVCS, headers={"Accept": accept}) as r:
        table = await r.json()
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)"]
    (row,) = table["rows"]
    assert row["cells"][:5] == ["web", "NodePort", "10.96.1.1", "<none>", "80:30001/TCP"]
    assert row["object"]["metadata"]["namespace"] == "demo"
