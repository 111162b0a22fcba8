"""Reading compiled node models as a dataplane would, and comparing verdict matrices.

Whether a pod A may open a connection to B: A's egress verdict on A's node model and B's
ingress verdict on B's node model must both allow (a pod talking to itself always may). An
external source (an IP, not a pod) only meets B's ingress.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade.model import Direction, NodeDelta, NodeModel, Protocol, apply
from stockade.model.evaluate import decide

from .spec_oracle import Oracle, family, key_of, pod_ip, shared_families

Obj = Mapping[str, Any]
Conn = tuple[str, str, str, int, int]  # (from "ns/pod" or IP, to "ns/pod", protocol, port, IP version)


def node_of(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def models_of(eng: Any) -> dict[str, NodeModel]:
    """A copy of every node's current model, as the engine holds it."""
    return {n: eng.model(n) for n in eng.nodes()}


def apply_deltas(models: dict[str, NodeModel], deltas: Mapping[str, NodeDelta]) -> None:
    """Apply one change's deltas in place, as the agents would (an unseen node starts empty)."""
    for node, delta in deltas.items():
        assert delta.node == node, f"delta for {node} names {delta.node}"
        models[node] = apply(models.get(node, NodeModel(node)), delta)


def model_allows(
    models: Mapping[str, NodeModel], src: Obj | str, dst: Obj, protocol: str, port: int, version: int | None = None
) -> bool:
    """Over IP ``version`` (None: the source address's family, or the first both pods have)."""
    proto = Protocol(protocol)
    dst_model = models.get(node_of(dst)) or NodeModel(node_of(dst))
    if isinstance(src, str):
        dst_ip = pod_ip(dst, family(src))
        assert dst_ip is not None
        return decide(dst_model, Direction.INGRESS, dst_ip, src, proto, port).allowed
    if key_of(src) == key_of(dst):
        return True
    if version is None:
        version = shared_families(src, dst)[0]
    src_ip, dst_ip = pod_ip(src, version), pod_ip(dst, version)
    assert src_ip is not None and dst_ip is not None
    src_model = models.get(node_of(src)) or NodeModel(node_of(src))
    return (
        decide(src_model, Direction.EGRESS, src_ip, dst_ip, proto, port).allowed
        and decide(dst_model, Direction.INGRESS, dst_ip, src_ip, proto, port).allowed
    )


def model_egress_allows(models: Mapping[str, NodeModel], src: Obj, dst_ip: str, protocol: str, port: int) -> bool:
    """A pod's new connection to an address outside the cluster: only its egress applies."""
    src_ip = pod_ip(src, family(dst_ip))
    assert src_ip is not None
    model = models.get(node_of(src)) or NodeModel(node_of(src))
    return decide(model, Direction.EGRESS, src_ip, dst_ip, Protocol(protocol), port).allowed


def verdicts(
    allowed: Callable[[Obj | str, Obj, str, int, int], bool],
    sources: Iterable[Obj | str],
    dests: Iterable[Obj],
    protocols: Iterable[str],
    ports: Iterable[int],
) -> dict[Conn, bool]:
    """Every (source, destination) address pair of one family: a dual-stack pair is asked twice."""
    dests = list(dests)
    protocols = list(protocols)
    ports = list(ports)
    out: dict[Conn, bool] = {}
    for s in sources:
        skey = s if isinstance(s, str) else key_of(s)
        for d in dests:
            versions = ([family(s)] if pod_ip(d, family(s)) else []) if isinstance(s, str) else shared_families(s, d)
            for version in versions:
                for proto in protocols:
                    for port in ports:
                        out[(skey, key_of(d), proto, port, version)] = allowed(s, d, proto, port, version)
    return out


def model_verdicts(
    models: Mapping[str, NodeModel], pods: Iterable[Obj], protocols: Iterable[str], ports: Iterable[int]
) -> dict[Conn, bool]:
    pods = list(pods)
    return verdicts(lambda s, d, pr, po, v: model_allows(models, s, d, pr, po, v), pods, pods, protocols, ports)


def oracle_verdicts(
    oracle: Oracle, pods: Iterable[Obj], protocols: Iterable[str], ports: Iterable[int]
) -> dict[Conn, bool]:
    pods = list(pods)
    return verdicts(oracle.allowed, pods, pods, protocols, ports)


def differences(got: Mapping[Conn, bool], want: Mapping[Conn, bool], limit: int = 25) -> str:
    """A readable list of the connections where two matrices disagree ('' when they agree)."""
    assert got.keys() == want.keys()
    bad = [c for c in want if got[c] != want[c]]
    verdict = {True: "allow", False: "deny"}
    lines = [
        f"  {s} -> {d} {proto}/{port} IPv{v}: got {verdict[got[c]]}, want {verdict[want[c]]}"
        for c in bad[:limit]
        for s, d, proto, port, v in [c]
    ]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


@dataclass
class Reach:
    """An expected reachability matrix in the style of upstream's e2e tests.

    Patterns are ``ns/pod`` with shell wildcards (``x/*``, ``*/a``, ``*``). Later calls
    override earlier ones; a pod always reaches itself.
    """

    pods: list[str]
    default: bool
    _cells: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cells = {(s, d): self.default for s in self.pods for d in self.pods}

    def expect(self, src: str, dst: str, ok: bool) -> Reach:
        for s, d in self._cells:
            if fnmatch.fnmatchcase(s, src) and fnmatch.fnmatchcase(d, dst):
                self._cells[(s, d)] = ok
        return self

    def allows(self, src: str, dst: str) -> bool:
        return src == dst or self._cells[(src, dst)]
