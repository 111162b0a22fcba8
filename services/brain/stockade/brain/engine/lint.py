"""Lint: valid policies that probably do not say what their authors meant.

- a podSelector, or a peer's podSelector/namespaceSelector, that matches nothing (with a "did
  you mean" when a label value or key is close);
- a rule port that is a Service's ``port`` rather than a container port of the pods behind it:
  policies are enforced after kube-proxy's DNAT, on the container port, so "port 80" on a Service
  80 → 8079 admits nothing sent through the Service;
- ClusterNetworkPolicy rules that can never match, and same-priority overlaps (`lint_tiers`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from stockade.brain.engine.api import LintWarning
from stockade.brain.engine.lint_tiers import lint_tiers
from stockade.brain.engine.objects import PodInfo
from stockade.brain.engine.policy import PodPeer, PolicyRule, PortDef
from stockade.brain.engine.selectors import Selector
from stockade.brain.engine.services import ServiceInfo
from stockade.brain.engine.view import EngineView


def lint(engine: EngineView) -> list[LintWarning]:
    warnings: list[LintWarning] = []
    pods = engine.pods()
    namespaces = engine.namespaces()
    services = engine.services()
    for key in engine.policy_keys():
        ns, name = key.split("/", 1)
        pol = engine.policy(ns, name)
        assert pol is not None
        in_ns = [p for p in pods if p.namespace == ns]
        if services:
            selected = [p for p in in_ns if pol.pod_selector.matches(p.labels)]
            for i, rule in enumerate(pol.ingress or ()):
                warnings.extend(_service_ports(key, f"spec.ingress[{i}]", rule, selected, services, ns))
            for i, rule in enumerate(pol.egress or ()):
                dests = _peer_pods(rule, pods, in_ns, namespaces)
                if dests:
                    warnings.extend(_service_ports(key, f"spec.egress[{i}]", rule, dests, services, ns))
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
    return warnings + lint_tiers(engine)


def _peer_pods(
    rule: PolicyRule, pods: Sequence[PodInfo], in_ns: Sequence[PodInfo], namespaces: Sequence[Any]
) -> list[PodInfo]:
    """The pods a rule's pod peers select (none for a rule open to everything or to ipBlocks only)."""
    out: dict[str, PodInfo] = {}
    for peer in rule.peers or ():
        if not isinstance(peer, PodPeer):
            continue
        if peer.ns_selector is not None:
            names = {n.name for n in namespaces if peer.ns_selector.matches(n.labels)}
            cands = [p for p in pods if p.namespace in names]
        else:
            cands = list(in_ns)
        for p in cands:
            if peer.pod_selector is None or peer.pod_selector.matches(p.labels):
                out[p.key] = p
    return list(out.values())


def _service_ports(
    key: str, where: str, rule: PolicyRule, pods: Sequence[PodInfo], services: Sequence[ServiceInfo], ns: str
) -> list[LintWarning]:
    """A rule port that is the `port` of a Service in front of `pods` and none of their container ports."""
    out: list[LintWarning] = []
    for j, pd in enumerate(rule.ports or ()):
        if not isinstance(pd.port, int):
            continue
        msg = _service_port_message(pd, pods, services, ns)
        if msg:
            out.append(LintWarning(key, f"{where}.ports[{j}].port", msg))
    return out


def _service_port_message(pd: PortDef, pods: Sequence[PodInfo], services: Sequence[ServiceInfo], ns: str) -> str:
    assert isinstance(pd.port, int)
    lo, hi = pd.port, pd.end_port or pd.port
    notes = []
    for svc in services:
        backends = [p for p in pods if p.namespace == svc.namespace and svc.selects(p.labels)]
        if not backends or any(lo <= n <= hi and proto is pd.protocol for p in backends for n, proto in p.ports):
            continue  # no pods behind it here, or they do listen on the rule's port
        for sp in svc.ports:
            if sp.protocol is not pd.protocol or not lo <= sp.port <= hi:
                continue
            targets = set()
            for p in backends:
                t = sp.target if isinstance(sp.target, int) else p.named_ports.get((sp.target, sp.protocol))
                if t is not None:
                    targets.add(t)
            if targets and not any(lo <= t <= hi for t in targets):
                name = svc.name if svc.namespace == ns else svc.key
                listen = ", ".join(str(t) for t in sorted(targets))
                notes.append(f"port {sp.port} is the Service port of {name}; its pods listen on {listen}")
    if not notes:
        return ""
    return "; ".join(notes) + " (policies apply after the Service's DNAT, to the container port)"


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
