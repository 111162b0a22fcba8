"""A restarted brain attributes the drops agents buffered while no brain ran (found by the lab's
fault drill, tests/lab/test_faults_lab.py): the pods of its first list held their IPs before
the brain started, so an event older than the brain resolves to them; a pod that appears later
holds its IP only from when it was seen."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer

from .kit import ns


def _pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


async def test_events_older_than_the_brain_resolve_to_the_first_lists_pods(server: ApiServer, tmp_path: Path) -> None:
    for obj in (ns("x"), _pod("old", "10.244.1.5")):
        server.put_object(obj)
    before = time.time() - 60  # an event an agent held while no brain ran
    brain = Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            http="127.0.0.1:0",
            insecure=True,
        )
    )
    await asyncio.wait_for(brain.start(), 30)
    try:
        assert brain.aggregator is not None
        resolver = brain.aggregator.resolver
        assert resolver.resolve_ip("10.244.1.5", before) == ("x", "old")
        server.put_object(_pod("new", "10.244.1.6"))
        while resolver.resolve_ip("10.244.1.6", time.time()) is None:  # the test's timeout bounds this
            await asyncio.sleep(0.02)
        assert resolver.resolve_ip("10.244.1.6", before) is None  # not its IP back then
    finally:
        await brain.stop()
