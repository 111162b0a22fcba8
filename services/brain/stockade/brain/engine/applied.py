"""The applied-to index: which policies select which pods, per namespace and per direction.

Per namespace, policies are grouped by identical podSelector, so a pod finds the policies that
isolate it with one selector test per distinct selector, not one per policy.
"""

from __future__ import annotations

from stockade.brain.engine.objects import PodInfo
from stockade.brain.engine.policy import Policy
from stockade.brain.engine.selectors import Selector
from stockade.model import Direction

# Per namespace: podSelector -> keys of the policies with it.
BySelector = dict[str, dict[Selector, set[str]]]


class AppliedTo:
    def __init__(self) -> None:
        # Only the policies that isolate in that direction (a policy without ingress rules does
        # not isolate for ingress).
        self._by_dir: dict[Direction, BySelector] = {d: {} for d in Direction}

    def add(self, pol: Policy) -> None:
        for d, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            if rules is not None:
                self._by_dir[d].setdefault(pol.namespace, {}).setdefault(pol.pod_selector, set()).add(pol.key)

    def remove(self, pol: Policy) -> None:
        key = pol.key
        for d in Direction:
            by_ns = self._by_dir[d]
            by_sel = by_ns.get(pol.namespace, {})
            keys = by_sel.get(pol.pod_selector)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del by_sel[pol.pod_selector]
                    if not by_sel:
                        del by_ns[pol.namespace]

    def holds(self, namespace: str) -> bool:
        """Whether any policy of ``namespace`` is here (every accepted policy isolates in at
        least one direction, so this is whether the namespace has accepted policies)."""
        return any(namespace in by_ns for by_ns in self._by_dir.values())

    def matched(self, direction: Direction, pod: PodInfo) -> list[tuple[Selector, set[str]]]:
        """The selectors isolating the pod in ``direction``, each with its policies' keys."""
        labels = pod.labels
        return [(sel, ks) for sel, ks in self._by_dir[direction].get(pod.namespace, {}).items() if sel.matches(labels)]

    def applying(self, pod: PodInfo) -> tuple[list[str], list[str]]:
        """Keys of the policies isolating the pod for ingress, and for egress."""
        ing, eg = (
            [k for sel, ks in self._by_dir[d].get(pod.namespace, {}).items() if sel.matches(pod.labels) for k in ks]
            for d in (Direction.INGRESS, Direction.EGRESS)
        )
        return ing, eg
