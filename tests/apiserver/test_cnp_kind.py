"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) served like a CRD-backed resource, and
its CRD under apiextensions.k8s.io/v1: discovery, CRUD with generation and status-subresource
semantics, the brain parser's 422s, watch, OpenAPI, tables, a server started without the CRD that
serves the resource once the CRD is created; over HTTP with the real kubernetes-asyncio client and
the real kubectl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiServer
from stockade.lab.apiserver.kinds.crds import DEPLOY_CRDS

from .test_kubectl import kubectl

GROUP, VERSION, PLURAL = "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"
CRD_NAME = f"{PLURAL}.{GROUP}"
BASE = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
CRD_FILE = DEPLOY_CRDS / "clusternetworkpolicies.yaml"
MERGE = "application/merge-patch+json"


def cnp(name: str = "deny-dns", priority: int = 10, port: int = 53) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {}},
            "egress": [
                {
                    "name": "no-dns",
                    "action": "Deny",
                    "to": [{"networks": ["10.0.0.0/8"]}],
                    "protocols": [{"udp": {"destinationPort": {"number": port}}}],
                }
            ],
        },
    }


@pytest.fixture
async def bare() -> AsyncIterator[ApiServer]:
    """A server started without the CRD."""
    srv = ApiServer(bookmark_interval=0.2, crds=False)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def custom(server: ApiServer, tmp_path: Path) -> AsyncIterator[client.CustomObjectsApi]:
    api = await config.new_client_from_config(config_file=str(server.kubeconfig(tmp_path / "kc")))
    try:
        yield client.CustomObjectsApi(api)
    finally:
        await api.close()


