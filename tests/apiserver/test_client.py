"""The API server through the real kubernetes-asyncio client, as the brain will use it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiServer


async def api(server: ApiServer, tmp_path: Path) -> client.ApiClient:
    return await config.new_client_from_config(str(server.kubeconfig(tmp_path / "kubeconfig")))


async def test_crud_list_and_watch_with_the_real_client(server: ApiServer, tmp_path: Path) -> None:
    async with await api(server, tmp_path) as ac:
        core, net = client.CoreV1Api(ac), client.NetworkingV1Api(ac)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="demo")))
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name="a", labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
        )
        created = await core.create_namespaced_pod("demo", body)
        assert created.metadata.uid and created.metadata.namespace == "demo"
        with pytest.raises(ApiException) as exc:
            await core.create_namespaced_pod("demo", body)
        assert exc.value.status == 409
        with pytest.raises(ApiException) as exc:
            await core.read_namespaced_pod("nope", "demo")
        assert exc.value.status == 404

        policy = client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1NetworkPolicySpec(
                pod_selector=client.V1LabelSelector(match_labels={"app": "web"}), policy_types=["Ingress"]
            ),
        )
        await net.create_namespaced_network_policy("demo", policy)
        await core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="node-1")))

        pods = await core.list_pod_for_all_namespaces(label_selector="app=web")
        assert [p.metadata.name for p in pods.items] == ["a"]
        start = pods.metadata.resource_version
        assert (await net.list_network_policy_for_all_namespaces()).items[0].spec.pod_selector.match_labels == {
            "app": "web"
        }
        assert [n.metadata.name for n in (await core.list_node()).items] == ["node-1"]

        w = watch.Watch()
        events: list[tuple[str, str]] = []

        async def consume() -> None:
            async for ev in w.stream(
                core.list_pod_for_all_namespaces, resource_version=start, allow_watch_bookmarks=True, timeout_seconds=5
            ):
                if ev["type"] == "BOOKMARK":
                    events.append(("BOOKMARK", ev["raw_object"]["metadata"]["resourceVersion"]))
                else:
                    events.append((ev["type"], ev["object"].metadata.name))
                if ev["type"] == "DELETED":
                    w.stop()

        task = asyncio.create_task(consume())
        # Until the watch is open and a bookmark (every 0.2 s) came: nothing has changed since
        # `start`, so it is the first event, and the changes below come after it. (A fixed sleep
        # could end before the watch is open on a busy machine: the changes would come first.)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not events and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await core.patch_namespaced_pod("a", "demo", {"metadata": {"labels": {"v": "2"}}})
        replaced = await core.read_namespaced_pod("a", "demo")
        replaced.metadata.labels["v"] = "3"
        await core.replace_namespaced_pod("a", "demo", replaced)
        await core.delete_namespaced_pod("a", "demo")
        await asyncio.wait_for(task, 10)
        await w.close()
        assert [e for e in events if e[0] != "BOOKMARK"] == [("MODIFIED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
        assert events[0][0] == "BOOKMARK"
        assert (await core.read_namespace("demo")).metadata.labels["kubernetes.io/metadata.name"] == "demo"


async def test_expired_version_raises_410_through_the_client(server: ApiServer, tmp_path: Path) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    async with await api(server, tmp_path) as ac:
        core = client.CoreV1Api(ac)
        old = (await core.list_namespace()).metadata.resource_version
        server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        server.compact()
        w = watch.Watch()
        with pytest.raises(ApiException) as exc:
            async for _ in w.stream(core.list_namespace, resource_version=old, timeout_seconds=2):
                pass
        await w.close()
        assert exc.value.status == 410


async def test_token_tls_kubeconfig(tmp_path: Path) -> None:
    srv = ApiServer(token="t0ken", tls=True)
    await srv.start()
    try:
        async with await api(srv, tmp_path) as ac:
            assert (await client.CoreV1Api(ac).list_namespace()).items == []
        bad = ApiServer(token="other")
        bad.host, bad.port, bad._tls, bad._tls_files = srv.host, srv.port, True, srv._tls_files
        async with await api(bad, tmp_path) as ac:
            with pytest.raises(ApiException) as exc:
                await client.CoreV1Api(ac).list_namespace()
            assert exc.value.status == 401
    finally:
        await srv.stop()


async def test_standalone_command(tmp_path: Path) -> None:
    data = tmp_path / "objects.yaml"
    data.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: demo}\nspec: {containers: []}\n---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n"
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: old, namespace: demo}\n"
        "spec: {podSelector: {}}\n"
    )
    kubeconfig = tmp_path / "kc"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stockade.lab.apiserver",
        "--port",
        "0",
        "--data",
        str(data),
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "serving the Kubernetes API on http://127.0.0.1:" in line
        async with await config.new_client_from_config(str(kubeconfig)) as ac:
            pods = await client.CoreV1Api(ac).list_namespaced_pod("demo")
            assert [p.metadata.name for p in pods.items] == ["a"]
            nps = await client.NetworkingV1Api(ac).list_namespaced_network_policy("demo")
            assert [(n.metadata.name, n.api_version) for n in nps.items] == [("old", None)]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
