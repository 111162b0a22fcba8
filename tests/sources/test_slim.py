"""What the brain keeps of each object (sources/slim.py): exactly what each reader needs, the same
verdict on malformed objects, and the same node models as from whole objects."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from stockade.brain.drops import IpHistory
from stockade.brain.engine import Engine, validate
from stockade.brain.engine.objects import BETA_ANNOTATION, parse_namespace, parse_pod
from stockade.brain.engine.services import parse_service
from stockade.brain.main import Brain, BrainConfig
from stockade.brain.sources.slim import KEEP_WHOLE_ENV, brain_slimmer, slim
from stockade.brain.startup import cold_start
from stockade.brain.taints import without_startup_taint
from stockade.lab.apiserver import ApiServer

from . import fat

Obj = dict[str, Any]


def test_pod_keeps_only_what_policy_and_the_tools_read() -> None:
    whole = fat.pod("shop", "web-0", "10.244.1.10", "node-1", "web", hostNetwork=False)
    before = copy.deepcopy(whole)
    assert slim("Pod", whole) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "uid": "uid-shop-web-0",
            "creationTimestamp": fat.T,
            "labels": {"app": "web", "pod-template-hash": "abc123"},
        },
        "spec": {
            "nodeName": "node-1",
            "hostNetwork": False,
            "initContainers": [{"ports": [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]}],
            "containers": [
                {
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    ]
                },
                {},
            ],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.10", "podIPs": [{"ip": "10.244.1.10"}]},
    }
    assert whole == before  # the served object is not changed


def test_pod_readers_see_the_same() -> None:
    for whole in (o for o in fat.cluster() if o["kind"] == "Pod"):
        small = slim("Pod", whole)
        assert parse_pod(small) == parse_pod(whole)  # the engine (and explain, lint, dry-run through it)
        a, b = IpHistory(), IpHistory()  # the drops' IP history
        a.observe_pod(whole, at=1.0)
        b.observe_pod(small, at=1.0)
        ip = whole["status"]["podIP"]
        assert a.lookup(ip, 2.0) == b.lookup(ip, 2.0)
        # tokens bind a pod to its node by spec.nodeName and metadata.uid
        assert small["spec"]["nodeName"] == whole["spec"]["nodeName"]
        assert small["metadata"]["uid"] == whole["metadata"]["uid"]


def test_node_keeps_taints_addresses_and_version() -> None:
    whole = fat.node("node-2", tainted=True)
    whole["metadata"]["resourceVersion"] = "42"
    small = slim("Node", whole)
    assert small == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "node-2",
            "uid": "uid-node-2",
            "resourceVersion": "42",
            "labels": {"kubernetes.io/hostname": "node-2"},
        },
        "spec": {"taints": whole["spec"]["taints"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]},
    }
    # the startup taint's removal patches the taints it read, conditional on the resourceVersion
    assert without_startup_taint(small) == without_startup_taint(whole) == [whole["spec"]["taints"][0]]


def test_service_keeps_selector_ports_and_addresses() -> None:
    whole = fat.service("shop", "web", "web")
    small = slim("Service", whole)
    spec = whole["spec"]
    assert small == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {k: spec[k] for k in ("selector", "ports", "clusterIP", "clusterIPs", "type")},
    }
    assert parse_service(small) == parse_service(whole)


def test_namespace_keeps_labels_and_only_the_beta_annotation() -> None:
    whole = fat.namespace("legacy", beta_deny=True)
    small = slim("Namespace", whole)
    assert small == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "legacy",
            "labels": {"team": "a"},
            "annotations": {BETA_ANNOTATION: '{"ingress":{"isolation":"DefaultDeny"}}'},
        },
    }
    assert parse_namespace(small) == parse_namespace(whole)
    assert "annotations" not in slim("Namespace", fat.namespace("shop"))["metadata"]


def test_policy_keeps_its_whole_spec_and_drops_the_rest() -> None:
    whole = fat.cluster()[-2]
    small = slim("NetworkPolicy", whole)
    assert small == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-egress", "namespace": "shop"},
        "spec": whole["spec"],
    }


def test_unknown_kinds_are_kept_whole() -> None:
    obj = {"kind": "EndpointSlice", "metadata": {"name": "x", "managedFields": fat.MANAGED}, "endpoints": []}
    assert slim("EndpointSlice", obj) is obj


def test_replicas_share_their_ports_and_unusual_ones_do_not() -> None:
    a = slim("Pod", fat.pod("shop", "web-0", "10.244.1.10", "node-1", "web"))
    b = slim("Pod", fat.pod("shop", "web-1", "10.244.1.11", "node-2", "web"))
    assert a["spec"]["containers"] is b["spec"]["containers"]
    other = fat.pod("shop", "web-2", "10.244.1.12", "node-2", "web")
    other["spec"]["containers"][0]["ports"][0]["containerPort"] = 8081
    c = slim("Pod", other)
    assert c["spec"]["containers"][0]["ports"][0] == {"name": "http", "containerPort": 8081, "protocol": "TCP"}
    assert a["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    # a port given as true, or no ports key versus ports: null, is not taken for another
    for value in (True, None):
        odd = fat.pod("shop", "web-3", "10.244.1.13", "node-2", "web")
        odd["spec"]["containers"][1]["ports"] = value
        if value is True:
            odd["spec"]["containers"][0]["ports"][1]["containerPort"] = True
        assert slim("Pod", odd)["spec"]["containers"] == [
            {"ports": [{k: p[k] for k in ("name", "containerPort", "protocol")} for p in cont["ports"]]}
            if isinstance(cont["ports"], list)
            else {"ports": cont["ports"]}
            for cont in odd["spec"]["containers"]
        ]


def test_label_strings_are_shared_between_objects() -> None:
    a = slim("Pod", fat.pod("shop", "web-0", "10.244.1.10", "node-1", "web"))
    b = slim("Pod", fat.pod("sh" + "op", "web-1", "10.244.1.11", "node-" + "1", "w" + "eb"))
    assert a["metadata"]["labels"]["app"] is b["metadata"]["labels"]["app"]
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
    assert a["spec"]["nodeName"] is b["spec"]["nodeName"]


BAD_SHAPES: list[tuple[str, Any]] = [
    ("spec", [1]),
    ("spec.containers", {"a": 1}),
    ("spec.containers[0]", "not-a-container"),
    ("spec.containers[0].ports", {"http": 80}),
    ("spec.containers[0].ports[0]", 80),
    ("spec.containers[0].ports[0].containerPort", "eighty"),
    ("spec.initContainers", 7),
    ("spec.hostNetwork", "yes"),
    ("spec.nodeName", 3),
    ("status", "Running"),
    ("status.phase", 1),
    ("status.podIPs", "10.0.0.1"),
    ("metadata.labels", ["a"]),
    ("metadata.annotations", ["a"]),
    ("metadata.creationTimestamp", 5),
]


def _set(obj: Obj, path: str, value: Any) -> Obj:
    obj = copy.deepcopy(obj)
    parts = path.replace("[", ".").replace("]", "").split(".")
    cur: Any = obj
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return obj


@pytest.mark.parametrize(("path", "value"), BAD_SHAPES, ids=[p for p, _ in BAD_SHAPES])
def test_malformed_pods_are_refused_the_same(path: str, value: Any) -> None:
    bad = _set(fat.pod("shop", "web-0", "10.244.1.10", "node-1", "web"), path, value)
    found = validate.problem(bad, "Pod")
    assert found is not None, "the case must be a refused pod"
    assert validate.problem(slim("Pod", bad), "Pod") == found
    whole, small = Engine(), Engine()
    whole.upsert(bad)
    small.upsert(slim("Pod", bad))
    assert small.rejections() == whole.rejections() != []


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("Node", {**fat.node("n"), "spec": "x"}),
        ("Node", {**fat.node("n"), "status": {"addresses": {"a": 1}}}),
        ("Service", {**fat.service("shop", "s", "a"), "spec": {"selector": ["a"]}}),
        ("Service", {**fat.service("shop", "s", "a"), "spec": {"ports": [{"port": "80"}]}}),
        ("Namespace", {**fat.namespace("x"), "metadata": {"name": "x", "annotations": {BETA_ANNOTATION: "{"}}}),
        ("NetworkPolicy", fat.policy("shop", "p", {"podSelector": [], "ingress": 3})),
    ],
)
def test_malformed_other_kinds_are_refused_the_same(kind: str, obj: Obj) -> None:
    whole, small = Engine(), Engine()
    whole.upsert(obj)
    small.upsert(slim(kind, obj))
    assert small.rejections() == whole.rejections() != []


def _by_kind(objs: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def test_an_engine_fed_slim_objects_computes_the_same_models() -> None:
    objs = fat.cluster()
    whole, small = Engine(beta_default_deny=True), Engine(beta_default_deny=True)  # as the brain runs it
    assert cold_start(whole, _by_kind(objs)) == cold_start(small, _by_kind([slim(o["kind"], o) for o in objs])) == 0
    assert whole.nodes() == small.nodes() == ["node-1", "node-2"]
    assert any(m.ingress or m.egress for m in whole.models().values())  # the policies do select pods
    assert small.models() == whole.models()
    assert small.rejections() == whole.rejections()
    assert small.lint() == whole.lint()
    assert small.not_realized() == whole.not_realized()
    # and event by event: a pod moves, the beta namespace loses its annotation
    moved = fat.pod("shop", "web-1", "10.244.1.20", "node-1", "web")
    plain = fat.namespace("frozen")
    for obj in (moved, plain):
        assert small.upsert(slim(obj["kind"], obj)) == whole.upsert(obj)
    assert small.models() == whole.models()


def test_the_benchmark_baseline_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert brain_slimmer() is slim
    monkeypatch.setenv(KEEP_WHOLE_ENV, "1")
    assert brain_slimmer() is None


def _brain(server: ApiServer, tmp_path: Path, name: str) -> Brain:
    return Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / f"kc-{name}")),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            admin_mtls_listen=None,
            http="127.0.0.1:0",
            insecure=True,
        )
    )


async def _seen(brain: Brain, server: ApiServer) -> None:
    while brain.seen_rv < server.resource_version:  # the test's own timeout bounds this
        await asyncio.sleep(0.02)
    await brain.worker.idle()


async def test_a_brain_fed_fat_objects_computes_what_a_slim_one_does(
    server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real brains list and watch the lab API server: one keeps objects whole (the benchmark's
    baseline switch), one slims them; their node models, refusals and lint agree, at the cold
    start and after watch events, and only the slim one drops what nobody reads."""
    for obj in fat.cluster():
        server.put_object(obj)
    monkeypatch.setenv(KEEP_WHOLE_ENV, "1")
    whole = _brain(server, tmp_path, "whole")
    await asyncio.wait_for(whole.start(), 30)
    monkeypatch.delenv(KEEP_WHOLE_ENV)
    small = _brain(server, tmp_path, "slim")
    try:
        await asyncio.wait_for(small.start(), 30)

        async def agree() -> None:
            for b in (whole, small):
                await asyncio.wait_for(_seen(b, server), 30)
            assert small.engine.nodes() == whole.engine.nodes() == ["node-1", "node-2"]
            assert any(m.ingress or m.egress for m in whole.engine.models().values())
            assert small.engine.models() == whole.engine.models()
            assert small.engine.rejections() == whole.engine.rejections()
            assert small.engine.lint() == whole.engine.lint()

        await agree()
        assert all("managedFields" in o["metadata"] for o in whole.objects())
        assert not any("managedFields" in o["metadata"] for o in small.objects())
        held = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in whole.objects()}
        for o in small.objects():  # what the slim brain holds is exactly the slimmed served object
            assert o == slim(o["kind"], held[o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]])
        # watch events: a pod moves and is relabelled, a policy changes, a namespace loses its beta annotation
        moved = fat.pod("shop", "web-1", "10.244.1.20", "node-1", "db")
        server.put_object(moved)
        server.put_object(
            fat.policy("shop", "db", {"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]})
        )
        server.put_object(fat.namespace("frozen"))
        server.delete_object("Pod", "db-0", "shop")
        await agree()
    finally:
        await small.stop()
        await whole.stop()
