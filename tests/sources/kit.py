"""Objects to create and a consumer that checks what the sources tell it."""

from __future__ import annotations

import asyncio
from typing import Any

from stockade.brain.sources import SourceEvent
from stockade.lab.apiserver import ApiServer

KINDS = ("Namespace", "Pod", "NetworkPolicy", "Node", "Service")


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(namespace: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
    }


def netpol(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def service(namespace: str, name: str, port: int = 80, **selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector or {"app": "web"}, "ports": [{"port": port, "targetPort": 8080}]},
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


class Mirror:
    """A consumer that keeps what it is told, and checks nothing comes twice or out of order."""

    def __init__(self) -> None:
        self.events: list[SourceEvent] = []
        self.state: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.synced_at: int | None = None
        self.errors: list[str] = []
        self.gone: dict[tuple[str, str, str], int] = {}  # deleted objects: the version they went at

    async def __call__(self, ev: SourceEvent) -> None:
        self.events.append(ev)
        if ev.type == "synced":
            if self.synced_at is not None:
                self.errors.append("synced twice")
            self.synced_at = len(self.events) - 1
            return
        assert ev.obj["kind"] == ev.kind and ev.obj["metadata"]["name"] == ev.name
        mine = self.state.get(ev.key)
        rv = int(ev.obj["metadata"]["resourceVersion"])
        if ev.type == "delete":
            if mine is None:
                self.errors.append(f"delete of unknown {ev.key}")
            self.state.pop(ev.key, None)
            self.gone[ev.key] = rv
        else:
            if mine is not None and int(mine["metadata"]["resourceVersion"]) >= rv:
                self.errors.append(f"stale or repeated upsert {ev.key} rv {rv}")
            if mine is None and self.gone.get(ev.key, 0) >= rv:
                self.errors.append(f"deleted {ev.key} brought back by an old version {rv}")
            self.state[ev.key] = ev.obj

    def versions(self) -> dict[tuple[str, str, str], str]:
        return {k: o["metadata"]["resourceVersion"] for k, o in self.state.items()}


def server_versions(server: ApiServer) -> dict[tuple[str, str, str], str]:
    out = {}
    for kind in KINDS:
        for o in server.list_objects(kind):
            meta = o["metadata"]
            out[(kind, meta.get("namespace", ""), meta["name"])] = meta["resourceVersion"]
    return out


async def converge(mirror: Mirror, server: ApiServer, timeout: float = 10.0) -> None:
    """Wait until the consumer holds exactly what the server holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while mirror.versions() != server_versions(server):
        if loop.time() > deadline:
            want, got = server_versions(server), mirror.versions()
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            extra = {k: v for k, v in got.items() if k not in want}
            raise AssertionError(f"did not converge: missing/outdated {missing}, extra {extra}")
        await asyncio.sleep(0.02)
    assert mirror.errors == []
