"""`stockade suggest`: the smallest change to the NetworkPolicies in force that admits flows that
were blocked, checked by compiling it.

1. Mends first: a selector naming a label value no pod has, when a close value exists
   (`suggest_mend`); a mend is taken when the compiled result admits some of the flows and
   closes no connection, the one admitting most first, until none admits more.
2. Then rules: each side still blocking (the source's egress, the destination's ingress) gets a
   rule in the policy isolating it (of several, the one selecting the fewest pods), its peers
   selected by the labels that tell them apart and the port the flow used (`suggest_rules`);
   one rule per policy, direction and set of peers. A destination isolated only by its
   namespace's DefaultDeny annotation gets a new ingress policy, ``<name>-access``.
3. The whole suggestion is compiled: each flow is admitted or said not to be, and `dry_run`
   lists every other connection it would open (and any it would close: none by construction).

Sides no NetworkPolicy can open (a ClusterNetworkPolicy tier denies it, a refused pod, a limit)
are reported with why, and left alone. Nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.admin.dryrun import Connection, compile_objects, dry_run
from stockade.brain.admin.suggest_judge import Blocked, Flow, FlowError, blocked_sides
from stockade.brain.admin.suggest_mend import Scope, mends
from stockade.brain.admin.suggest_rules import Peer, RuleDraft, address_peer, merge_by_peers, pod_peer
from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo
from stockade.model import Direction

NP = "NetworkPolicy"
MAX_FLOWS = 500  # flows per suggestion: each mend tried is a compile
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass
class Change:
    action: str  # "mend" (a selector's value changed), "add-rules", "create"
    manifest: dict[str, Any]
    admits: list[Flow] = field(default_factory=list)
    why: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what it opens beyond the flows, and why

    @property
    def key(self) -> str:
        meta = self.manifest["metadata"]
        return f"{meta.get('namespace') or 'default'}/{meta['name']}"

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "policy": self.key,
            "why": self.why,
            "notes": self.notes,
            "admits": [f.as_json() for f in sorted(self.admits)],
            "manifest": clean(self.manifest),
        }


@dataclass
class Suggestion:
    changes: list[Change] = field(default_factory=list)
    admitted: list[Flow] = field(default_factory=list)
    already_allowed: list[Flow] = field(default_factory=list)
    not_fixable: list[tuple[Flow, str]] = field(default_factory=list)
    not_admitted: list[tuple[Flow, str]] = field(default_factory=list)  # fixable, yet still blocked
    also_opens: list[Connection] = field(default_factory=list)
    closes: list[Connection] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def conns(cs: Iterable[Connection]) -> list[dict[str, Any]]:
            keys = ("from", "to", "port", "protocol", "family")
            return [dict(zip(keys, c, strict=True)) for c in cs]

        def why(fs: Iterable[tuple[Flow, str]]) -> list[dict[str, Any]]:
            return [{**f.as_json(), "reason": r} for f, r in fs]

        return {
            "changes": [c.as_json() for c in self.changes],
            "admitted": [f.as_json() for f in self.admitted],
            "alreadyAllowed": [f.as_json() for f in self.already_allowed],
            "notFixable": why(self.not_fixable),
            "notAdmitted": why(self.not_admitted),
            "alsoOpens": conns(self.also_opens),
            "closes": conns(self.closes),
            "rejected": self.rejected,
            "warnings": self.warnings,
        }


def clean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as a manifest for `kubectl apply`: what the server set (status, uid,
    resourceVersion, managedFields, kubectl's last-applied copy) left out."""
    meta = obj.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta.get("namespace") or "default"}
    for k in ("labels", "annotations"):
        kept = {a: v for a, v in (meta.get(k) or {}).items() if a != LAST_APPLIED}
        if kept:
            out_meta[k] = kept
    return {"apiVersion": "networking.k8s.io/v1", "kind": NP, "metadata": out_meta, "spec": obj.get("spec") or {}}


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


