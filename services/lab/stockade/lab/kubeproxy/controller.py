"""The lab's kube-proxy: watch Services, EndpointSlices and Nodes; on every change re-render each
node's table and apply it there in one ``nft -f`` transaction (only where the text changed).

One process serves every node of the lab (each node's rules go into that node's namespace), so
a lab does not pay one interpreter per node. After each round it writes ``kube-proxy.json`` in
the state dir: the resourceVersion of every Service and EndpointSlice it has programmed, so a
waiter can tell when what the API holds is what the nodes do (see `status.in_step`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from stockade.brain.sources import SourceEvent, Sources, WatchedKind
from stockade.brain.sources.kinds import NODE
from stockade.lab.kubeproxy import objects, render

log = logging.getLogger("stockade.lab.kubeproxy")

SERVICE = WatchedKind("Service", "", "v1", "services", True, "CoreV1Api", "list_service_for_all_namespaces")
ENDPOINT_SLICE = WatchedKind(
    "EndpointSlice",
    "discovery.k8s.io",
    "v1",
    "endpointslices",
    True,
    "DiscoveryV1Api",
    "list_endpoint_slice_for_all_namespaces",
)
KINDS = (SERVICE, ENDPOINT_SLICE, NODE)
STATUS_FILE = "kube-proxy.json"
COALESCE = 0.02  # seconds: a pod change brings several events at once; one round for them all
RETRY = 1.0  # seconds before a node whose apply failed is tried again


class Runner(Protocol):
    def run(self, text: str, json: bool = False, terse: bool = False) -> tuple[bool, str, str]: ...


Forget = Callable[[str, list[str]], None]  # (netns, conntrack argv)


def forget_in(netns: str, argv: list[str]) -> None:
    from stockade.agent import netns as ns

    res = ns.run(argv, netns)
    if res.returncode not in (0, 1):  # 1: nothing to delete
        log.warning("%s: %s: %s", netns, " ".join(argv), res.stderr.strip())


Obj = dict[str, Any]


def version_key(kind: str, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('namespace') or ''}/{meta.get('name')}"


class Proxy:
    def __init__(
        self,
        nodes: dict[str, str],
        runner: Callable[[str], Runner],
        status: Path | None = None,
        forget: Forget | None = None,
    ) -> None:
        self.netns = nodes  # node name -> its network namespace
        self.runners = {name: runner(ns) for name, ns in nodes.items()}
        self.forget = forget
        self.udp: dict[str, set[render.UdpFlow]] = {}  # node -> UDP paths its table had
        self.status_path = status
        self.held: dict[str, dict[tuple[str, str], Obj]] = {k.kind: {} for k in KINDS}
        self.applied: dict[str, str] = {}  # node -> the text it runs
        self.synced = False
        self.changed = asyncio.Event()
        self.rounds = 0

    async def on_event(self, ev: SourceEvent) -> None:
        if ev.type == "synced":
            self.synced = True
        elif ev.type == "delete":
            self.held[ev.kind].pop((ev.namespace, ev.name), None)
        else:
            self.held[ev.kind][ev.namespace, ev.name] = ev.obj
        if self.synced:
            self.changed.set()

    def _parsed(self) -> tuple[list[objects.Node], list[objects.Service], list[objects.Slice], list[str]]:
        errors: list[str] = []

        def each(kind: str, parse: Callable[[Obj], Any]) -> list[Any]:
            out = []
            for obj in self.held[kind].values():
                try:
                    item = parse(obj)
                except objects.ObjectError as e:  # this object only: the others are still served
                    errors.append(str(e))
                    continue
                if item is not None:
                    out.append(item)
            return out

        return (
            each("Node", objects.parse_node),
            each("Service", objects.parse_service),
            each("EndpointSlice", objects.parse_slice),
            errors,
        )

    def sync(self) -> dict[str, Any]:
        """One round: render every node's table and apply what changed. Returns the status."""
        nodes, services, slices, errors = self._parsed()
        failed: dict[str, str] = {}
        for node, runner in self.runners.items():
            text = render.render(node, nodes, services, slices)
            if self.applied.get(node) == text:
                continue
            ok, _, err = runner.run(text)
            if ok:
                self.applied[node] = text
                self._forget_gone(node, render.udp_flows(node, nodes, services, slices))
            else:  # loudly: the node keeps its previous table, and the status says why
                failed[node] = err.strip()
                self.applied.pop(node, None)
                log.error("%s: nft -f failed: %s", node, err.strip())
        for e in errors:
            log.warning("not programmed: %s", e)
        self.rounds += 1
        status = {
            "synced": self.synced and not failed,
            "round": self.rounds,
            "time": time.time(),
            "summary": render.summary(services, slices),
            "errors": errors,
            "failed": failed,
            "versions": {
                version_key(kind, obj): str((obj.get("metadata") or {}).get("resourceVersion") or "")
                for kind in ("Service", "EndpointSlice")
                for obj in self.held[kind].values()
            },
        }
        if self.status_path is not None:
            write_status(self.status_path, status)
        log.info("round %d: %s%s", self.rounds, status["summary"], f"; failed on {sorted(failed)}" if failed else "")
        return status

    def _forget_gone(self, node: str, now: set[render.UdpFlow]) -> None:
        gone, self.udp[node] = self.udp.get(node, set()) - now, now
        if self.forget is None:
            return
        for flow in sorted(gone, key=str):
            self.forget(self.netns[node], render.conntrack_delete(flow))

    async def run(self, sources: Sources) -> None:
        async with sources:
            waiting = asyncio.create_task(sources.wait())
            try:
                while True:
                    changed = asyncio.create_task(self.changed.wait())
                    await asyncio.wait([changed, waiting], return_when=asyncio.FIRST_COMPLETED)
                    if waiting.done():
                        changed.cancel()
                        waiting.result()  # a consumer error: raise it
                        return
                    await asyncio.sleep(COALESCE)
                    self.changed.clear()
                    if self.sync()["failed"]:  # try again soon, even if nothing changes meanwhile
                        asyncio.get_running_loop().call_later(RETRY, self.changed.set)
            finally:
                waiting.cancel()


def write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True))
    os.replace(tmp, path)
