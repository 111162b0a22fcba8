"""Lint: valid policies that probably do not say what their authors meant."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stockade.brain.engine.api import LintWarning
from stockade.brain.engine.policy import PodPeer
from stockade.brain.engine.selectors import Selector

if TYPE_CHECKING:
    from stockade.brain.engine.compiler import Engine


def lint(engine: Engine) -> list[LintWarning]:
    warnings: list[LintWarning] = []
    pods = engine.pods()
    namespaces = engine.namespaces()
    for key in engine.policy_keys():
        ns, name = key.split("/", 1)
        pol = engine.policy(ns, name)
        assert pol is not None
        in_ns = [p for p in pods if p.namespace == ns]
        if not pol.pod_selector.empty and not any(pol.pod_selector.matches(p.labels) for p in in_ns):
            warnings.append(
                LintWarning(
                    key,
                    "spec.podSelector",
                    f"selects no pods in namespace {ns} ({pol.pod_selector})"
                    + _did_you_mean(pol.pod_selector, [p.labels for p in in_ns]),
                )
            )
        for direction, rules, peer_field in (("ingress", pol.ingress, "from"), ("egress", pol.egress, "to")):
            for i, rule in enumerate(rules or ()):
                for j, peer in enumerate(rule.peers or ()):
                    if not isinstance(peer, PodPeer):
                        continue
                    field = f"spec.{direction}[{i}].{peer_field}[{j}]"
                    if peer.ns_selector is not None:
                        nss = [n for n in namespaces if peer.ns_selector.matches(n.labels)]
                        if not nss:
                            warnings.append(
                                LintWarning(
                                    key,
                                    f"{field}.namespaceSelector",
                                    f"matches no namespace ({peer.ns_selector})"
                                    + _did_you_mean(peer.ns_selector, [n.labels for n in namespaces]),
                                )
                            )
                            continue
                        names = {n.name for n in nss}
                        cands = [p for p in pods if p.namespace in names]
                    else:
                        cands = in_ns
                    if peer.pod_selector is not None and not any(peer.pod_selector.matches(p.labels) for p in cands):
                        where = f"namespace {ns}" if peer.ns_selector is None else "the selected namespaces"
                        warnings.append(
                            LintWarning(
                                key,
                                f"{field}.podSelector",
                                f"matches no pods in {where} ({peer.pod_selector})"
                                + _did_you_mean(peer.pod_selector, [p.labels for p in cands]),
                            )
                        )
    return warnings


def _did_you_mean(selector: Selector, label_sets: Sequence[Mapping[str, str]]) -> str:
    """Suggest the closest existing value for the first In requirement that matches nothing."""
    for req in selector.requirements:
        if req.op != "In":
            continue
        values = sorted({labels[req.key] for labels in label_sets if req.key in labels})
        if any(v in values for v in req.values):
            continue
        for v in req.values:
            close = difflib.get_close_matches(v, values, n=1, cutoff=0.6)
            if close:
                return f"; did you mean {req.key}={close[0]}?"
        keys = sorted({k for labels in label_sets for k in labels})
        close = difflib.get_close_matches(req.key, keys, n=1, cutoff=0.6)
        if close and close[0] != req.key:
            return f"; did you mean label key {close[0]}?"
    return ""
