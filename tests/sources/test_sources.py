"""The sources against the lab's API server, through the real kubernetes-asyncio client."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.config import incluster_config

from stockade.brain.sources import KindWatcher, SourceEvent, Sources, api_client
from stockade.brain.sources import watcher as watcher_module
from stockade.brain.sources.kinds import KINDS, POD
from stockade.lab.apiserver import ApiServer

from .kit import Mirror, converge, netpol, node, ns, pod, server_versions, service


async def watching(server: ApiServer, n: int = len(KINDS)) -> None:
    """Until the sources' n watches are open on the server."""
    for _ in range(500):
        if server.watch_count >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {server.watch_count} watches open")


def seed(server: ApiServer) -> None:
    server.put_object(ns("a"))
    server.put_object(ns("b"))
    server.put_object(node("node-1"))
    # Before the pods, selecting none of them: its EndpointSlice does not change as they come.
    server.put_object(service("a", "web", app="none"))
    for i in range(3):
        server.put_object(pod("a", f"p{i}", app="web"))
    server.put_object(netpol("a", "deny"))


async def test_initial_sync_then_each_change_exactly_once(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    seed(server)
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    await converge(mirror, server)
    assert mirror.synced_at == len(server_versions(server))  # every initial object came before it
    assert {e.kind for e in mirror.events[: mirror.synced_at]} == {
        "Namespace",
        "Pod",
        "NetworkPolicy",
        "Node",
        "Service",
    }
    (web,) = [e.obj for e in mirror.events if e.kind == "Service"]
    assert web["spec"]["clusterIP"].startswith("10.96.")  # as the API server allocated it

    before = len(mirror.events)
    server.put_object(pod("b", "x", app="db"))
    server.put_object(pod("b", "x", app="web"))
    server.put_object(netpol("b", "allow"))
    server.put_object(node("node-2"))
    server.delete_object("Pod", "x", "b")
    server.put_object(service("a", "web", port=81, app="none"))
    await converge(mirror, server)
    await asyncio.sleep(0.5)  # a few bookmarks later, still nothing more
    got = [(e.type, e.kind, e.name) for e in mirror.events[before:]]
    assert sorted(got) == sorted(
        [
            ("upsert", "Pod", "x"),
            ("upsert", "Pod", "x"),
            ("delete", "Pod", "x"),
            ("upsert", "NetworkPolicy", "allow"),
            ("upsert", "Node", "node-2"),
            ("upsert", "Service", "web"),
        ]
    )
    pod_events = [e for e in mirror.events[before:] if e.kind == "Pod"]
    assert [e.obj["metadata"]["labels"].get("app") for e in pod_events[:2]] == ["db", "web"]
    assert mirror.errors == []
    assert sum(w.stats["bookmarks"] for w in sources.watchers) > 0
    assert all(w.stats["lists"] == 1 for w in sources.watchers)


async def test_queue_sink(server: ApiServer, client: k8s.ApiClient) -> None:
    server.put_object(ns("a"))
    queue: asyncio.Queue[SourceEvent] = asyncio.Queue()
    async with Sources(client, queue, inactivity_timeout=2.0):
        first = await asyncio.wait_for(queue.get(), 5)
        assert (first.type, first.kind, first.name) == ("upsert", "Namespace", "a")
        assert (await asyncio.wait_for(queue.get(), 5)).type == "synced"
        server.delete_object("Namespace", "a")
        gone = await asyncio.wait_for(queue.get(), 5)
        assert (gone.type, gone.kind, gone.name) == ("delete", "Namespace", "a")


async def test_410_with_deletions_in_the_gap(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    seed(server)
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    await converge(mirror, server)
    before = len(mirror.events)

    # The watches go silent, the world changes, the server forgets, and the connections break:
    # the sources come back with versions the server no longer has.
    await watching(server)
    assert server.freeze_watches() == len(KINDS)
    server.delete_object("Pod", "p0", "a")
    server.put_object(pod("a", "p1", app="changed"))
    server.delete_object("Namespace", "b")
    server.put_object(ns("c"))
    server.put_object(pod("c", "new"))
    server.delete_object("Node", "node-1")
    server.put_object(node("node-1"))  # deleted and created again: a new object, a newer version
    server.compact()
    server.drop_watches()

    await converge(mirror, server)
    assert sum(w.stats["gone"] for w in sources.watchers) >= 4
    got = sorted((e.type, e.kind, e.namespace, e.name) for e in mirror.events[before:])
    assert got == sorted(
        [
            ("delete", "Pod", "a", "p0"),
            ("upsert", "Pod", "a", "p1"),
            ("delete", "Namespace", "", "b"),
            ("upsert", "Namespace", "", "c"),
            ("upsert", "Pod", "c", "new"),
            ("upsert", "Node", "", "node-1"),
        ]
    )


async def test_churn_with_compactions_and_cuts(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    rng = random.Random(4)
    seed(server)
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    namespaces = ["a", "b", "c"]
    for step in range(400):
        space = rng.choice(namespaces)
        try:
            r = rng.random()
            if r < 0.5:
                server.put_object(pod(space, f"p{rng.randrange(8)}", v=str(step)))
            elif r < 0.7:
                server.delete_object("Pod", f"p{rng.randrange(8)}", space)
            elif r < 0.8:
                server.put_object(netpol(space, f"np{rng.randrange(3)}"))
            elif r < 0.85:
                server.delete_object("Namespace", space)
            elif r < 0.9:
                server.put_object(ns(space))
            else:
                server.put_object(node(f"node-{rng.randrange(3)}"))
        except Exception:  # 404 on missing objects, missing namespace on create
            pass
        if step % 50 == 25:
            server.compact(keep=rng.randrange(3))
            server.drop_watches()
        if step % 10 == 0:
            await asyncio.sleep(0.01)
    await converge(mirror, server, timeout=20)
    assert sum(w.stats["gone"] for w in sources.watchers) > 0


async def test_429_and_500_are_survived(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    seed(server)
    server.inject_fault(429, 2, retry_after=0.5, verbs={"list"}, resources={"pods"})
    server.inject_fault(500, 3, verbs={"list"}, resources={"namespaces"})
    started = time.monotonic()
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 15)
    assert time.monotonic() - started >= 1.0  # two Retry-After waits of 0.5s
    await converge(mirror, server)
    stats = sources.stats
    assert stats["Pod"]["throttled"] == 2 and stats["Namespace"]["errors"] == 3

    server.inject_fault(500, 2, verbs={"watch"})
    server.inject_fault(429, 2, retry_after=0.2, verbs={"watch"})
    server.drop_watches()
    server.put_object(pod("a", "late"))
    await converge(mirror, server)
    assert server.faults == [] or all(f.remaining == 0 for f in server.faults)


async def test_cut_watches_resume_without_relisting(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    seed(server)
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    watches = server.requests[("watch", "pods")]
    for i in range(3):
        await watching(server)
        assert server.drop_watches() == len(KINDS)
        server.put_object(pod("a", f"cut{i}"))
        await converge(mirror, server)
    assert server.requests[("watch", "pods")] > watches
    assert all(w.stats["lists"] == 1 for w in sources.watchers)  # history covered the gaps


async def test_silent_watch_is_restarted(tmp_path: Path) -> None:
    srv = ApiServer(bookmark_interval=3600)  # no bookmarks: only the inactivity timeout helps
    await srv.start()
    mirror = Mirror()
    try:
        srv.put_object(ns("a"))
        ac = await api_client(str(srv.kubeconfig(tmp_path / "kubeconfig")))
        try:
            async with Sources(ac, mirror, inactivity_timeout=0.5) as sources:
                await asyncio.wait_for(sources.synced.wait(), 10)
                await watching(srv)
                assert srv.freeze_watches() == len(KINDS)
                srv.put_object(pod("a", "quiet"))
                await converge(mirror, srv, timeout=5)
                assert sum(w.stats["inactive"] for w in sources.watchers) >= 1
        finally:
            await ac.close()
    finally:
        await srv.stop()


async def test_replayed_events_are_not_applied_twice(server: ApiServer, client: k8s.ApiClient) -> None:
    # A watch resumed from an older version (a lagging API server replica does this) replays events
    # the consumer already has: they must be dropped, and what is new still passed on.
    seed(server)  # ... p0, p1, p2 at versions start-2, start-1, start (then the policy)
    start = server.resource_version - 1
    mirror = Mirror()
    pods = KindWatcher(POD, client, mirror, watch_timeout=1)
    await pods.relist()
    server.put_object(pod("a", "p0", app="v2"))
    server.delete_object("Pod", "p1", "a")
    await pods.relist()  # now we hold the latest state
    before = len(mirror.events)
    pods.rv = str(start - 3)  # and a watch starts from before p0 was created
    assert await pods.watch_once()
    assert pods.stats["skipped"] == 5  # p0, p1, p2 added, p0 changed, p1 deleted: all known
    assert len(mirror.events) == before and mirror.errors == []

    pods.rv = str(start - 3)
    server.put_object(pod("a", "p3"))
    assert await pods.watch_once()
    assert [(e.type, e.name) for e in mirror.events[before:]] == [("upsert", "p3")]
    assert mirror.errors == []


async def test_in_cluster_config_with_tls_and_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a brain pod does: service-account token and CA from files, the address from the environment.
    srv = ApiServer(token="sa-token", tls=True, bookmark_interval=0.2)
    await srv.start()
    try:
        srv.put_object(ns("a"))
        (tmp_path / "token").write_text("sa-token")
        assert srv._tls_files is not None
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", srv._tls_files[0])
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", srv.host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(srv.port))
        ac = await api_client()
        mirror = Mirror()
        try:
            async with Sources(ac, mirror, inactivity_timeout=2.0) as sources:
                await asyncio.wait_for(sources.synced.wait(), 10)
                srv.put_object(pod("a", "p"))
                await converge(mirror, srv)
        finally:
            await ac.close()
    finally:
        await srv.stop()


async def test_paged_initial_list(
    server: ApiServer, sources: Sources, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "LIST_PAGE", 3)
    seed(server)
    for i in range(10):
        server.put_object(pod("b", f"many{i}"))
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    await converge(mirror, server)
    assert server.requests[("list", "pods")] == 5  # 13 pods, 3 a page


async def test_repeated_410_backs_off_and_recovers(server: ApiServer, sources: Sources, mirror: Mirror) -> None:
    # A server whose watches keep saying 410 right after each list (a lagging replica): the sources
    # re-list each time, but wait longer and longer instead of hammering it.
    seed(server)
    server.inject_fault(410, 3, verbs={"watch"}, resources={"nodes"})
    started = time.monotonic()
    sources.start()
    await asyncio.wait_for(sources.synced.wait(), 10)
    await watching(server)
    assert time.monotonic() - started >= 0.75  # 0.25s and 0.5s at least, after the 2nd and 3rd 410
    nodes = sources.stats["Node"]
    assert (nodes["gone"], nodes["lists"]) == (3, 4)
    server.put_object(node("node-9"))
    await converge(mirror, server)
