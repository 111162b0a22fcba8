"""The cold start: every listed object into the engine at once, under the same safety net as events.

The engine refuses malformed objects alone (engine/validate.py), so `Engine.load` should never
raise. If it does anyway (a bug), the brain must still start and enforce everything else: the
engine is emptied and the objects are added one by one, each under its own ``try``, so only the
object that triggers the bug is skipped (logged with its traceback). Runs on the engine's worker
thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from stockade.brain.engine import Engine

log = logging.getLogger(__name__)

ORDER = ("Namespace", "Node", "Service", "Pod", "NetworkPolicy", "ClusterNetworkPolicy")


def cold_start(engine: Engine, by_kind: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """Load ``by_kind`` (kind -> objects) into an empty ``engine``; the number of objects skipped
    because the engine failed on them (0 unless there is a bug)."""
    try:
        engine.load(
            by_kind.get("Namespace", []),
            by_kind.get("Pod", []),
            by_kind.get("NetworkPolicy", []),
            by_kind.get("Node", []),
            services=by_kind.get("Service", []),  # for lint only
            cluster_policies=by_kind.get("ClusterNetworkPolicy", []),
        )
        return 0
    except Exception:
        log.exception("the engine failed on the initial list; adding the objects one by one instead")
    engine.__init__(beta_default_deny=engine.beta_default_deny)  # type: ignore[misc]  # start empty
    skipped = 0
    for kind in ORDER:
        for obj in by_kind.get(kind, []):
            try:
                engine.upsert(obj)
            except Exception:
                skipped += 1
                meta = obj.get("metadata")
                log.exception(
                    "the engine failed on %s %r; it is skipped", kind, meta if isinstance(meta, dict) else "?"
                )
    return skipped
