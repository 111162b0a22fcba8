"""The API server as a component, through plain HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from stockade.lab.apiserver import ApiServer

NS = "/api/v1/namespaces"
PODS = "/api/v1/namespaces/demo/pods"
NETPOLS = "/apis/networking.k8s.io/v1/namespaces/demo/networkpolicies"


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    async with http.request(method, path, data=data, headers={"Content-Type": ctype}) as r:
        return r.status, await r.json()


async def read_events(resp: aiohttp.ClientResponse, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        line = await asyncio.wait_for(resp.content.readline(), timeout)
        if not line:
            break
        out.append(json.loads(line))
    return out


async def test_discovery(http: aiohttp.ClientSession) -> None:
    assert (await call(http, "GET", "/api"))[1]["versions"] == ["v1"]
    core = (await call(http, "GET", "/api/v1"))[1]
    assert {"pods", "namespaces", "nodes"} <= {r["name"] for r in core["resources"]}
    groups = (await call(http, "GET", "/apis"))[1]
    assert "networking.k8s.io" in {g["name"] for g in groups["groups"]}
    net = (await call(http, "GET", "/apis/networking.k8s.io/v1"))[1]
    assert next(r for r in net["resources"] if r["name"] == "networkpolicies")["namespaced"] is True
    assert (await call(http, "GET", "/apis/nope.example/v1"))[0] == 404


async def test_crud_and_validation(http: aiohttp.ClientSession) -> None:
    assert (await call(http, "POST", PODS, pod("a")))[0] == 404  # namespace does not exist yet
    status, ns = await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    assert status == 201 and ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "demo"
    assert (await call(http, "POST", NS, {"metadata": {"name": "demo"}}))[0] == 409
    assert (await call(http, "POST", PODS, {"metadata": {}}))[0] == 422
    assert (await call(http, "POST", NS, {"metadata": {"name": "Bad_Name"}}))[0] == 422

    status, a = await call(http, "POST", PODS, pod("a", {"app": "web"}))
    assert status == 201
    meta = a["metadata"]
    assert meta["namespace"] == "demo" and meta["uid"] and meta["creationTimestamp"]
    assert int(meta["resourceVersion"]) > int(ns["metadata"]["resourceVersion"])
    await call(http, "POST", PODS, pod("b", {"app": "db"}))

    status, lst = await call(http, "GET", "/api/v1/pods?labelSelector=app%20in%20(web)")
    assert status == 200 and [i["metadata"]["name"] for i in lst["items"]] == ["a"]
    assert int(lst["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert "kind" not in lst["items"][0]  # as Kubernetes serves list items
    assert (await call(http, "GET", f"{PODS}/a"))[1]["metadata"]["uid"] == meta["uid"]
    assert (await call(http, "GET", f"{PODS}/zz"))[0] == 404

    # PUT: optimistic concurrency on resourceVersion
    stale = json.loads(json.dumps(a))
    a["metadata"]["labels"]["tier"] = "front"
    status, a2 = await call(http, "PUT", f"{PODS}/a", a)
    assert status == 200 and a2["metadata"]["labels"]["tier"] == "front"
    assert a2["metadata"]["uid"] == meta["uid"]
    stale["metadata"]["labels"]["x"] = "y"
    assert (await call(http, "PUT", f"{PODS}/a", stale))[0] == 409
    assert (await call(http, "PUT", f"{PODS}/b", a2))[0] == 400  # name does not match the URL

    # PATCH: merge, strategic (as merge), JSON patch; a no-op keeps the version
    s, p = await call(
        http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"tier": None, "v": "1"}}}, "application/merge-patch+json"
    )
    assert s == 200 and p["metadata"]["labels"] == {"app": "web", "v": "1"}
    s, p2 = await call(
        http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"v": "1"}}}, "application/strategic-merge-patch+json"
    )
    assert s == 200 and p2["metadata"]["resourceVersion"] == p["metadata"]["resourceVersion"]
    s, p3 = await call(
        http,
        "PATCH",
        f"{PODS}/a",
        [{"op": "replace", "path": "/metadata/labels/v", "value": "2"}],
        "application/json-patch+json",
    )
    assert s == 200 and p3["metadata"]["labels"]["v"] == "2"
    assert (await call(http, "PATCH", f"{PODS}/a", {}, "application/apply-patch+yaml"))[0] == 415

    # status subresource changes only the status
    p3["status"] = {"podIP": "10.0.0.5"}
    p3["metadata"]["labels"]["ignored"] = "yes"
    s, p4 = await call(http, "PUT", f"{PODS}/a/status", p3)
    assert s == 200 and p4["status"] == {"podIP": "10.0.0.5"} and "ignored" not in p4["metadata"]["labels"]

    # network policies, also through the old extensions/v1beta1 path
    np = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}
    assert (await call(http, "POST", NETPOLS, np))[0] == 201
    s, old = await call(http, "GET", "/apis/extensions/v1beta1/namespaces/demo/networkpolicies/deny")
    assert s == 200 and old["apiVersion"] == "extensions/v1beta1"

    # deleting the namespace takes what is in it
    assert (await call(http, "DELETE", f"{PODS}/b"))[0] == 200
    assert (await call(http, "DELETE", f"{PODS}/b"))[0] == 404
    assert (await call(http, "DELETE", f"{NS}/demo"))[0] == 200
    assert (await call(http, "GET", "/api/v1/pods"))[1]["items"] == []
    assert (await call(http, "GET", "/apis/networking.k8s.io/v1/networkpolicies"))[1]["items"] == []


async def test_watch_events_bookmarks_and_timeout(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    _, lst = await call(http, "GET", "/api/v1/pods")
    rv = lst["metadata"]["resourceVersion"]
    url = f"/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"
    async with http.get(url) as resp:
        assert resp.status == 200
        await call(http, "POST", PODS, pod("a"))
        await call(http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"x": "1"}}}, "application/merge-patch+json")
        await call(http, "DELETE", f"{PODS}/a")
        events = [e for e in await read_events(resp, 3) if e["type"] != "BOOKMARK"]
        events += [e for e in await read_events(resp, 3 - len(events)) if e["type"] != "BOOKMARK"]
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert rvs == sorted(rvs) and rvs[0] > int(rv)
        assert events[0]["object"]["kind"] == "Pod"
        # silence → a bookmark carrying the current version
        bm = (await read_events(resp, 1))[0]
        assert bm["type"] == "BOOKMARK" and int(bm["object"]["metadata"]["resourceVersion"]) >= rvs[-1]
        # the stream ends by itself after timeoutSeconds
        rest = await read_events(resp, 1000, timeout=5)
        assert all(e["type"] == "BOOKMARK" for e in rest)


async def test_watch_without_version_lists_first_and_no_bookmarks_unless_asked(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    await call(http, "POST", PODS, pod("a"))
    async with http.get("/api/v1/namespaces/demo/pods?watch=1&timeoutSeconds=1") as resp:
        events = await read_events(resp, 100)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


async def test_watch_expired_after_compaction(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    old = server.resource_version
    await call(http, "POST", PODS, pod("a"))
    server.compact()
    async with http.get(f"/api/v1/pods?watch=true&resourceVersion={old}") as resp:
        assert resp.status == 200
        events = await read_events(resp, 10)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # from the current version it works
    async with http.get(f"/api/v1/pods?watch=true&resourceVersion={server.resource_version}&timeoutSeconds=1") as resp:
        assert await read_events(resp, 10) == []


async def test_bounded_history(http: aiohttp.ClientSession) -> None:
    srv = ApiServer(history_size=3)
    await srv.start()
    try:
        srv.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        start = srv.resource_version
        for i in range(5):
            srv.put_object({**pod(f"p{i}"), "metadata": {"name": f"p{i}", "namespace": "demo"}})
        async with aiohttp.ClientSession(base_url=srv.url) as h:
            async with h.get(f"/api/v1/pods?watch=true&resourceVersion={start}") as resp:
                assert (await read_events(resp, 1))[0]["object"]["code"] == 410
            recent = srv.resource_version - 3
            async with h.get(f"/api/v1/pods?watch=true&resourceVersion={recent}&timeoutSeconds=1") as resp:
                names = [e["object"]["metadata"]["name"] for e in await read_events(resp, 10)]
            assert names == ["p2", "p3", "p4"]
    finally:
        await srv.stop()


async def test_label_selected_watch_sees_objects_leave_and_enter(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    await call(http, "POST", PODS, pod("a", {"app": "web"}))
    _, lst = await call(http, "GET", f"{PODS}?labelSelector=app%3Dweb")
    rv = lst["metadata"]["resourceVersion"]
    async with http.get(f"{PODS}?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}") as resp:
        await call(http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "db"}}}, "application/merge-patch+json")
        await call(http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "web"}}}, "application/merge-patch+json")
        events = await read_events(resp, 2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_faults(server: ApiServer, http: aiohttp.ClientSession) -> None:
    server.inject_fault(429, 2, retry_after=1, verbs={"list"})
    server.inject_fault(500, 1, verbs={"get"})
    for _ in range(2):
        async with http.get("/api/v1/pods") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "1"
            assert (await r.json())["code"] == 429
    async with http.get("/api/v1/pods") as r:
        assert r.status == 200
    async with http.get("/api/v1/namespaces/x") as r:
        assert r.status == 500
    async with http.get("/api/v1/namespaces/x") as r:
        assert r.status == 404
    assert server.requests[("list", "pods")] == 3


async def test_drop_and_freeze_watches(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    rv = server.resource_version
    async with http.get(f"/api/v1/pods?watch=true&resourceVersion={rv}") as resp:
        await asyncio.sleep(0.1)
        assert server.drop_watches() == 1
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            line = await asyncio.wait_for(resp.content.readline(), 5)
            if not line:  # some aiohttp versions report the cut as the end of the body
                raise aiohttp.ClientPayloadError("cut")
    async with http.get(f"/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true") as resp:
        assert (await read_events(resp, 1))[0]["type"] == "BOOKMARK"
        assert server.freeze_watches() == 1
        await call(http, "POST", PODS, pod("a"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 1.0)
    await asyncio.sleep(0.1)


async def test_token_and_tls(tmp_path: Any) -> None:
    srv = ApiServer(token="s3cret", tls=True)
    await srv.start()
    try:
        assert srv.url.startswith("https://")
        import ssl

        ctx = ssl.create_default_context(cafile=srv._tls_files[0] if srv._tls_files else None)
        async with aiohttp.ClientSession(base_url=srv.url) as h:
            async with h.get("/api/v1/pods", ssl=ctx) as r:
                assert r.status == 401
            async with h.get("/api/v1/pods", ssl=ctx, headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
    finally:
        await srv.stop()


async def test_paged_list_is_one_snapshot(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", NS, {"metadata": {"name": "demo"}})
    for i in range(5):
        await call(http, "POST", PODS, pod(f"p{i}"))
    s, first = await call(http, "GET", f"{PODS}?limit=2")
    assert s == 200 and [i["metadata"]["name"] for i in first["items"]] == ["p0", "p1"]
    assert first["metadata"]["remainingItemCount"] == 3
    await call(http, "DELETE", f"{PODS}/p3")  # after the snapshot: the pages do not see it
    names, meta = [], first["metadata"]
    while meta.get("continue"):
        _, page = await call(http, "GET", f"{PODS}?limit=2&continue={meta['continue']}")
        names += [i["metadata"]["name"] for i in page["items"]]
        meta = page["metadata"]
        assert meta["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert names == ["p2", "p3", "p4"]
    _, again = await call(http, "GET", f"{PODS}?limit=2")
    server.compact()
    s, expired = await call(http, "GET", f"{PODS}?limit=2&continue={again['metadata']['continue']}")
    assert s == 410 and expired["reason"] == "Expired"
