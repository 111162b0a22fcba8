"""The brain watches Services and its lint names a policy that allows a Service's port instead of
the container port behind it (what `stockade lint` and `stockade policies` show)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer

from .kit import ns

FRONT_END = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "front-end", "namespace": "sock-shop", "labels": {"name": "front-end"}},
    "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 8079}]}]},
    "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "front-end", "namespace": "sock-shop"},
    "spec": {"type": "NodePort", "selector": {"name": "front-end"}, "ports": [{"port": 80, "targetPort": 8079}]},
}
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "front-end-web", "namespace": "sock-shop"},
    "spec": {"podSelector": {"matchLabels": {"name": "front-end"}}, "ingress": [{"ports": [{"port": 80}]}]},
}


async def until(brain: Brain, check: Callable[[], bool]) -> None:
    """Poll ``check`` (which reads the engine) between engine changes only."""
    while True:  # the test's own timeout bounds this
        await brain.worker.idle()
        if check():
            return
        await asyncio.sleep(0.02)


async def test_brain_lint_sees_services(server: ApiServer, tmp_path: Path) -> None:
    for obj in (ns("sock-shop"), FRONT_END, SERVICE, POLICY):
        server.put_object(obj)
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
        await brain.worker.idle()
        assert [s.key for s in brain.engine.services()] == ["sock-shop/front-end"]  # in the cold start
        (w,) = brain.engine.lint()
        assert (w.policy, w.field) == ("sock-shop/front-end-web", "spec.ingress[0].ports[0].port")
        assert w.message.startswith("port 80 is the Service port of front-end; its pods listen on 8079")
        # the Service changes: so does lint, with no effect on any node's rules
        models = brain.engine.models()
        server.put_object({**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"port": 80, "targetPort": 80}]}})
        await asyncio.wait_for(until(brain, lambda: brain.engine.lint() == []), 30)
        assert brain.engine.models() == models
        server.delete_object("Service", "front-end", "sock-shop")
        await asyncio.wait_for(until(brain, lambda: brain.engine.services() == []), 30)
    finally:
        await brain.stop()