async def get_json(http: aiohttp.ClientSession, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(path, **kw) as resp:
        return resp.status, await resp.json()


# --- discovery -----------------------------------------------------------------------------------


async def test_discovery_lists_the_resource_and_its_status(http: aiohttp.ClientSession) -> None:
    _, groups = await get_json(http, "/apis")
    names = {g["name"]: g for g in groups["groups"]}
    assert names[GROUP]["preferredVersion"] == {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    assert "apiextensions.k8s.io" in names
    status, group = await get_json(http, f"/apis/{GROUP}")
    assert status == 200 and group["versions"] == [{"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}]
    _, listing = await get_json(http, f"/apis/{GROUP}/{VERSION}")
    by_name = {r["name"]: r for r in listing["resources"]}
    main = by_name[PLURAL]
    assert (main["kind"], main["namespaced"], main["shortNames"]) == ("ClusterNetworkPolicy", False, ["cnp"])
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(main["verbs"])
    assert set(by_name[f"{PLURAL}/status"]["verbs"]) == {"get", "patch", "update"}


async def test_the_crd_is_served_and_established(http: aiohttp.ClientSession) -> None:
    status, crd = await get_json(http, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert status == 200
    assert crd["spec"]["names"]["kind"] == "ClusterNetworkPolicy"
    assert crd["spec"] == yaml.safe_load(CRD_FILE.read_text())["spec"]  # deploy/'s own manifest
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert crd["status"]["storedVersions"] == [VERSION]


# --- CRUD, generation, status --------------------------------------------------------------------


async def test_create_get_list_patch_replace_delete(custom: client.CustomObjectsApi) -> None:
    made = await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp())
    assert made["metadata"]["generation"] == 1 and made["metadata"]["uid"]
    got = await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns")
    assert got["spec"]["priority"] == 10 and got["kind"] == "ClusterNetworkPolicy"
    listed = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert listed["kind"] == "ClusterNetworkPolicyList" and [i["metadata"]["name"] for i in listed["items"]] == [
        "deny-dns"
    ]

    merged = await custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        "deny-dns",
        {"spec": {"priority": 20}},
        _content_type=MERGE,  # type: ignore[call-arg]
    )
    assert merged["spec"]["priority"] == 20 and merged["metadata"]["generation"] == 2
    ops = [{"op": "replace", "path": "/spec/egress/0/action", "value": "Pass"}]
    patched = await custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns", ops)  # JSON patch
    assert patched["spec"]["egress"][0]["action"] == "Pass" and patched["metadata"]["generation"] == 3

    body = {**patched, "spec": {**patched["spec"], "priority": 30}}
    replaced = await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns", body)
    assert replaced["spec"]["priority"] == 30 and replaced["metadata"]["generation"] == 4
    stale = {**body, "metadata": {**body["metadata"], "resourceVersion": patched["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as conflict:
        await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns", stale)
    assert conflict.value.status == 409

    await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns")
    with pytest.raises(ApiException) as gone:
        await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns")
    assert gone.value.status == 404


async def test_status_is_written_only_through_the_subresource(custom: client.CustomObjectsApi) -> None:
    body = {**cnp(), "status": {"conditions": [condition("Set on create")]}}
    made = await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    assert "status" not in made  # a create sets no status

    with_status = {**made, "status": {"conditions": [condition("Enforced")]}, "spec": {**made["spec"], "priority": 99}}
    updated = await custom.replace_cluster_custom_object_status(GROUP, VERSION, PLURAL, "deny-dns", with_status)
    assert updated["status"]["conditions"][0]["reason"] == "Enforced"
    assert updated["spec"]["priority"] == 10  # the status subresource changes only status
    assert updated["metadata"]["generation"] == 1  # and a status change is no new generation
    assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])

    main = {**updated, "status": {"conditions": [condition("Overwritten")]}, "spec": {**updated["spec"], "priority": 5}}
    replaced = await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "deny-dns", main)
    assert replaced["status"]["conditions"][0]["reason"] == "Enforced"  # a main update ignores status
    assert (replaced["spec"]["priority"], replaced["metadata"]["generation"]) == (5, 2)

    patched = await custom.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        "deny-dns",
        {"status": {"conditions": [condition("Patched")]}},
        _content_type=MERGE,  # type: ignore[call-arg]
    )
    assert patched["status"]["conditions"][0]["reason"] == "Patched" and patched["metadata"]["generation"] == 2


def condition(reason: str) -> dict[str, str]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": reason.replace(" ", ""),
        "message": reason,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (lambda s: s.update(priority=1001), "spec.priority", "Invalid value: 1001: must be between 0 and 1000"),
        (lambda s: s.pop("tier"), "spec.tier", "Required value"),
        (lambda s: s.update(priority="high"), "spec.priority", 'Invalid value: "high": must be an integer'),
        (
            lambda s: s["egress"][0]["protocols"][0]["udp"]["destinationPort"].update(range={"start": 9, "end": 9}),
            "spec.egress[0].protocols[0].udp.destinationPort",
            "must set exactly one of number, range",
        ),
        (
            lambda s: s["egress"][0]["to"].append({"domainNames": ["example.com"]}),
            "spec.egress[0].to[1].domainNames",
            "not supported",
        ),
    ],
)
async def test_a_bad_policy_is_422_naming_the_field_and_nothing_is_stored(
    server: ApiServer, custom: client.CustomObjectsApi, change: Any, field: str, text: str
) -> None:
    body = cnp("bad")
    change(body["spec"])
    before = server.resource_version
    with pytest.raises(ApiException) as e:
        await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    assert e.value.status == 422
    status = json.loads(e.value.body or b"")
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(f'ClusterNetworkPolicy.{GROUP} "bad" is invalid: {field}: ')
    assert text in status["message"]
    assert [c["field"] for c in status["details"]["causes"]] == [field]
    assert server.list_objects("ClusterNetworkPolicy") == [] and server.resource_version == before

    # an update to a bad state is refused the same way, and the stored object stays as it was
    good = await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, cnp("bad"))
    body["metadata"] = good["metadata"]
    with pytest.raises(ApiException) as e:
        await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "bad", body)
    assert e.value.status == 422 and field in json.loads(e.value.body or b"")["message"]
    assert server.get_object("ClusterNetworkPolicy", "bad")["spec"] == cnp("bad")["spec"]


