"""NetworkPolicies and pods are checked as the real API server (1.30-1.32) checks them: 422
Invalid with one cause per field, the real messages, nothing stored; defaults filled in as the real
server fills them (policyTypes, port protocols). Unknown and repeated fields are judged by
``fieldValidation``: Strict refuses them (400), Warn (the default) drops them with a warning."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from stockade.lab.apiserver import ApiServer

Obj = dict[str, Any]
POLICIES = "/apis/networking.k8s.io/v1/namespaces/demo/networkpolicies"
PODS = "/api/v1/namespaces/demo/pods"
PORT_RANGE = "must be between 1 and 65535, inclusive"


def policy(name: str = "p", **spec: Any) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, **spec},
    }


def ingress(*, peers: list[Obj] | None = None, ports: list[Obj] | None = None) -> list[Obj]:
    rule: Obj = {}
    if peers is not None:
        rule["from"] = peers
    if ports is not None:
        rule["ports"] = ports
    return [rule]


@pytest.fixture
async def demo(server: ApiServer) -> ApiServer:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    return server


async def send(http: aiohttp.ClientSession, method: str, path: str, body: Any, **params: str) -> tuple[int, Obj, Any]:
    async with http.request(method, path, data=json.dumps(body), params=params) as r:
        return r.status, await r.json(), r.headers.getall("Warning", [])


BAD_POLICIES = [
    (
        ingress(ports=[{"port": 70000}]),
        [("FieldValueInvalid", "spec.ingress[0].ports[0].port", f"Invalid value: 70000: {PORT_RANGE}")],
    ),
    (
        ingress(peers=[{"ipBlock": {"cidr": "10.0.0.0/33"}}]),
        [
            (
                "FieldValueInvalid",
                "spec.ingress[0].from[0].ipBlock.cidr",
                'Invalid value: "10.0.0.0/33": not a valid CIDR',
            )
        ],
    ),
    (
        ingress(peers=[{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "192.168.0.0/16"]}}]),
        [
            (
                "FieldValueInvalid",
                "spec.ingress[0].from[0].ipBlock.except[0]",
                'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
            ),
            (
                "FieldValueInvalid",
                "spec.ingress[0].from[0].ipBlock.except[1]",
                'Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`',
            ),
        ],
    ),
    (
        ingress(peers=[{"ipBlock": {"cidr": ""}}]),
        [("FieldValueRequired", "spec.ingress[0].from[0].ipBlock.cidr", "Required value")],
    ),
    (
        ingress(peers=[{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]),
        [
            ("FieldValueRequired", "spec.ingress[0].from[0]", "Required value: must specify a peer"),
            (
                "FieldValueForbidden",
                "spec.ingress[0].from[1]",
                "Forbidden: may not specify both ipBlock and another peer",
            ),
        ],
    ),
    (
        ingress(ports=[{"port": 80, "endPort": 70}, {"port": "http", "endPort": 90}, {"endPort": 9}]),
        [
            (
                "FieldValueInvalid",
                "spec.ingress[0].ports[0].endPort",
                "Invalid value: 70: must be greater than or equal to `port`",
            ),
            (
                "FieldValueInvalid",
                "spec.ingress[0].ports[1].endPort",
                "Invalid value: 90: may not be specified when `port` is non-numeric",
            ),
            (
                "FieldValueInvalid",
                "spec.ingress[0].ports[2].endPort",
                "Invalid value: 9: may not be specified when `port` is not specified",
            ),
        ],
    ),
    (
        ingress(ports=[{"port": "HTTP", "protocol": "ICMP"}]),
        [
            (
                "FieldValueNotSupported",
                "spec.ingress[0].ports[0].protocol",
                'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
            ),
            (
                "FieldValueInvalid",
                "spec.ingress[0].ports[0].port",
                'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
            ),
            (
                "FieldValueInvalid",
                "spec.ingress[0].ports[0].port",
                'Invalid value: "HTTP": must contain at least one letter (a-z)',
            ),
        ],
    ),
]


@pytest.mark.parametrize(("rules", "causes"), BAD_POLICIES)
async def test_invalid_policies_are_refused_with_the_real_causes(
    demo: ApiServer, http: aiohttp.ClientSession, rules: list[Obj], causes: list[tuple[str, str, str]]
) -> None:
    status, answer, _ = await send(http, "POST", POLICIES, policy(ingress=rules))
    assert status == 422 and answer["reason"] == "Invalid", answer
    assert answer["details"]["group"] == "networking.k8s.io" and answer["details"]["kind"] == "NetworkPolicy"
    assert [(c["reason"], c["field"], c["message"]) for c in answer["details"]["causes"]] == causes
    assert answer["message"].startswith('NetworkPolicy.networking.k8s.io "p" is invalid: ')
    assert demo.list_objects("NetworkPolicy") == []


async def test_selectors_and_policy_types(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    body = policy(policyTypes=["Ingress", "Sideways"])
    body["spec"]["podSelector"] = {
        "matchLabels": {"app": "not ok"},
        "matchExpressions": [
            {"key": "tier", "operator": "In"},
            {"key": "tier", "operator": "Exists", "values": ["x"]},
            {"key": "a/b/c", "operator": "Near", "values": ["y"]},
        ],
    }
    status, answer, _ = await send(http, "POST", POLICIES, body)
    assert status == 422
    fields = [(c["field"], c["message"].split(":")[0]) for c in answer["details"]["causes"]]
    assert fields == [
        ("spec.podSelector.matchLabels", "Invalid value"),
        ("spec.podSelector.matchExpressions[0].values", "Required value"),
        ("spec.podSelector.matchExpressions[1].values", "Forbidden"),
        ("spec.podSelector.matchExpressions[2].operator", "Invalid value"),
        ("spec.podSelector.matchExpressions[2].key", "Invalid value"),
        ("spec.policyTypes[1]", "Unsupported value"),
    ]
    status, answer, _ = await send(http, "POST", POLICIES, policy(policyTypes=["Ingress", "Egress", "Ingress"]))
    assert status == 422 and answer["details"]["causes"][0]["message"] == (
        'Invalid value: []networking.PolicyType{"Ingress", "Egress", "Ingress"}: '
        "may not specify more than two policyTypes"
    )


async def test_defaults_as_the_real_server(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    status, made, _ = await send(http, "POST", POLICIES, policy(ingress=ingress(ports=[{"port": 80}, None])))
    assert status == 201, made
    assert made["spec"]["policyTypes"] == ["Ingress"]
    assert made["spec"]["ingress"][0]["ports"] == [{"port": 80, "protocol": "TCP"}, {"protocol": "TCP"}]
    egress = policy("e", egress=[{"to": [{"ipBlock": {"cidr": "010.0.0.0/8"}}]}])  # leading zeros: sloppy, as Go's
    del egress["spec"]["podSelector"]
    status, made, _ = await send(http, "POST", POLICIES, egress)
    assert status == 201, made
    assert made["spec"]["policyTypes"] == ["Ingress", "Egress"] and made["spec"]["podSelector"] == {}
    # an update is checked too
    made["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = "::/129"
    status, answer, _ = await send(http, "PUT", f"{POLICIES}/e", made)
    assert status == 422 and answer["details"]["causes"][0]["field"] == "spec.egress[0].to[0].ipBlock.cidr"


async def test_pod_container_ports(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "demo"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"containerPort": 70000},
                        {"containerPort": 80, "name": "web"},
                        {"containerPort": 81, "name": "web"},
                    ],
                },
                {"name": "c", "ports": [{"containerPort": 82, "protocol": "ICMP"}]},
            ]
        },
    }
    status, answer, _ = await send(http, "POST", PODS, body)
    assert status == 422
    assert [(c["field"], c["message"]) for c in answer["details"]["causes"]] == [
        ("spec.containers[0].ports[0].containerPort", f"Invalid value: 70000: {PORT_RANGE}"),
        ("spec.containers[0].ports[2].name", 'Duplicate value: "web"'),
        ("spec.containers[1].name", 'Duplicate value: "c"'),
        ("spec.containers[1].ports[0].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
    ]
    body["spec"]["containers"] = [{"name": "c", "ports": [{"containerPort": 80}]}]
    status, made, _ = await send(http, "POST", PODS, body)
    assert status == 201 and made["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


async def test_field_validation(demo: ApiServer, http: aiohttp.ClientSession) -> None:
    body = policy(ingress=ingress(ports=[{"port": 80, "prot": "TCP"}]))
    body["spec"]["podSelectr"] = {}
    status, answer, _ = await send(http, "POST", POLICIES, body, fieldValidation="Strict")
    assert status == 400 and answer["reason"] == "BadRequest"
    assert answer["message"] == (
        'NetworkPolicy in version "v1" cannot be handled as a NetworkPolicy: strict decoding error: '
        'unknown field "spec.ingress[0].ports[0].prot", unknown field "spec.podSelectr"'
    )
    assert demo.list_objects("NetworkPolicy") == []
    status, made, warnings = await send(http, "POST", POLICIES, body)  # Warn, the default: dropped, said
    assert status == 201 and "podSelectr" not in made["spec"] and "prot" not in made["spec"]["ingress"][0]["ports"][0]
    assert warnings == [
        '299 - "unknown field \\"spec.ingress[0].ports[0].prot\\""',
        '299 - "unknown field \\"spec.podSelectr\\""',
    ]
    # a repeated member, as Go's strict decoder sees it (the last one wins otherwise)
    text = json.dumps(policy("dup")).replace('"name": "dup"', '"name": "dup", "name": "dup"')
    async with http.post(POLICIES, data=text, params={"fieldValidation": "Strict"}) as r:
        assert r.status == 400 and (await r.json())["message"].endswith(
            'strict decoding error: duplicate field "metadata.name"'
        )
    # a strict patch names no kind, as the real one
    status, answer, _ = await send(http, "PATCH", f"{POLICIES}/p", {"spec": {"bogus": 1}}, fieldValidation="Strict")
    assert (status, answer["message"]) == (415, answer["message"])  # no content type: not a patch at all
    async with http.patch(
        f"{POLICIES}/p",
        data=json.dumps({"spec": {"bogus": 1}}),
        params={"fieldValidation": "Strict"},
        headers={"Content-Type": "application/merge-patch+json"},
    ) as r:
        assert r.status == 400 and (await r.json())["message"] == 'strict decoding error: unknown field "spec.bogus"'
    status, answer, _ = await send(http, "POST", POLICIES, policy("x"), fieldValidation="Loose")
    assert status == 422 and answer["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loose": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )
