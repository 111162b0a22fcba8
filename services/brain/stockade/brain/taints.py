"""A node is protected from its first pod: the startup taint comes off only once its agent enforces.

Nodes join with ``stockade.io/agent-not-ready:NoSchedule`` (the kubelet's
``--register-with-taints``, or the node pool's taints), so the scheduler places no pod there
before the node's agent has its rules in the kernel. The agent tolerates every taint; once it
has acked its first generation on a live stream, the brain removes that taint, and only that
one. It never adds the taint (a healthy node whose agent restarts keeps its rules: fail static).

The brain learns the taints from its Node watch (`observe`), and removes one with a JSON merge
patch carrying the node's resourceVersion, so a concurrent change of the node's taints (by
another brain, or anyone) is never overwritten: the patch fails with 409 and is retried from
the next watch event. Failures are logged and retried; they never touch enforcement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.brain.fanout.status import NodeStatus

log = logging.getLogger(__name__)

TAINT_KEY = "stockade.io/agent-not-ready"
TAINT_EFFECT = "NoSchedule"

# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (("", "nodes", ("patch",)),)


def _taints(node: Mapping[str, Any]) -> list[Any]:
    # Anything from the API may be malformed (the engine reports it); here it only means "no taint".
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, dict) else None
    return list(taints) if isinstance(taints, list) else []


def is_startup_taint(taint: Any) -> bool:
    return isinstance(taint, dict) and taint.get("key") == TAINT_KEY and taint.get("effect") == TAINT_EFFECT


def without_startup_taint(node: Mapping[str, Any]) -> list[Any] | None:
    """The node's taints without ours; None when it does not carry ours."""
    taints = _taints(node)
    kept = [t for t in taints if not is_startup_taint(t)]
    return kept if len(kept) != len(taints) else None


class StartupTaints:
    """``status``: the node's sync status (the fan-out's); ``may_write``: whether this brain writes
    to the API (the leader's duty once there is one; every brain may, the patch is conditional)."""

    def __init__(
        self,
        api: k8s.ApiClient,
        status: Callable[[str], NodeStatus],
        *,
        interval: float = 1.0,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self.core = k8s.CoreV1Api(api)
        self.status = status
        self.interval = interval
        self.may_write = may_write
        self.tainted: dict[str, Mapping[str, Any]] = {}  # node -> its last seen object, while it has our taint
        self.removed = 0  # taints removed by this brain
        self.errors = 0

    def observe(self, kind: str, deleted: bool, node: Mapping[str, Any]) -> None:
        """Every Node event from the watch (cheap: only tainted nodes are kept)."""
        if kind != "Node":
            return
        meta = node.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name:
            return
        if deleted or without_startup_taint(node) is None:
            self.tainted.pop(name, None)
        else:
            self.tainted[name] = node

    def due(self) -> list[str]:
        """Tainted nodes whose agent has applied a generation on a live stream."""
        out = []
        for name in sorted(self.tainted):
            st = self.status(name)
            if st.connected and st.applied_generation >= 1:
                out.append(name)
        return out

    async def run(self) -> None:
        while True:
            if self.may_write():
                for name in self.due():
                    await self.untaint(name)
            await asyncio.sleep(self.interval)

    async def untaint(self, name: str) -> bool:
        node = self.tainted.get(name)
        if node is None:
            return False
        kept = without_startup_taint(node)
        if kept is None:
            return False
        rv = node["metadata"].get("resourceVersion")  # observe() kept only nodes with a metadata dict
        patch = {"metadata": {"resourceVersion": rv}, "spec": {"taints": kept or None}}
        try:
            # the stubs omit _content_type, which the client honours (default: strategic merge)
            await self.core.patch_node(name, patch, _content_type="application/merge-patch+json")  # type: ignore[call-arg]
        except ApiException as e:
            if e.status == 409:  # changed meanwhile: the watch brings the new object, then we retry
                log.info("node %s changed while its startup taint was removed; retrying", name)
                self.tainted.pop(name, None)
                return False
            self.errors += 1
            hint = "; grant the brain `patch` on nodes (deploy/rbac.yaml)" if e.status == 403 else ""
            log.error(
                "cannot remove the startup taint %s from node %s: %s %s%s", TAINT_KEY, name, e.status, e.reason, hint
            )
            return False
        except Exception as e:  # the API unreachable: retried next round
            self.errors += 1
            log.error("cannot remove the startup taint %s from node %s: %s", TAINT_KEY, name, e)
            return False
        self.tainted.pop(name, None)
        self.removed += 1
        log.info("node %s: its agent enforces generation %d; startup taint %s removed", name,
                 self.status(name).applied_generation, TAINT_KEY)  # fmt: skip
        return True
