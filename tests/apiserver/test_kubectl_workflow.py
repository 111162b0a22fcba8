"""An operator's day with the real kubectl against the lab's API server, with kubectl's default
validation (no --validate=false): apply, explain, strict and warned unknown fields, server-side
validation and dry runs, edit (a patch), label, annotate, delete, and get -w / -o wide with the
real columns the server prints."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from stockade.lab.apiserver import ApiServer

from .test_kubectl import KUBECTL, kubectl

POLICY = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: CIDR}
    ports:
    - {port: PORT}
"""


def policy(cidr: str = "10.0.0.0/8", port: int = 80) -> str:
    return POLICY.replace("CIDR", cidr).replace("PORT", str(port))


def running_pod(name: str, ip: str, node: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.fixture
def kc(server: ApiServer, tmp_path: Path) -> Path:
    return server.kubeconfig(tmp_path / "kubeconfig")


async def test_apply_and_explain_from_the_openapi(server: ApiServer, kc: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(policy())
    _, out, err = await kubectl(kc, "apply", "-f", str(manifest))
    assert "networkpolicy.networking.k8s.io/web created" in out and "Warning" not in err
    manifest.write_text(policy(port=8080))
    _, out, err = await kubectl(kc, "apply", "-f", str(manifest))
    assert "networkpolicy.networking.k8s.io/web configured" in out
    assert "openapi" not in err  # the patch came from the v3 document, no fallback warning
    spec = server.get_object("NetworkPolicy", "web", "demo")["spec"]
    assert spec["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}] and spec["policyTypes"] == ["Ingress"]

    typo = tmp_path / "typo.yaml"
    typo.write_text(policy().replace("podSelector:", "podSelectr:").replace("name: web", "name: typo"))
    rc, _, err = await kubectl(kc, "apply", "--validate=strict", "-f", str(typo), ok=False)
    assert rc == 1 and 'strict decoding error: unknown field "spec.podSelectr"' in err, err
    assert [p["metadata"]["name"] for p in server.list_objects("NetworkPolicy")] == ["web"]
    _, out, err = await kubectl(kc, "apply", "--validate=warn", "-f", str(typo))
    assert 'Warning: unknown field "spec.podSelectr"' in err and "networkpolicy.networking.k8s.io/typo created" in out
    assert server.get_object("NetworkPolicy", "typo", "demo")["spec"]["podSelector"] == {}  # dropped, defaulted

    _, out, _ = await kubectl(kc, "explain", "networkpolicy.spec")
    assert out.startswith("GROUP:      networking.k8s.io\nKIND:       NetworkPolicy\nVERSION:    v1\n")
    assert "FIELD: spec <NetworkPolicySpec>" in out
    for field in (
        "egress\t<[]NetworkPolicyEgressRule>",
        "ingress\t<[]NetworkPolicyIngressRule>",
        "podSelector\t<LabelSelector>",
    ):
        assert field in out, out
    _, out, _ = await kubectl(kc, "explain", "networkpolicy.spec.ingress.from.ipBlock")
    assert "cidr\t<string> -required-" in out
    _, out, _ = await kubectl(kc, "explain", "svc.spec.ports.targetPort")
    assert "FIELD: targetPort <IntOrString>" in out
    _, out, _ = await kubectl(kc, "explain", "pods.spec.containers.ports", "--output", "plaintext-openapiv2")
    assert "RESOURCE: ports <[]Object>" in out and "containerPort\t<integer> -required-" in out  # from v2 protobuf


async def test_server_side_validation_and_dry_run(server: ApiServer, kc: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy(cidr="10.0.0.0/33", port=70000))
    rc, _, err = await kubectl(kc, "apply", "-f", str(bad), ok=False)
    assert rc == 1
    assert (
        'The NetworkPolicy "web" is invalid: \n'
        "* spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n"
        '* spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": not a valid CIDR'
    ) in err, err
    assert server.list_objects("NetworkPolicy") == []

    manifest = tmp_path / "web.yaml"
    manifest.write_text(policy())
    before = server.resource_version
    _, out, _ = await kubectl(kc, "apply", "--dry-run=server", "-f", str(manifest))
    assert "networkpolicy.networking.k8s.io/web created (server dry run)" in out
    assert server.resource_version == before and server.list_objects("NetworkPolicy") == []  # nor the namespace
    rc, _, err = await kubectl(kc, "apply", "--dry-run=server", "-f", str(bad), ok=False)
    assert rc == 1 and "not a valid CIDR" in err  # a dry run is validated in full
    await kubectl(kc, "apply", "-f", str(manifest))
    version = server.get_object("NetworkPolicy", "web", "demo")["metadata"]["resourceVersion"]
    manifest.write_text(policy(port=443))
    _, out, _ = await kubectl(kc, "apply", "--dry-run=server", "-f", str(manifest), "-o", "json")
    shown = json.loads(out)["items"][1]
    assert shown["spec"]["ingress"][0]["ports"][0]["port"] == 443
    rc, out, _ = await kubectl(kc, "diff", "-f", str(manifest), ok=False)  # a dry-run patch, compared
    assert rc == 1 and "-    - port: 80\n" in out and "+    - port: 443\n" in out, out
    _, out, _ = await kubectl(kc, "delete", "networkpolicy", "web", "-n", "demo", "--dry-run=server")
    assert 'networkpolicy.networking.k8s.io "web" deleted (server dry run)' in out
    _, out, _ = await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team=a", "--dry-run=server")
    assert "labeled (server dry run)" in out
    stored = server.get_object("NetworkPolicy", "web", "demo")
    assert stored["metadata"]["resourceVersion"] == version and stored["spec"]["ingress"][0]["ports"][0]["port"] == 80
    assert "labels" not in stored["metadata"]


async def test_edit_label_annotate_delete_and_watch(server: ApiServer, kc: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(policy())
    await kubectl(kc, "apply", "-f", str(manifest))
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import pathlib, sys\n"
        "p = pathlib.Path(sys.argv[-1])\n"
        "p.write_text(p.read_text().replace(sys.argv[1], sys.argv[2]))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}  # kubectl edit keeps refused edits there

    async def edit(old: str, new: str, ok: bool = True) -> tuple[int, str, str]:
        env["KUBE_EDITOR"] = f"{sys.executable} {editor} {old} {new}"
        return await kubectl(kc, "edit", "networkpolicy", "web", "-n", "demo", ok=ok, env=env)

    assert KUBECTL
    watch = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kc), "--cache-dir", str(kc.parent / "kube-cache"),
        "get", "networkpolicies", "-n", "demo", "-w", "--output-watch-events",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, out, _ = await edit("10.0.0.0/8", "10.1.0.0/16")
        assert "networkpolicy.networking.k8s.io/web edited" in out
        assert server.get_object("NetworkPolicy", "web", "demo")["spec"]["ingress"][0]["from"][0]["ipBlock"] == {
            "cidr": "10.1.0.0/16"
        }
        rc, _, err = await edit("10.1.0.0/16", "10.1.0.0/99", ok=False)
        assert rc == 1 and 'networkpolicies.networking.k8s.io "web" is invalid' in err, err
        kept = err.split('stored to "', 1)[1].split('"', 1)[0]  # the refused edit, the server's causes on top
        assert (
            '* spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.1.0.0/99": not a valid CIDR'
            in Path(kept).read_text()
        )
        assert (
            server.get_object("NetworkPolicy", "web", "demo")["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"]
            == "10.1.0.0/16"
        )

        _, out, _ = await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team=shop")
        assert "networkpolicy.networking.k8s.io/web labeled" in out
        rc, _, err = await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team=cart", ok=False)
        assert rc == 1 and "--overwrite is false" in err
        await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team=cart", "--overwrite")
        rc, _, err = await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team=not ok", ok=False)
        assert rc == 1 and 'invalid label value: "team=not ok"' in err, err  # kubectl's own check
        _, out, _ = await kubectl(kc, "annotate", "networkpolicy", "web", "-n", "demo", "owner=ops")
        assert "networkpolicy.networking.k8s.io/web annotated" in out
        meta = server.get_object("NetworkPolicy", "web", "demo")["metadata"]
        assert meta["labels"] == {"team": "cart"} and meta["annotations"]["owner"] == "ops"
        await kubectl(kc, "label", "networkpolicy", "web", "-n", "demo", "team-")
        assert (
            "labels" not in server.get_object("NetworkPolicy", "web", "demo")["metadata"]
            or not (server.get_object("NetworkPolicy", "web", "demo")["metadata"]["labels"])
        )
        # (one object at a time: the lab deletes a namespace's content with it at once, so a
        # `delete -f` naming both would find the policy gone; a real namespace terminates first)
        _, out, _ = await kubectl(kc, "delete", "networkpolicy", "web", "-n", "demo")
        assert 'networkpolicy.networking.k8s.io "web" deleted' in out
        assert server.list_objects("NetworkPolicy") == []

        assert watch.stdout is not None
        events: list[str] = []
        while not events or events[-1].split()[0] != "DELETED":
            line = (await asyncio.wait_for(watch.stdout.readline(), 60)).decode()
            assert line, f"the watch ended early: {events}"
            events.append(line)
        assert events[0].split() == ["EVENT", "NAME", "POD-SELECTOR", "AGE"]
        assert events[1].split()[:3] == ["ADDED", "web", "app=web"]
        assert [e.split()[0] for e in events[2:]].count("MODIFIED") >= 5  # edit, labels, annotation
    finally:
        watch.terminate()
        await watch.wait()


async def test_tables_show_the_real_columns(server: ApiServer, kc: Path) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    server.put_object(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"kubeletVersion": "v1.30.0", "osImage": "Stockade lab", "kernelVersion": "6.1.0"},
            },
        }
    )
    assert KUBECTL
    watch = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kc), "--cache-dir", str(kc.parent / "kube-cache"),
        "get", "pods", "-n", "demo", "-o", "wide", "-w",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:

        async def watching() -> None:
            while not server.watch_count:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(watching(), 60)
        server.put_object(running_pod("web-1", "10.244.1.5", "node-1"))
        assert watch.stdout is not None
        header, row = [(await asyncio.wait_for(watch.stdout.readline(), 30)).decode().split() for _ in range(2)]
        assert header == [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES",
        ]
        assert row[:3] == ["web-1", "1/1", "Running"] and row[5:] == ["10.244.1.5", "node-1", "<none>", "<none>"]
    finally:
        watch.terminate()
        await watch.wait()

    _, out, _ = await kubectl(kc, "get", "pods", "-n", "demo")
    assert out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    _, out, _ = await kubectl(kc, "get", "nodes", "-o", "wide")
    header, row = (line.split() for line in out.splitlines())
    assert header[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and header[5:7] == ["INTERNAL-IP", "EXTERNAL-IP"]
    assert row[:3] == ["node-1", "Ready", "worker"] and row[4:7] == ["v1.30.0", "10.0.0.11", "<none>"]
    _, out, _ = await kubectl(kc, "get", "namespaces")
    assert out.splitlines()[1].split()[:2] == ["demo", "Active"]
    server.put_object(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "demo"},
            "spec": {
                "podSelector": {
                    "matchLabels": {"app": "db"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
                }
            },
        }
    )
    _, out, _ = await kubectl(kc, "get", "networkpolicies", "-n", "demo")
    header, row = (line.split(None, 2) for line in out.splitlines())
    assert header == ["NAME", "POD-SELECTOR", "AGE"] and row[:2] == ["db", "app=db,tier"]
    assert "app=db,tier in (a,b)" in out
