"""The lab API server refuses what the real one refuses, with the real codes and messages, and
stores nothing then: 400 for a body that does not fit the Go types (typed decoding), 422 Invalid
with causes for invalid names, label keys and values; a patch whose result does not decode is a
422 on ``patch``. Checked with raw HTTP, the real kubernetes-asyncio client and the real kubectl.

Fault injection (off by default) stores such objects verbatim; the server then serves them
(get, list, label-selected list and watch, ``kubectl get`` tables) and deletes them, and its
EndpointSlice controller never fails a write because of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiError, ApiServer
from stockade.lab.apiserver.server import RAW_OBJECTS_PATH

from .test_kubectl import kubectl

Obj = dict[str, Any]
LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def pod(name: str = "p", **fields: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
    }
    obj.update(fields)
    return obj


def with_meta(obj: Obj, **meta: Any) -> Obj:
    return {**obj, "metadata": {**obj["metadata"], **meta}}


def cannot(kind: str, what: str, where: str, go_type: str) -> str:
    head = f'{kind} in version "v1" cannot be handled as a {kind}'
    return f"{head}: json: cannot unmarshal {what} into Go struct field {where} of type {go_type}"


@pytest.fixture
async def demo(server: ApiServer) -> ApiServer:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    return server


@pytest.fixture
async def faulty() -> AsyncIterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2, fault_injection=True)
    await srv.start("127.0.0.1", 0)
    srv.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    try:
        yield srv
    finally:
        await srv.stop()


async def post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(path, json=body) as resp:
        return resp.status, await resp.json()


PODS = "/api/v1/namespaces/demo/pods"

DECODE_CASES = [
    (
        "labels-list",
        PODS,
        with_meta(pod(), labels=["app"]),
        cannot("Pod", "array", "ObjectMeta.metadata.labels", "map[string]string"),
    ),
    (
        "label-value-number",
        PODS,
        with_meta(pod(), labels={"app": 5}),
        cannot("Pod", "number", "ObjectMeta.metadata.labels", "string"),
    ),
    (
        "label-value-map",
        PODS,
        with_meta(pod(), labels={"app": {"b": [1]}}),
        cannot("Pod", "object", "ObjectMeta.metadata.labels", "string"),
    ),
    (
        "annotations-string",
        PODS,
        with_meta(pod(), annotations="x"),
        cannot("Pod", "string", "ObjectMeta.metadata.annotations", "map[string]string"),
    ),
    ("metadata-list", PODS, {**pod(), "metadata": [1]}, cannot("Pod", "array", "Pod.metadata", "v1.ObjectMeta")),
    ("spec-list", PODS, pod(spec=[1]), cannot("Pod", "array", "Pod.spec", "v1.PodSpec")),
    ("status-string", PODS, pod(status="Running"), cannot("Pod", "string", "Pod.status", "v1.PodStatus")),
    (
        "containers-object",
        PODS,
        pod(spec={"containers": {"name": "c"}}),
        cannot("Pod", "object", "PodSpec.spec.containers", "[]v1.Container"),
    ),
    (
        "container-port-string",
        PODS,
        pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}),
        cannot("Pod", "string", "ContainerPort.spec.containers.ports.containerPort", "int32"),
    ),
    (
        "container-port-fraction",
        PODS,
        pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": 80.5}]}]}),
        cannot("Pod", "number 80.5", "ContainerPort.spec.containers.ports.containerPort", "int32"),
    ),
    (
        "container-port-too-big",
        PODS,
        pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": 2**40}]}]}),
        cannot("Pod", f"number {2**40}", "ContainerPort.spec.containers.ports.containerPort", "int32"),
    ),
    (
        "pod-ips-strings",
        PODS,
        pod(status={"podIPs": ["10.0.0.1"]}),
        cannot("Pod", "string", "PodStatus.status.podIPs", "v1.PodIP"),
    ),
    (
        "namespace-labels-list",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hx", "labels": ["a"]}},
        cannot("Namespace", "array", "ObjectMeta.metadata.labels", "map[string]string"),
    ),
    (
        "node-spec-string",
        "/api/v1/nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "hx"}, "spec": "garbage"},
        cannot("Node", "string", "Node.spec", "v1.NodeSpec"),
    ),
    (
        "node-addresses-string",
        "/api/v1/nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "hx"}, "status": {"addresses": "x"}},
        cannot("Node", "string", "NodeStatus.status.addresses", "[]v1.NodeAddress"),
    ),
    (
        "service-ports-object",
        "/api/v1/namespaces/demo/services",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": {"port": 80}}},
        cannot("Service", "object", "ServiceSpec.spec.ports", "[]v1.ServicePort"),
    ),
    (
        "service-status-string",
        "/api/v1/namespaces/demo/services",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}, "status": "garbage"},
        cannot("Service", "string", "Service.status", "v1.ServiceStatus"),
    ),
    (
        "policy-spec-string",
        "/apis/networking.k8s.io/v1/namespaces/demo/networkpolicies",
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np"}, "spec": "x"},
        cannot("NetworkPolicy", "string", "NetworkPolicy.spec", "v1.NetworkPolicySpec"),
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
async def test_wrong_json_types_are_400_and_nothing_is_stored(
    demo: ApiServer, http: aiohttp.ClientSession, path: str, body: Obj, message: str
) -> None:
    rv = demo.resource_version
    status, answer = await post(http, path, body)
    assert (status, answer["reason"], answer["code"], answer["kind"]) == (400, "BadRequest", 400, "Status")
    assert answer["message"] == message
    assert demo.resource_version == rv, "an object was stored (or an event made) for a refused body"
    name = body["metadata"]["name"] if isinstance(body["metadata"], dict) else "p"
    async with http.get(f"{path}/{name}") as resp:
        assert resp.status == 404


async def test_first_error_in_document_order_and_null_is_fine(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    body = with_meta(pod(spec=[1]), labels={"a": None}, annotations=None)
    body = {"metadata": body["metadata"], "spec": [1], "status": 7}
    status, answer = await post(http, PODS, {"apiVersion": "v1", "kind": "Pod", **body})
    assert status == 400 and answer["message"].endswith("Go struct field Pod.spec of type v1.PodSpec")
    ok = with_meta(pod(), labels={"a": None}, annotations=None)  # null leaves Go's zero value
    status, answer = await post(http, PODS, ok)
    assert status == 201, answer


async def test_invalid_labels_and_names_are_422_with_causes(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    rv = demo.resource_version
    status, answer = await post(http, PODS, with_meta(pod(), labels={"app": "not valid!", "a/b/c": "x"}))
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["message"].startswith('Pod "p" is invalid: [metadata.labels: Invalid value: "not valid!": ')
    assert answer["details"]["name"] == "p" and answer["details"]["kind"] == "Pod"
    causes = answer["details"]["causes"]
    assert causes[0] == {
        "reason": "FieldValueInvalid",
        "field": "metadata.labels",
        "message": f'Invalid value: "not valid!": {LABEL_VALUE_RULE}',
    }
    assert causes[1]["field"] == "metadata.labels" and causes[1]["message"].startswith(
        'Invalid value: "a/b/c": a qualified name must consist of'
    )
    assert demo.resource_version == rv

    cases = [
        ({"x" * 64: "v"}, '"' + "x" * 64 + '": name part must be no more than 63 characters'),
        ({"-x": "v"}, f'"-x": {NAME_PART_RULE}'),
        ({"/x": "v"}, '"/x": prefix part must be non-empty'),
        ({"Example.com/x": "v"}, '"Example.com/x": prefix part a lowercase RFC 1123 subdomain'),
        ({"k": "v" * 64}, '"' + "v" * 64 + '": must be no more than 63 characters'),
        ({"k": "-v"}, f'"-v": {LABEL_VALUE_RULE}'),
    ]
    for labels, expected in cases:
        status, answer = await post(http, PODS, with_meta(pod(), labels=labels))
        assert status == 422, (labels, answer)
        assert f"metadata.labels: Invalid value: {expected}" in answer["message"], answer["message"]
    fine = {"example.com/My_name.x-1": "", "k": "My_value.1-2", "x" * 63: "v" * 63}
    status, answer = await post(http, PODS, with_meta(pod(), labels=fine))
    assert status == 201, answer

    status, answer = await post(http, PODS, with_meta(pod("q"), annotations={"bad key": "v"}))
    assert status == 422 and answer["details"]["causes"][0]["field"] == "metadata.annotations"
    status, answer = await post(http, PODS, with_meta(pod("q"), annotations={"k": "v" * (256 * 1024)}))
    assert status == 422
    assert answer["details"]["causes"] == [
        {
            "reason": "FieldValueTooLong",
            "field": "metadata.annotations",
            "message": "Too long: must have at most 262144 bytes",
        }
    ]
    status, answer = await post(http, PODS, with_meta(pod("Bad_Name")))
    assert status == 422
    assert answer["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'
    )
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}}
    status, answer = await post(http, "/api/v1/namespaces/demo/services", svc)
    assert status == 422 and "a DNS-1035 label must consist of" in answer["message"]


async def test_updates_and_patches_are_checked_too(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, PODS, pod())
    assert status == 201
    before = demo.get_object("Pod", "p", "demo")
    async with http.put(f"{PODS}/p", json=with_meta(before, labels=["x"])) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == cannot(
            "Pod", "array", "ObjectMeta.metadata.labels", "map[string]string"
        )
    async with http.put(f"{PODS}/p/status", json={**before, "status": "Running"}) as resp:
        assert resp.status == 400
    async with http.put(f"{PODS}/p", json=with_meta(before, labels={"k": "bad value"})) as resp:
        assert resp.status == 422
    headers = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(f"{PODS}/p", data=json.dumps({"metadata": {"labels": ["x"]}}), headers=headers) as resp:
        answer = await resp.json()
    assert (resp.status, answer["reason"]) == (422, "Invalid")
    (cause,) = answer["details"]["causes"]
    assert cause["field"] == "patch"
    assert cause["message"].endswith(
        ": json: cannot unmarshal array into Go struct field ObjectMeta.metadata.labels of type map[string]string"
    )
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    async with http.patch(f"{PODS}/p", data=json.dumps({"spec": {"containers": "x"}}), headers=headers) as resp:
        assert resp.status == 422
    assert demo.get_object("Pod", "p", "demo") == before, "a refused write changed the object"


async def test_kubernetes_asyncio_sees_the_real_errors(demo: ApiServer, tmp_path: Path) -> None:
    async with await config.new_client_from_config(str(demo.kubeconfig(tmp_path / "kc"))) as ac:
        core = client.CoreV1Api(ac)
        with pytest.raises(ApiException) as err:
            await core.create_namespaced_pod("demo", with_meta(pod(), labels=["app"]))
        assert err.value.status == 400
        status = json.loads(err.value.body)
        assert status["reason"] == "BadRequest"
        assert status["message"] == cannot("Pod", "array", "ObjectMeta.metadata.labels", "map[string]string")
        with pytest.raises(ApiException) as err:
            await core.create_namespaced_pod("demo", with_meta(pod(), labels={"app": "no way"}))
        assert err.value.status == 422
        causes = json.loads(err.value.body)["details"]["causes"]
        assert [(c["reason"], c["field"]) for c in causes] == [("FieldValueInvalid", "metadata.labels")]
        with pytest.raises(ApiException) as err:
            await core.read_namespaced_pod("p", "demo")
        assert err.value.status == 404
        assert (await core.list_namespaced_pod("demo")).items == []


async def test_kubectl_sees_the_real_errors(demo: ApiServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    kc = demo.kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "bad.yaml"
    # kubectl decodes metadata itself, with the real Go types: its text is the server's
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: demo, labels: {app: 5}}\n")
    rc, _, err = await kubectl(kc, "create", "-f", str(manifest), ok=False)
    _, answer = await post(http, PODS, with_meta(pod(), labels={"app": 5}))
    assert rc != 0 and "unable to decode" in err
    assert answer["message"].endswith(": " + err.split('": ', 1)[1].strip()), (err, answer)
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: demo, labels: {app: web}}\nspec: [1]\n"
    )
    rc, _, err = await kubectl(kc, "create", "-f", str(manifest), ok=False)
    assert rc != 0
    assert (
        f'Error from server (BadRequest): error when creating "{manifest}": Pod in version "v1" cannot be '
        "handled as a Pod: json: cannot unmarshal array into Go struct field Pod.spec of type v1.PodSpec" in err
    ), err
    fixed = manifest.read_text().replace("spec: [1]", "spec: {containers: [{name: c}]}")
    manifest.write_text(fixed.replace("labels: {app: web}", "labels: {app: 'not ok'}"))
    rc, _, err = await kubectl(kc, "apply", "-f", str(manifest), ok=False)
    assert rc != 0
    assert f'The Pod "p" is invalid: metadata.labels: Invalid value: "not ok": {LABEL_VALUE_RULE}' in err, err
    rc, out, _ = await kubectl(kc, "get", "pods", "-n", "demo", "-o", "json")
    assert json.loads(out)["items"] == []

    # a valid pod, then an apply that would make its port a string: kubectl's patch is refused
    manifest.write_text(manifest.read_text().replace("'not ok'", "web").replace("{name: c}", "{name: c, image: x}"))
    await kubectl(kc, "apply", "-f", str(manifest))
    bad_port = manifest.read_text().replace("image: x}", "image: x, ports: [{containerPort: '80'}]}")
    manifest.write_text(bad_port)
    rc, _, err = await kubectl(kc, "apply", "-f", str(manifest), ok=False)
    assert rc != 0 and "ContainerPort.spec.containers.ports.containerPort of type int32" in err, err
    assert "ports" not in demo.get_object("Pod", "p", "demo")["spec"]["containers"][0]


# -- fault injection ------------------------------------------------------------------------------

ODD = [
    with_meta(pod("labels-list"), labels=["app"]),
    pod("spec-list", spec=[1]),
    pod("status-string", status="Running"),
    with_meta(pod("label-map"), labels={"app": {"b": [1]}}),
    pod("ports-junk", spec={"containers": [{"name": "c", "ports": [{"containerPort": "x", "name": 5}]}]}),
    pod("junk-ips", status={"podIPs": "x", "podIP": 5, "conditions": [1, None]}),
]


async def test_fault_injection_is_off_unless_enabled(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, RAW_OBJECTS_PATH, pod(spec=[1]))
    assert status == 404
    with pytest.raises(ApiError) as err:
        demo.get_object("Pod", "p", "demo")
    assert err.value.code == 404


async def test_injected_objects_are_served_and_deleted_with_a_service_present(
    faulty: ApiServer, tmp_path: Path
) -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    faulty.put_object(svc)
    async with aiohttp.ClientSession(base_url=faulty.url) as http:
        async with http.get(f"{PODS}?watch=true&labelSelector=app%3Dweb&timeoutSeconds=5") as watch_resp:
            for obj in ODD:
                status, stored = await post(http, RAW_OBJECTS_PATH, obj)
                assert status == 201, stored
                assert {k: v for k, v in stored.items() if k != "metadata"} == {
                    k: v for k, v in obj.items() if k != "metadata"
                }
                name = obj["metadata"]["name"]
                async with http.get(f"{PODS}/{name}") as resp:
                    assert resp.status == 200
                    served = await resp.json()
                assert served["metadata"]["labels"] == obj["metadata"]["labels"] and served["spec"] == obj["spec"]
            # a valid pod is still refused on the normal path, and selected lists do not fail
            status, _ = await post(http, PODS, with_meta(pod("normal"), labels=["app"]))
            assert status == 400
            async with http.get(f"{PODS}?labelSelector=app%3Dweb") as resp:
                assert resp.status == 200
                names = {i["metadata"]["name"] for i in (await resp.json())["items"]}
            assert "labels-list" not in names and {"spec-list", "status-string"} <= names
            status, _ = await post(http, PODS, pod("good"))
            assert status == 201
            watch_lines = []
            while True:
                line = await asyncio.wait_for(watch_resp.content.readline(), 10)
                watch_lines.append(json.loads(line)["object"]["metadata"]["name"])
                if watch_lines[-1] == "good":
                    break
            assert "spec-list" in watch_lines and "labels-list" not in watch_lines

        kc = faulty.kubeconfig(tmp_path / "kubeconfig")
        _, out, _ = await kubectl(kc, "get", "pods", "-n", "demo", "-o", "wide")
        assert {line.split()[0] for line in out.splitlines()[1:]} == {o["metadata"]["name"] for o in ODD} | {"good"}
        _, out, _ = await kubectl(kc, "get", "endpointslices", "-n", "demo", "-o", "json")
        # the selected pods with an address (the port resolves in none): not the label-map pod
        ends = [e["targetRef"]["name"] for s in json.loads(out)["items"] for e in s["endpoints"]]
        assert sorted(ends) == ["good", "ports-junk", "spec-list"]

        # every delete succeeds while the Service selects pods, and an injected object can be replaced
        for obj in ODD[1:]:
            async with http.delete(f"{PODS}/{obj['metadata']['name']}") as resp:
                assert resp.status == 200, await resp.text()
        async with http.put(f"{PODS}/labels-list", json=pod("labels-list")) as resp:
            assert resp.status == 200, await resp.text()
        async with http.delete(f"{PODS}/labels-list") as resp:
            assert resp.status == 200
        async with http.delete("/api/v1/namespaces/demo/services/web") as resp:
            assert resp.status == 200

        # an injected Service with a junk spec: the controller and the delete survive it
        status, _ = await post(
            http, RAW_OBJECTS_PATH, {**svc, "metadata": {"name": "junk", "namespace": "demo"}, "spec": "garbage"}
        )
        assert status == 201
        status, _ = await post(http, PODS, pod("after"))
        assert status == 201
        async with http.delete("/api/v1/namespaces/demo/services/junk") as resp:
            assert resp.status == 200
        status, answer = await post(http, RAW_OBJECTS_PATH, {"kind": "Pod", "metadata": {"name": ["x"]}})
        assert status == 400 and "fault injection" in answer["message"]


async def test_nulls_in_a_service_are_go_zero_values(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    """A null port decodes to a zero ServicePort (then fails validation, 422, as the real server's),
    a null selector value to "", a null spec to an empty one: never a 500."""
    svc = "/api/v1/namespaces/demo/services"
    base = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    status, answer = await post(http, svc, {**base, "spec": {"ports": [None]}})
    assert status == 422 and "spec.ports[0].port" in answer["message"], answer
    status, answer = await post(http, svc, {**base, "spec": None})
    assert status == 422 and "spec.ports: Required value" in answer["message"], answer
    ok = {**base, "spec": {"selector": {"app": None}, "ports": [{"port": 80}]}}
    status, answer = await post(http, svc, ok)
    assert status == 201 and answer["spec"]["selector"] == {"app": ""}, answer