async def test_strategic_merge_patch_is_refused_as_for_a_crd(http: aiohttp.ClientSession, server: ApiServer) -> None:
    server.put_object(cnp())
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    async with http.patch(f"{BASE}/deny-dns", data=json.dumps({"spec": {"priority": 1}}), headers=headers) as resp:
        assert resp.status == 415
        assert "application/merge-patch+json" in (await resp.json())["message"]


# --- watch, table, OpenAPI -----------------------------------------------------------------------


async def test_watch_streams_added_modified_deleted(http: aiohttp.ClientSession, server: ApiServer) -> None:
    rv = server.resource_version
    async with http.get(BASE, params={"watch": "true", "resourceVersion": str(rv), "timeoutSeconds": "30"}) as resp:
        server.put_object(cnp())
        server.put_object(cnp(priority=11))
        server.delete_object("ClusterNetworkPolicy", "deny-dns")
        seen: list[tuple[str, int, str]] = []
        while len(seen) < 3:
            line = await asyncio.wait_for(resp.content.readline(), 30)
            ev = json.loads(line)
            seen.append((ev["type"], ev["object"]["spec"]["priority"], ev["object"]["apiVersion"]))
    gv = f"{GROUP}/{VERSION}"
    assert seen == [("ADDED", 10, gv), ("MODIFIED", 11, gv), ("DELETED", 11, gv)]


async def test_table_columns_are_the_crds_printer_columns(http: aiohttp.ClientSession, server: ApiServer) -> None:
    server.put_object(cnp())
    _, table = await get_json(http, BASE, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Tier", "Priority", "Age"]
    crd = yaml.safe_load(CRD_FILE.read_text())
    printed = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert ["Name", *printed] == [c["name"] for c in table["columnDefinitions"]]
    assert table["rows"][0]["cells"][:3] == ["deny-dns", "Admin", 10]


async def test_openapi_documents_the_kind_without_strategic_merge(http: aiohttp.ClientSession) -> None:
    _, index = await get_json(http, "/openapi/v3")
    url = index["paths"][f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    _, doc = await get_json(http, url)
    schema = doc["components"]["schemas"]["io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicy"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": GROUP, "kind": "ClusterNetworkPolicy", "version": VERSION}
    ]
    patch = doc["paths"][f"{BASE}/{{name}}"]["patch"]["requestBody"]["content"]
    assert "application/merge-patch+json" in patch and "application/strategic-merge-patch+json" not in patch
    tier = doc["components"]["schemas"]["io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicySpec"]
    assert tier["properties"]["tier"]["enum"] == ["Admin", "Baseline"]


# --- without the CRD -----------------------------------------------------------------------------


async def test_without_the_crd_the_resource_appears_when_the_crd_is_created(bare: ApiServer) -> None:
    async with aiohttp.ClientSession(base_url=bare.url) as http:
        assert (await get_json(http, BASE))[0] == 404
        assert (await get_json(http, f"/apis/{GROUP}"))[0] == 404
        _, groups = await get_json(http, "/apis")
        assert GROUP not in {g["name"] for g in groups["groups"]}
        _, index = await get_json(http, "/openapi/v3")
        assert f"apis/{GROUP}/{VERSION}" not in index["paths"]

        crd = yaml.safe_load(CRD_FILE.read_text())
        async with http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd) as resp:
            assert resp.status == 201
        status, listing = await get_json(http, BASE)
        assert status == 200 and listing["items"] == []
        _, index = await get_json(http, "/openapi/v3")
        assert f"apis/{GROUP}/{VERSION}" in index["paths"]
        async with http.post(BASE, json=cnp()) as resp:
            assert resp.status == 201

        # deleting the CRD deletes its objects and the resource goes
        rv = bare.resource_version
        async with http.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}") as resp:
            assert resp.status == 200
        assert (await get_json(http, BASE))[0] == 404
        assert bare.list_objects("ClusterNetworkPolicy") == []
        deleted = [e for e in bare.store.history if e.rv > rv and e.type == "DELETED"]
        assert [e.storage for e in deleted] == ["clusternetworkpolicies", "customresourcedefinitions"]