class _Cluster:
    """The objects in force with the changes so far, and their compiled engine."""

    def __init__(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.objects = list(objects)
        self.changed: dict[str, dict[str, Any]] = {}  # policy key -> manifest (changed or new)
        self.engine = compile_objects(self.objects)

    def policies(self) -> dict[str, Mapping[str, Any]]:
        base = {_key(o): o for o in self.objects if o.get("kind") == NP}
        return {**base, **self.changed}

    def trial(self, changes: Mapping[str, dict[str, Any]]) -> Engine:
        return compile_objects(self._with({**self.changed, **changes}))

    def apply(self, key: str, manifest: dict[str, Any], engine: Engine | None = None) -> None:
        self.changed[key] = manifest
        self.engine = engine or compile_objects(self.current())

    def apply_all(self, manifests: Mapping[str, dict[str, Any]]) -> None:
        self.changed.update(manifests)
        self.engine = compile_objects(self.current())

    def current(self) -> list[Mapping[str, Any]]:
        return self._with(self.changed)

    def _with(self, changed: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        out = [changed.get(_key(o), o) if o.get("kind") == NP else o for o in self.objects]
        present = {_key(o) for o in self.objects if o.get("kind") == NP}
        return out + [m for k, m in changed.items() if k not in present]


def admitted_by(engine: Engine, flows: Iterable[Flow]) -> list[Flow]:
    models = engine.models()
    return [f for f in flows if not blocked_sides(engine, models, f)]


def suggest(current: Iterable[Mapping[str, Any]], flows: Sequence[Flow]) -> Suggestion:
    """What admits ``flows`` (deduplicated) in the cluster of ``current`` objects (Namespaces,
    Pods, Nodes, NetworkPolicies, ClusterNetworkPolicies, Services)."""
    if len(flows) > MAX_FLOWS:
        raise ValueError(f"{len(flows)} flows: at most {MAX_FLOWS} per suggestion")
    cluster = _Cluster([copy.deepcopy(dict(o)) for o in current])
    out = Suggestion()
    todo = _triage(cluster.engine, sorted(set(flows)), out)
    changes: dict[str, Change] = {}
    remaining = _mend(cluster, todo, changes)
    _add_rules(cluster, remaining, changes)
    _verify(cluster, todo, changes, out)
    return out


def _triage(engine: Engine, flows: list[Flow], out: Suggestion) -> list[Flow]:
    """The flows a NetworkPolicy change can admit; the rest sorted into ``out``."""
    models = engine.models()
    todo = []
    for f in flows:
        try:
            sides = blocked_sides(engine, models, f)
        except (FlowError, ValueError) as e:
            out.not_fixable.append((f, str(e)))
            continue
        reasons = [s.unfixable for s in sides if s.unfixable]
        if not sides:
            out.already_allowed.append(f)
        elif reasons:
            out.not_fixable.append((f, reasons[0]))
        else:
            todo.append(f)
    return todo


def _mend(cluster: _Cluster, todo: list[Flow], changes: dict[str, Change]) -> list[Flow]:
    """Take mends that admit some of ``todo`` and close nothing, those admitting most first, in
    passes (a policy with two typos gets its second mend in the next) until one takes none;
    the flows left."""
    remaining = list(todo)
    scope = Scope(cluster.engine)
    progress = True
    while remaining and progress:
        progress = False
        tried = []
        for key, pol in sorted(cluster.policies().items()):
            for m in mends(scope, pol):
                admitted = admitted_by(cluster.trial({key: m.manifest}), remaining)
                if admitted:
                    tried.append((-len(admitted), key, m.field, m))
        mended: set[str] = set()
        for _, key, _, m in sorted(tried, key=lambda t: t[:3]):
            if key in mended:
                continue  # its manifest changed: the next pass mends the new one
            engine = cluster.trial({key: m.manifest})
            admitted = admitted_by(engine, remaining)
            if not admitted or (m.subject and dry_run(cluster.current(), [m.manifest]).closed):
                continue
            cluster.apply(key, m.manifest, engine)
            change = changes.setdefault(key, Change("mend", m.manifest))
            change.manifest = m.manifest
            change.why.append(m.why())
            change.admits.extend(admitted)
            remaining = [f for f in remaining if f not in admitted]
            mended.add(key)
            progress = True
    return remaining


def _target(engine: Engine, side: Blocked, subject: Peer) -> str:
    """The policy to add the side's rule to ("": a new one selecting ``subject``, the pods the
    side's pod cannot be told apart from). Of the policies isolating it, the one selecting the
    fewest pods, when it selects none but ``subject``'s; else a new policy, which adds no
    isolation when every pod it selects is isolated already (then it is the narrower change)."""
    own = {side.pod.key, *subject.also}

    def size(key: str) -> tuple[int, str]:
        ns, name = key.split("/", 1)
        return len(engine.policy_pods(ns, name)), key

    best = min(side.policies, key=size) if side.policies else ""
    if best and set(engine.policy_pods(*best.split("/", 1))) <= own:
        return best
    isolated = all(_isolated(engine, key, side.direction) for key in own)
    return "" if isolated or not best else best


def _isolated(engine: Engine, pod_key: str, direction: Direction) -> bool:
    ns, name = pod_key.split("/", 1)
    if engine.policies_for_pod(ns, name)[direction]:
        return True
    return direction is Direction.INGRESS and engine.beta_isolated(ns)


Drafts = dict[tuple[str, str], dict[tuple[str, int], RuleDraft]]
Subjects = dict[str, tuple[PodInfo, Peer]]


def _drafts(engine: Engine, flows: list[Flow]) -> tuple[Drafts, Subjects]:
    """The rules the flows need: per (policy key, or "+ns/selector" for a new policy; direction),
    per (protocol, port), the peers; and each new policy's first pod and subject selector."""
    models = engine.models()
    pods = [p for p in engine.pods() if not p.host_network]
    drafts: Drafts = {}
    subjects: Subjects = {}
    for f in flows:
        seen: set[tuple[str, str]] = set()
        for side in blocked_sides(engine, models, f):
            if side.unfixable or (side.direction.value, side.pod.key) in seen:
                continue
            seen.add((side.direction.value, side.pod.key))
            subject = pod_peer(side.pod, side.pod.namespace, pods)
            target = _target(engine, side, subject)
            if not target:
                target = f"+{side.pod.namespace}/{subject.json}"
                subjects.setdefault(target, (side.pod, subject))
            ns = target.lstrip("+").split("/", 1)[0]
            p = address_peer(side.peer) if isinstance(side.peer, str) else pod_peer(side.peer, ns, pods)
            d = drafts.setdefault((target, side.direction.value), {}).setdefault((f.protocol, f.port), RuleDraft())
            d.peers.setdefault(p.json, p)
            if (f.protocol, f.port) not in d.ports:
                d.ports.append((f.protocol, f.port))
            if f not in d.flows:
                d.flows.append(f)
    return drafts, subjects


def _add_rules(cluster: _Cluster, flows: list[Flow], changes: dict[str, Change]) -> None:
    engine = cluster.engine
    drafts, subjects = _drafts(engine, flows)
    policies = cluster.policies()
    written: dict[str, dict[str, Any]] = {}
    for (target, direction), by_port in sorted(drafts.items()):
        rules = merge_by_peers(list(by_port.values()))
        if target.startswith("+"):
            pod, subject = subjects[target]
            key, manifest = _new_policy(pod, subject, direction, policies)
            change = changes.setdefault(key, Change("create", manifest))
            change.why.append(_new_words(engine, pod, direction))
            change.notes.extend(_subject_notes(subject))
        else:
            key = target
            manifest = copy.deepcopy(dict(policies[key]))
            change = changes.setdefault(key, Change("add-rules", manifest))
            if change.action == "mend":
                change.action = "mend+add-rules"
            change.notes.extend(_policy_notes(engine, key, rules))
        spec = manifest.setdefault("spec", {})
        for r in rules:
            spec.setdefault(direction, []).append(r.spec(direction))
            change.why.append(f"adds an {direction} rule: {_rule_words(r, direction)}")
            change.admits.extend(x for x in r.flows if x not in change.admits)
            change.notes.extend(n for p in r.peers.values() for n in _peer_notes(p) if n not in change.notes)
        change.manifest = manifest
        policies[key] = manifest
        written[key] = manifest
    cluster.apply_all(written)


def _new_words(engine: Engine, pod: PodInfo, direction: str) -> str:
    isolating = engine.policies_for_pod(pod.namespace, pod.name)[Direction(direction)]
    if not isolating:
        return f"{pod.key} is isolated only by namespace {pod.namespace}'s DefaultDeny annotation"
    return (
        f"a new policy for {pod.key}: it is isolated already, and a rule in "
        f"{', '.join(isolating)} would open the same to every other pod selected there"
    )


def _new_policy(pod: PodInfo, subject: Peer, direction: str, policies: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    match = dict(subject.spec.get("podSelector", {}).get("matchLabels") or {})
    base = next(iter(match.values()), pod.name) if len(match) == 1 else pod.name
    name, n = f"{base}-access", 2
    while f"{pod.namespace}/{name}" in policies:
        name, n = f"{base}-access-{n}", n + 1
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": NP,
        "metadata": {"name": name, "namespace": pod.namespace},
        "spec": {"podSelector": dict(subject.spec.get("podSelector") or {}), "policyTypes": [direction.title()]},
    }
    return f"{pod.namespace}/{name}", manifest


def _rule_words(r: RuleDraft, direction: str) -> str:
    ports = ", ".join(f"{proto}/{port}" for proto, port in sorted(r.ports))
    word = "from" if direction == "ingress" else "to"
    peers = "; ".join(_peer_words(p) for p in r.peers.values())
    return f"{word} {peers} on {ports}"


def _peer_words(p: Peer) -> str:
    spec = p.spec
    if "ipBlock" in spec:
        return f"ipBlock {spec['ipBlock']['cidr']}"
    labels = (spec.get("podSelector") or {}).get("matchLabels") or {}
    pods = ", ".join(f"{k}={v}" for k, v in labels.items()) or "every pod"
    ns = (spec.get("namespaceSelector") or {}).get("matchLabels")
    return f"pods {pods}" + (f" in namespace {next(iter(ns.values()))}" if ns else "")


def _peer_notes(p: Peer) -> list[str]:
    if not p.also:
        return []
    return [
        f"the peer {_peer_words(p)} also selects {', '.join(p.also)}: they share every label of it, "
        "so no selector of labels can be narrower"
    ]


def _subject_notes(subject: Peer) -> list[str]:
    if not subject.also:
        return []
    return [f"its podSelector also selects {', '.join(subject.also)}: they share every label it could name"]


def _policy_notes(engine: Engine, key: str, rules: Sequence[RuleDraft]) -> list[str]:
    ns, name = key.split("/", 1)
    selected = set(engine.policy_pods(ns, name))
    meant = {f.dst if f.dst in selected else f.src for r in rules for f in r.flows}
    others = sorted(selected - meant)
    if not others:
        return []
    return [f"{key} also selects {', '.join(others)}: the rule opens the same to them"]


def _verify(cluster: _Cluster, todo: list[Flow], changes: dict[str, Change], out: Suggestion) -> None:
    engine = cluster.engine
    models = engine.models()
    for f in todo:
        sides = blocked_sides(engine, models, f)
        if sides:
            side = sides[0]
            out.not_admitted.append((f, f"still blocked by the {side.direction.value} of {side.pod.key}"))
        else:
            out.admitted.append(f)
    out.changes = [changes[k] for k in sorted(changes)]
    if not out.changes:
        return
    objects = cluster.objects
    dry = dry_run(objects, [c.manifest for c in out.changes])
    wanted = {(f.src, f.dst, f.port, f.protocol) for f in todo}
    out.also_opens = [c for c in dry.opened if c[:4] not in wanted]
    out.closes = dry.closed
    out.rejected = dry.rejected
    out.warnings = dry.warnings
