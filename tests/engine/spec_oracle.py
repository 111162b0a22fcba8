"""A naive NetworkPolicy evaluator written straight from the Kubernetes API reference.

It shares no code with the engine on purpose: the property tests compare the two, so each
catches the other's mistakes. It is slow (it rescans everything for every question) and meant
to be obviously correct, clause by clause of `networking.k8s.io/v1`:

* A pod is isolated for ingress (egress) when a valid policy in its namespace selects it and
  has Ingress (Egress) in its policyTypes. policyTypes absent or empty defaults to Ingress, plus
  Egress when the policy has at least one egress rule (`len(spec.egress) != 0`).
* A namespace annotated ``net.beta.kubernetes.io/network-policy: {"ingress": {"isolation":
  "DefaultDeny"}}`` isolates all its pods for ingress (when the beta behaviour is on).
* A new connection is allowed iff the source is not egress-isolated or some egress rule of a
  policy selecting it allows it, and the destination is not ingress-isolated or some ingress
  rule allows it. A pod talking to itself is always allowed.
* A rule: ``from``/``to`` absent or empty = every peer; otherwise any listed peer. ``ports``
  absent or empty = every port and protocol; otherwise any listed port.
* A peer: ``podSelector`` alone = matching pods of the policy's namespace; ``namespaceSelector``
  alone = every pod of matching namespaces; both = matching pods in matching namespaces;
  ``ipBlock`` = addresses in cidr and in none of ``except`` (pod addresses included). Selectors
  only ever match endpoint pods (an IP, not host network, not Succeeded/Failed).
* A port: protocol defaults to TCP; no ``port`` = every port of that protocol; a number, up to
  ``endPort`` inclusive when set; a name resolves against the destination pod's container ports
  of that name and protocol (a destination that is not a pod has no named ports).
* Namespaces always carry ``kubernetes.io/metadata.name: <name>`` (the API server sets it).
* Invalid policies (see `problems`) are ignored entirely; all others still apply.
* Dual-stack: a pod's addresses are ``status.podIPs`` (``status.podIP`` when that is absent), at
  most one per family; a pod whose addresses are not valid IPs, or whose podIP is not podIPs[0],
  or with two of one family, is not an endpoint. A connection goes from one address to another
  of the same family, and is judged for that pair: an ``ipBlock`` holds addresses of its own
  family only, so an IPv4 block never matches a pod's IPv6 address; a selector peer matches
  every address of the pods it selects; a rule without peers matches either family.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

BETA_ANNOTATION = "net.beta.kubernetes.io/network-policy"
NS_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


# ---------------------------------------------------------------- objects


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name_of(obj: Obj) -> str:
    return str(meta(obj)["name"])


def ns_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace") or "default")


def key_of(obj: Obj) -> str:
    return f"{ns_of(obj)}/{name_of(obj)}"


def labels_of(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def _listed_ips(pod: Obj) -> list[Any]:
    status = pod.get("status") or {}
    listed = [e.get("ip") for e in status.get("podIPs") or []]
    return listed or ([status["podIP"]] if status.get("podIP") else [])


def family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def pod_ips(pod: Obj) -> list[str]:
    """The pod's addresses, in the API's order; empty when they are missing or unusable."""
    status = pod.get("status") or {}
    try:
        addrs = [ipaddress.ip_address(ip) for ip in _listed_ips(pod)]
        primary = status.get("podIP")
        if primary and addrs and ipaddress.ip_address(primary) != addrs[0]:
            return []
    except ValueError:
        return []
    if len({a.version for a in addrs}) != len(addrs):
        return []
    return [str(a) for a in addrs]


def pod_ip(pod: Obj, version: int | None = None) -> str | None:
    """The pod's address of one family (None: its first one)."""
    for ip in pod_ips(pod):
        if version is None or family(ip) == version:
            return ip
    return None