async def test_a_crd_the_lab_cannot_serve_is_refused(bare: ApiServer) -> None:
    other = yaml.safe_load(CRD_FILE.read_text())
    other["metadata"]["name"] = "widgets.example.com"
    wrong_scope = yaml.safe_load(CRD_FILE.read_text())
    wrong_scope["spec"]["scope"] = "Namespaced"
    async with aiohttp.ClientSession(base_url=bare.url) as http:
        for body, field in ((other, "metadata.name"), (wrong_scope, "spec.scope")):
            async with http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=body) as resp:
                assert resp.status == 422
                assert [c["field"] for c in (await resp.json())["details"]["causes"]] == [field]
    assert bare.list_objects("CustomResourceDefinition") == []


# --- kubectl -------------------------------------------------------------------------------------


async def test_kubectl_get_crd_apply_get_cnp_and_a_422(server: ApiServer, tmp_path: Path) -> None:
    kc = server.kubeconfig(tmp_path / "kubeconfig")
    _, out, _ = await kubectl(kc, "get", "crd")
    assert out.split()[:3] == ["NAME", "CREATED", "AT"] and out.split()[3] == CRD_NAME

    manifest = tmp_path / "cnp.yaml"
    manifest.write_text(yaml.safe_dump(cnp()))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert f"clusternetworkpolicy.{GROUP}/deny-dns created" in out
    _, out, _ = await kubectl(kc, "get", "cnp")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TIER", "PRIORITY", "AGE"]
    assert row.split()[:3] == ["deny-dns", "Admin", "10"]

    # a change applies as a JSON merge patch (no strategic merge for a custom resource)
    manifest.write_text(yaml.safe_dump(cnp(priority=12, port=5353)))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "configured" in out
    stored = server.get_object("ClusterNetworkPolicy", "deny-dns")
    assert stored["spec"]["priority"] == 12 and stored["metadata"]["generation"] == 2
    assert stored["spec"]["egress"][0]["protocols"] == [{"udp": {"destinationPort": {"number": 5353}}}]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cnp("bad", priority=2000)))
    rc, _, err = await kubectl(kc, "apply", "-f", str(bad), ok=False)
    assert rc != 0
    assert 'The ClusterNetworkPolicy "bad" is invalid: spec.priority: Invalid value: 2000' in err
    _, out, _ = await kubectl(kc, "get", "cnp", "-o", "name")
    assert out.split() == [f"clusternetworkpolicy.{GROUP}/deny-dns"]

    _, out, _ = await kubectl(kc, "explain", "cnp.spec.tier")
    assert "Admin" in out and "Baseline" in out


async def test_kubectl_installs_the_crd_from_deploy_then_serves_cnp(bare: ApiServer, tmp_path: Path) -> None:
    kc = bare.kubeconfig(tmp_path / "kubeconfig")
    rc, _, err = await kubectl(kc, "get", "cnp", ok=False)
    assert rc != 0 and 'the server doesn\'t have a resource type "cnp"' in err
    _, out, _ = await kubectl(kc, "apply", "-f", str(CRD_FILE))
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} created" in out
    manifest = tmp_path / "cnp.yaml"
    manifest.write_text(yaml.safe_dump(cnp()))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "created" in out
    _, out, _ = await kubectl(kc, "get", "cnp", "-o", "name")
    assert out.split() == [f"clusternetworkpolicy.{GROUP}/deny-dns"]


async def test_standalone_server_loads_the_crd_and_policies_from_data(tmp_path: Path) -> None:
    from stockade.lab.apiserver.__main__ import load_manifests, parse_args

    assert parse_args(["--without-crds"]).without_crds and not parse_args([]).without_crds
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump_all([cnp(), yaml.safe_load(CRD_FILE.read_text())]))
    srv = ApiServer(crds=False)
    for obj in load_manifests([str(data)]):  # the CRD first, so the policy after it is served
        srv.put_object(obj)
    assert srv.hidden() == frozenset()
    assert [o["metadata"]["name"] for o in srv.list_objects("ClusterNetworkPolicy")] == ["deny-dns"]
