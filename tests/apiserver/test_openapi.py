"""The OpenAPI documents over HTTP, as kubectl and other clients fetch them: the v3 index with
hashed URLs, immutable documents behind them, a stale hash redirected, ETags; v2 as JSON and as
the gnostic protobuf kubectl asks for; the extensions kubectl's apply, validation and explain read."""

from __future__ import annotations

import json

import aiohttp

from stockade.lab.apiserver import ApiServer

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


async def test_v3_index_and_documents(server: ApiServer, http: aiohttp.ClientSession) -> None:
    async with http.get("/openapi/v3") as r:
        assert r.status == 200
        index = (await r.json())["paths"]
    assert {"api/v1", "apis/networking.k8s.io/v1", "apis/discovery.k8s.io/v1", "apis/coordination.k8s.io/v1"} <= set(
        index
    )
    url = index["apis/networking.k8s.io/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/networking.k8s.io/v1?hash=")
    async with http.get(url) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "public, immutable"
        etag = r.headers["ETag"]
        doc = await r.json()
    async with http.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    async with http.get("/openapi/v3/apis/networking.k8s.io/v1?hash=STALE", allow_redirects=False) as r:
        assert r.status == 301 and r.headers["Location"] == url
    async with http.get("/openapi/v3/apis/no.such/v1") as r:
        assert r.status == 404

    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    policy = schemas["io.k8s.api.networking.v1.NetworkPolicy"]
    assert policy["x-kubernetes-group-version-kind"] == [
        {"group": "networking.k8s.io", "kind": "NetworkPolicy", "version": "v1"}
    ]
    port = schemas["io.k8s.api.networking.v1.NetworkPolicyPort"]["properties"]["port"]
    assert port["allOf"] == [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert schemas["io.k8s.api.networking.v1.IPBlock"]["required"] == ["cidr"]
    # what kubectl looks for before it asks for server-side field validation and computes a patch
    patch = doc["paths"]["/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "networking.k8s.io",
        "kind": "NetworkPolicy",
        "version": "v1",
    }
    assert {"dryRun", "fieldValidation", "fieldManager"} <= {p["name"] for p in patch["parameters"]}
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]

    async with http.get(index["api/v1"]["serverRelativeURL"]) as r:
        core = (await r.json())["components"]["schemas"]
    containers = core["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-strategy"] == "merge" and containers["x-kubernetes-patch-merge-key"] == "name"
    assert core["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["x-kubernetes-list-map-keys"] == [
        "port",
        "protocol",
    ]


async def test_v2_as_json_and_protobuf(server: ApiServer, http: aiohttp.ClientSession) -> None:
    async with http.get("/openapi/v2", headers={"Accept": "application/json"}) as r:
        assert r.status == 200 and r.content_type == "application/json"
        doc = json.loads(await r.read())
    assert doc["swagger"] == "2.0"
    pod = doc["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    async with http.get("/openapi/v2", headers={"Accept": PROTOBUF}) as r:
        assert r.status == 200
        # answered as ...v2.v1.0+protobuf: "@" is not valid in a media type, and Go's parser says so
        assert r.headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        body = await r.read()
    assert body[:1] == b"\x0a" and b"io.k8s.api.networking.v1.NetworkPolicy" in body  # field 1: swagger


async def test_openapi_needs_the_token() -> None:
    srv = ApiServer(token="secret")
    await srv.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            async with http.get("/openapi/v3") as r:
                assert r.status == 401
            async with http.get("/openapi/v3", headers={"Authorization": "Bearer secret"}) as r:
                assert r.status == 200
    finally:
        await srv.stop()


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        here = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return here.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_every_reference_resolves(server: ApiServer, http: aiohttp.ClientSession) -> None:
    async with http.get("/openapi/v3") as r:
        index = (await r.json())["paths"]
    for gv, entry in index.items():
        async with http.get(entry["serverRelativeURL"]) as r:
            doc = await r.json()
        names = {"#/components/schemas/" + n for n in doc["components"]["schemas"]}
        assert _refs(doc) <= names, (gv, _refs(doc) - names)
    async with http.get("/openapi/v2") as r:
        doc = json.loads(await r.read())
    assert _refs(doc) <= {"#/definitions/" + n for n in doc["definitions"]}
    token = doc["paths"]["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"]["post"]
    assert token["x-kubernetes-group-version-kind"]["kind"] == "TokenRequest"