def is_endpoint(pod: Obj) -> bool:
    """Only pods with their own IPs that are still running can be peers or destinations."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return bool(pod_ips(pod) and not spec.get("hostNetwork") and status.get("phase") not in ("Succeeded", "Failed"))


def shared_families(a: Obj, b: Obj) -> list[int]:
    """The families both pods have an address of (the order of ``b``'s addresses)."""
    mine = {family(ip) for ip in pod_ips(a)}
    return [family(ip) for ip in pod_ips(b) if family(ip) in mine]


def container_ports(pod: Obj) -> list[tuple[str, str, int]]:
    """(name, protocol, number) of every named container port."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name"):
                out.append((str(p["name"]), str(p.get("protocol") or "TCP"), int(p["containerPort"])))
    return out


# ---------------------------------------------------------------- validation


def _selector_problems(sel: Any, path: str) -> list[str]:
    if sel is None:
        return []
    out = []
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        op = expr.get("operator")
        values = expr.get("values") or []
        where = f"{path}.matchExpressions[{i}]"
        if op not in OPERATORS:
            out.append(f"{where}.operator")
        elif (op in ("In", "NotIn") and not values) or (op in ("Exists", "DoesNotExist") and values):
            out.append(f"{where}.values")
    return out


def _net(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return None


def _peer_problems(peer: Obj, path: str) -> list[str]:
    out = []
    block = peer.get("ipBlock")
    if block is not None:
        if peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None:
            out.append(path)
        cidr = _net(block.get("cidr"))
        if cidr is None:
            return [*out, f"{path}.ipBlock.cidr"]
        for j, exc in enumerate(block.get("except") or []):
            e = _net(exc)
            # The reference: except values are rejected if they are outside the cidr range
            # (a strict subset, as the API server validates it).
            inside = e is not None and e.version == cidr.version and e.network_address in cidr
            if e is None or not inside or e.prefixlen <= cidr.prefixlen:
                out.append(f"{path}.ipBlock.except[{j}]")
        return out
    if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
        return [path]
    out += _selector_problems(peer.get("podSelector"), f"{path}.podSelector")
    out += _selector_problems(peer.get("namespaceSelector"), f"{path}.namespaceSelector")
    return out


def _port_problems(p: Obj, path: str) -> list[str]:
    out = []
    if (p.get("protocol") or "TCP") not in PROTOCOLS:
        out.append(f"{path}.protocol")
    port = p.get("port")
    end = p.get("endPort")
    if isinstance(port, bool):
        out.append(f"{path}.port")
    elif isinstance(port, int):
        if not 1 <= port <= 65535:
            out.append(f"{path}.port")
        elif end is not None and (not isinstance(end, int) or end < port or end > 65535):
            out.append(f"{path}.endPort")
    elif isinstance(port, str):
        if len(port) > 15 or not _PORT_NAME.match(port) or "--" in port or not re.search("[a-z]", port):
            out.append(f"{path}.port")
        if end is not None:
            out.append(f"{path}.endPort")
    elif port is None and end is not None:
        out.append(f"{path}.endPort")
    return out


def problems(policy: Obj) -> list[str]:
    """Field paths of everything invalid in a policy; empty when it is valid."""
    spec = policy.get("spec") or {}
    out = _selector_problems(spec.get("podSelector"), "spec.podSelector")
    for t in spec.get("policyTypes") or []:
        if t not in ("Ingress", "Egress"):
            out.append("spec.policyTypes")
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for k, peer in enumerate(rule.get(peers_key) or []):
                out += _peer_problems(peer, f"spec.{direction}[{i}].{peers_key}[{k}]")
            for k, port in enumerate(rule.get("ports") or []):
                out += _port_problems(port, f"spec.{direction}[{i}].ports[{k}]")
    return out


# ---------------------------------------------------------------- semantics


def selector_matches(sel: Obj, labels: Mapping[str, str]) -> bool:
    """A label selector: matchLabels and every matchExpression must hold; {} matches all."""
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], list(expr.get("values") or [])
        if op == "In" and not (key in labels and labels[key] in values):
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    given = spec.get("policyTypes")
    if given:
        return list(given)
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def beta_default_deny(namespace: Obj | None) -> bool:
    """True when the namespace's beta annotation asks for ingress isolation (malformed: no)."""
    if namespace is None:
        return False
    raw = (meta(namespace).get("annotations") or {}).get(BETA_ANNOTATION)
    if raw is None:
        return False
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return False
    if not isinstance(value, dict) or not isinstance(value.get("ingress"), dict):
        return False
    return bool(value["ingress"].get("isolation") == "DefaultDeny")


@dataclass
class Oracle:
    """The cluster's objects and the questions the spec answers about them."""

    namespaces: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    beta: bool = True

    def __post_init__(self) -> None:
        self._ns = {name_of(n): n for n in self.namespaces}
        self.valid = [p for p in self.policies if not problems(p)]

    def ns_labels(self, ns: str) -> dict[str, str]:
        obj = self._ns.get(ns)
        labels = labels_of(obj) if obj is not None else {}
        labels[NS_NAME_LABEL] = ns
        return labels

    def endpoints(self) -> list[dict[str, Any]]:
        return [p for p in self.pods if is_endpoint(p)]

    def pod(self, key: str) -> dict[str, Any]:
        return next(p for p in self.pods if key_of(p) == key)

    def selects(self, policy: Obj, pod: Obj) -> bool:
        sel = (policy.get("spec") or {}).get("podSelector") or {}
        return ns_of(policy) == ns_of(pod) and selector_matches(sel, labels_of(pod))

    def isolating(self, pod: Obj, direction: str) -> list[Obj]:
        """The valid policies that select the pod and isolate it in ``direction``."""
        return [p for p in self.valid if direction in policy_types(p) and self.selects(p, pod)]

    def peer_matches(self, peer: Obj, policy_ns: str, ip: str, pod: Obj | None) -> bool:
        block = peer.get("ipBlock")
        if block is not None:
            addr = ipaddress.ip_address(ip)
            net = ipaddress.ip_network(block["cidr"], strict=False)
            if addr.version != net.version or addr not in net:
                return False
            return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
        if pod is None or not is_endpoint(pod):
            return False
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        in_ns = ns_of(pod) == policy_ns if ns_sel is None else selector_matches(ns_sel, self.ns_labels(ns_of(pod)))
        return in_ns and (pod_sel is None or selector_matches(pod_sel, labels_of(pod)))

    @staticmethod
    def port_matches(ports: Iterable[Obj] | None, protocol: str, port: int, dst: Obj | None) -> bool:
        ports = list(ports or [])
        if not ports:
            return True
        for p in ports:
            if (p.get("protocol") or "TCP") != protocol:
                continue
            want = p.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                named = [] if dst is None else container_ports(dst)
                if any(n == want and proto == protocol and num == port for n, proto, num in named):
                    return True
                continue
            end = p.get("endPort")
            if want <= port <= (end if end is not None else want):
                return True
        return False

    def _rules_allow(
        self,
        policies: list[Obj],
        direction: str,
        peer_ip: str,
        peer_pod: Obj | None,
        dst: Obj | None,
        protocol: str,
        port: int,
    ) -> bool:
        peers_key = "from" if direction == "ingress" else "to"
        for pol in policies:
            for rule in (pol.get("spec") or {}).get(direction) or []:
                peers = rule.get(peers_key) or []
                peer_ok = not peers or any(self.peer_matches(pe, ns_of(pol), peer_ip, peer_pod) for pe in peers)
                if peer_ok and self.port_matches(rule.get("ports"), protocol, port, dst):
                    return True
        return False

    def ingress_isolated(self, pod: Obj) -> bool:
        return bool(self.isolating(pod, "Ingress")) or (self.beta and beta_default_deny(self._ns.get(ns_of(pod))))

    def egress_isolated(self, pod: Obj) -> bool:
        return bool(self.isolating(pod, "Egress"))

    def egress_allows(self, src: Obj, dst_ip: str, dst: Obj | None, protocol: str, port: int) -> bool:
        if not self.egress_isolated(src):
            return True
        return self._rules_allow(self.isolating(src, "Egress"), "egress", dst_ip, dst, dst, protocol, port)

    def ingress_allows(self, dst: Obj, src_ip: str, src: Obj | None, protocol: str, port: int) -> bool:
        if not self.ingress_isolated(dst):
            return True
        return self._rules_allow(self.isolating(dst, "Ingress"), "ingress", src_ip, src, dst, protocol, port)

    def allowed(self, src: Obj | str, dst: Obj, protocol: str, port: int, version: int | None = None) -> bool:
        """A new connection from a pod (or an external IP, given as text) to an endpoint pod, over
        IP ``version`` (None: the first family both ends have)."""
        assert is_endpoint(dst), f"{key_of(dst)} is not an endpoint"
        if isinstance(src, str):
            dst_ip = pod_ip(dst, family(src))
            assert dst_ip is not None, f"{key_of(dst)} has no address of {src}'s family"
            return self.ingress_allows(dst, src, None, protocol, port)
        if src is dst or key_of(src) == key_of(dst):
            return True
        assert is_endpoint(src), f"{key_of(src)} is not an endpoint"
        if version is None:
            version = shared_families(src, dst)[0]
        src_ip, dst_ip = pod_ip(src, version), pod_ip(dst, version)
        assert src_ip is not None and dst_ip is not None, f"{key_of(src)} -> {key_of(dst)}: no IPv{version} pair"
        return self.egress_allows(src, dst_ip, dst, protocol, port) and self.ingress_allows(
            dst, src_ip, src, protocol, port
        )
