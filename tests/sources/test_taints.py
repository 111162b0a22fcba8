"""`stockade.brain.taints` reads Node objects from the watch: malformed ones (which the engine
refuses and reports) must neither raise nor be tracked; only our taint counts."""

from __future__ import annotations

from typing import Any

from stockade.brain.fanout.status import NodeStatus
from stockade.brain.taints import TAINT_KEY, StartupTaints, without_startup_taint

OURS = {"key": TAINT_KEY, "effect": "NoSchedule"}


def node(name: Any, spec: Any) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "resourceVersion": "7"}, "spec": spec}


async def test_observe_tracks_only_well_formed_nodes_with_our_taint() -> None:
    st = {"n1": NodeStatus("n1", applied_generation=1, connected=True), "n2": NodeStatus("n2")}
    taints = StartupTaints(None, lambda n: st.get(n, NodeStatus(n)))  # type: ignore[arg-type]  # no API call here
    for garbage in (
        node("x", "garbage"),
        node("y", {"taints": "nope"}),
        node("z", {"taints": [1, None, "s"]}),
        {"kind": "Node", "metadata": "bad"},
        node(None, {"taints": [OURS]}),
        node("other", {"taints": [{"key": TAINT_KEY, "effect": "NoExecute"}]}),  # not ours: another effect
    ):
        taints.observe("Node", False, garbage)
    assert taints.tainted == {}
    taints.observe("Node", False, node("n1", {"taints": [OURS, {"key": "gpu", "effect": "NoSchedule"}]}))
    taints.observe("Node", False, node("n2", {"taints": [OURS]}))
    assert taints.due() == ["n1"]  # n2's agent has not applied yet
    assert without_startup_taint(taints.tainted["n1"]) == [{"key": "gpu", "effect": "NoSchedule"}]
    taints.observe("Node", True, node("n1", {"taints": [OURS]}))  # deleted
    assert sorted(taints.tainted) == ["n2"]
