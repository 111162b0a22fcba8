"""What a restart needs besides the same command line: the lab's API server keeps its objects in
memory, as a kube-apiserver would without etcd, so before it starts again its ``--data`` file is
rewritten from the lab's state (namespaces, nodes, pods, policies, Services, the agents' pods)
and its resourceVersions start past any the old one gave (milliseconds since the epoch: etcd's
revision outlives a restart; the brains' watches from before get 410 and list again). Once it
answers, every agent gets a new token (it signs with a key of its own, drawn at start; the
agents read their token file again, as a projected token is rotated).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.lab import agentids, kubeapi, procs, state
from stockade.lab.objects import node_object
from stockade.lab.state import LabState

log = logging.getLogger("stockade.lab.restarts")


def cluster_objects(st: LabState) -> list[dict[str, Any]]:
    """The objects the lab itself put in its API (what `lab up` loads, and a restart reloads)."""
    assert st.plan is not None
    return (
        [*st.namespaces.values()]
        + [node_object(n) for n in st.plan.nodes]
        + [*st.pods.values()]
        + [*st.policies.values()]
        + [*st.cluster_policies.values()]
    )


def _stored(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as read back from the API, without what the API server assigns again."""
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")
    }
    return {**obj, "metadata": meta}


def reload_items(st: LabState) -> list[dict[str, Any]]:
    items = cluster_objects(st) + [_stored(s) for s in st.services.values()]
    if st.brains or "brain_grpc" in st.ports:
        items += agentids.objects(st.plan) if st.plan else []
    return items


@dataclass(frozen=True)
class Hook:
    before: Callable[[Path], list[str]]  # returns arguments to add to this start's command line
    after: Callable[[Path, int], None]


def _apiserver_before(state_dir: Path) -> list[str]:
    st = state.load(state_dir / "state.json")
    if st is not None and st.plan is not None:
        (state_dir / "cluster.json").write_text(json.dumps({"kind": "List", "items": reload_items(st)}))
    return ["--initial-resource-version", str(time.time_ns() // 1_000_000)]


def _apiserver_after(state_dir: Path, pid: int) -> None:
    st = state.load(state_dir / "state.json")
    if st is None or st.plan is None or not (st.brains or "brain_grpc" in st.ports):
        return
    api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
    try:
        procs.wait_until(api.ready, "the restarted API server", 60.0, pid)
        agentids.write_tokens(api, st.plan, state_dir)
        log.info("agents' tokens minted again by the restarted API server")
    except Exception as e:  # the next restart tries again; the log says why
        log.warning("after the API server's restart: %s", e)


HOOKS: dict[str, Hook] = {"apiserver": Hook(_apiserver_before, _apiserver_after)}
