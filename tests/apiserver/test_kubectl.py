"""Services and EndpointSlices through the real kubectl and the real kubernetes-asyncio client.

kubectl runs as a subprocess against the server over HTTP, with its own cache directory next to
the kubeconfig (so no run reads another's discovery or OpenAPI cache). ``kubectl apply`` runs with
its default validation: kubectl reads the server's OpenAPI v3 document, asks for server-side
strict field validation and computes its strategic-merge patches from the document's patch keys.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiServer

KUBECTL = shutil.which("kubectl")

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: front-end, namespace: shop, labels: {name: front-end}}
spec:
  type: NodePort
  selector: {name: front-end}
  ports:
  - {name: http, port: 80, targetPort: TARGET, nodePort: 30001}
"""


async def kubectl(
    kubeconfig: Path, *args: str, ok: bool = True, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    assert KUBECTL, "kubectl is not installed"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(kubeconfig.parent / "kube-cache"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    rc = proc.returncode or 0
    if ok:
        assert rc == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return rc, out.decode(), err.decode()


def front_end_pod(host: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"front-end-{host}", "namespace": "shop", "labels": {"name": "front-end"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 8079}]}]},
        "status": {
            "phase": "Running",
            "podIP": f"10.244.1.{host}",
            "podIPs": [{"ip": f"10.244.1.{host}"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


async def test_kubectl_apply_get_and_delete_services(server: ApiServer, tmp_path: Path) -> None:
    kc = server.kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "front-end.yaml"
    manifest.write_text(MANIFEST.replace("TARGET", "8079"))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "service/front-end created" in out
    server.put_object(front_end_pod(5))

    _, out, _ = await kubectl(kc, "get", "services", "-A", "-o", "json")
    (item,) = json.loads(out)["items"]
    ip = item["spec"]["clusterIP"]
    assert ip.startswith("10.96.") and item["spec"]["ports"][0]["nodePort"] == 30001

    _, out, _ = await kubectl(kc, "get", "svc", "-n", "shop")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row.split()[:5] == ["front-end", "NodePort", ip, "<none>", "80:30001/TCP"]

    _, out, _ = await kubectl(kc, "get", "endpointslices", "-n", "shop")
    header, row = out.splitlines()
    assert header.split()[:4] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"]
    assert row.split()[1:4] == ["IPv4", "8079", "10.244.1.5"]

    # apply a change: kubectl sends a strategic-merge patch; allocations and other fields stay
    manifest.write_text(MANIFEST.replace("TARGET", "8080"))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "service/front-end configured" in out
    _, out, _ = await kubectl(kc, "get", "svc", "front-end", "-n", "shop", "-o", "json")
    spec = json.loads(out)["spec"]
    assert spec["clusterIP"] == ip
    assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30001, "protocol": "TCP"}]
    _, out, _ = await kubectl(kc, "get", "endpointslices", "-n", "shop", "-o", "json")
    assert json.loads(out)["items"][0]["ports"][0]["port"] == 8080

    # the real error text for a node port taken
    other = tmp_path / "other.yaml"
    other.write_text(MANIFEST.replace("name: front-end, namespace", "name: other, namespace").replace("TARGET", "1"))
    rc, _, err = await kubectl(kc, "apply", "-f", str(other), ok=False)
    assert rc != 0
    assert (
        'The Service "other" is invalid: spec.ports[0].nodePort: Invalid value: 30001: '
        "provided port is already allocated" in err
    )

    # delete releases the cluster IP and the node port: another Service may take both
    _, out, _ = await kubectl(kc, "delete", "svc", "front-end", "-n", "shop")
    assert 'service "front-end" deleted' in out
    _, out, _ = await kubectl(kc, "get", "endpointslices", "-n", "shop", "-o", "json")
    assert json.loads(out)["items"] == []
    again = tmp_path / "again.yaml"
    again.write_text(MANIFEST.replace("TARGET", "8079").replace("type: NodePort", f"type: NodePort\n  clusterIP: {ip}"))
    await kubectl(kc, "apply", "-f", str(again))
    assert server.get_object("Service", "front-end", "shop")["spec"]["clusterIP"] == ip


async def test_kubernetes_asyncio_services_and_slices(server: ApiServer, tmp_path: Path) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    server.put_object(front_end_pod(5))
    async with await config.new_client_from_config(str(server.kubeconfig(tmp_path / "kc"))) as ac:
        core, disc = client.CoreV1Api(ac), client.DiscoveryV1Api(ac)
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name="front-end"),
            spec=client.V1ServiceSpec(
                type="NodePort",
                selector={"name": "front-end"},
                ip_family_policy="PreferDualStack",
                ports=[client.V1ServicePort(port=80, target_port=8079, node_port=30001)],
            ),
        )
        created = await core.create_namespaced_service("shop", body)
        assert created.spec.cluster_ip.startswith("10.96.") and len(created.spec.cluster_ips) == 2
        assert created.spec.external_traffic_policy == "Cluster"
        with pytest.raises(ApiException) as exc:
            await core.create_namespaced_service(
                "shop", client.V1Service(metadata=client.V1ObjectMeta(name="x"), spec=body.spec)
            )
        assert exc.value.status == 422
        status = json.loads(exc.value.body)
        assert status["reason"] == "Invalid" and status["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"

        listed = await disc.list_namespaced_endpoint_slice("shop")
        by_type = {s.address_type: s for s in listed.items}
        assert set(by_type) == {"IPv4", "IPv6"}
        v4 = by_type["IPv4"]
        assert v4.endpoints[0].addresses == ["10.244.1.5"] and v4.endpoints[0].conditions.ready is True
        assert v4.ports[0].port == 8079 and by_type["IPv6"].endpoints == []  # the pod has no IPv6 address

        w = watch.Watch()
        seen: list[tuple[str, list[str]]] = []

        async def consume() -> None:
            async for ev in w.stream(
                disc.list_namespaced_endpoint_slice,
                "shop",
                resource_version=listed.metadata.resource_version,
                timeout_seconds=10,
            ):
                obj = ev["object"]
                if obj.address_type == "IPv4":
                    seen.append((ev["type"], sorted(a for e in obj.endpoints or [] for a in e.addresses)))
                    if ev["type"] == "DELETED":
                        w.stop()

        task = asyncio.create_task(consume())
        await core.create_namespaced_pod("shop", client.V1Pod(**_pod_kwargs(6)))
        await core.patch_namespaced_pod_status("front-end-6", "shop", _ready_status(6))
        await core.delete_namespaced_service("front-end", "shop")
        await asyncio.wait_for(task, 30)
        await w.close()
        assert seen[-1][0] == "DELETED"
        assert ("MODIFIED", ["10.244.1.5", "10.244.1.6"]) in seen


def _pod_kwargs(host: int) -> dict[str, object]:
    return {
        "metadata": client.V1ObjectMeta(name=f"front-end-{host}", labels={"name": "front-end"}),
        "spec": client.V1PodSpec(node_name="node-1", containers=[client.V1Container(name="c", image="x")]),
    }


def _ready_status(host: int) -> dict[str, object]:
    ip = f"10.244.1.{host}"
    return {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }


async def test_kubectl_get_watch_prints_rows(server: ApiServer, tmp_path: Path) -> None:
    kc = server.kubeconfig(tmp_path / "kubeconfig")
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    assert KUBECTL
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kc), "get", "svc", "-n", "shop", "-w", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None

        # Until kubectl's watch is open, so the row comes from a watch event, not from the list.
        async def watching() -> None:
            while not server.watch_count:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(watching(), 60)
        server.put_object(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]},
            }
        )
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode() for _ in range(2)]
        assert lines[0].split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
        assert lines[1].split()[:5] == ["web", "NodePort", "10.96.1.1", "<none>", "80:30001/TCP"]
    finally:
        proc.terminate()
        await proc.wait()
