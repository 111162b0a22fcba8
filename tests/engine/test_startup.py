"""The cold start's safety net (brain/startup.py): a bug in the engine on one object at start
skips that object alone; the rest of the cluster is computed and enforced."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from stockade.brain.engine import Deltas, Engine
from stockade.brain.startup import cold_start

from .hostile import CANARY, REFERENCE_POD, canary_view


class BuggyEngine(Engine):
    """A real engine with a bug planted: it fails on one pod (and so does its bulk load)."""

    def load(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("planted bug in load")

    def upsert(self, obj: Mapping[str, Any]) -> Deltas:
        if (obj.get("metadata") or {}).get("name") == "trigger":
            raise RuntimeError("planted bug on one object")
        return super().upsert(obj)


def test_a_bug_at_start_skips_one_object_and_computes_the_rest() -> None:
    trigger = copy.deepcopy(REFERENCE_POD)
    trigger["metadata"]["name"] = "trigger"
    objs = [copy.deepcopy(o) for o in CANARY] + [trigger]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    engine = BuggyEngine()
    assert cold_start(engine, by_kind) == 1
    reference = Engine()
    assert cold_start(reference, {k: [o for o in v if o is not trigger] for k, v in by_kind.items()}) == 0
    assert canary_view(engine) == canary_view(reference)
    assert engine.models() == reference.models()
    assert engine.pod_info("canary", "trigger") is None
