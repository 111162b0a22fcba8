"""NetworkPolicies: the real server's defaulting (``SetDefaults_NetworkPolicy``: policyTypes,
port protocols) and validation (``ValidateNetworkPolicy`` of 1.30-1.32: ports, peers, ipBlocks,
selectors, policyTypes), and the ``kubectl get networkpolicies`` columns (NAME POD-SELECTOR AGE).

The brain judges what the API admits further (its limits, its own field checks); the hostile-input
tests give it the rest through the server's fault injection."""

from __future__ import annotations

from typing import Any

from ..fieldchecks import format_label_selector, label_selector_errors, parse_cidr, port_name_errors, port_num_errors
from ..fielderrors import FieldError, GoRepr, InvalidError, forbidden, invalid, not_supported, required
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

GROUP = "networking.k8s.io"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def default(obj: Obj) -> None:
    """What the real server fills in; a JSON null is Go's zero value (an empty rule, port, peer)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        obj["spec"] = spec = {}
    if spec.get("podSelector") is None:
        spec["podSelector"] = {}
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(direction)
        if not isinstance(rules, list):
            continue
        rules[:] = [r if isinstance(r, dict) else {} for r in rules]
        for rule in rules:
            if isinstance(rule.get(peers), list):
                rule[peers] = [p if isinstance(p, dict) else {} for p in rule[peers]]
            if isinstance(rule.get("ports"), list):
                rule["ports"] = [p if isinstance(p, dict) else {} for p in rule["ports"]]
                for port in rule["ports"]:
                    if port.get("protocol") is None:
                        port["protocol"] = "TCP"
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _port_errors(port: Obj, path: str) -> list[FieldError]:
    out: list[FieldError] = []
    proto, value, end = port.get("protocol"), port.get("port"), port.get("endPort")
    if proto is not None and proto not in PROTOCOLS:
        out.append(not_supported(f"{path}.protocol", proto, PROTOCOLS))
    if value is None:
        if end is not None:
            out.append(invalid(f"{path}.endPort", end, "may not be specified when `port` is not specified"))
    elif isinstance(value, int):
        out += [invalid(f"{path}.port", value, m) for m in port_num_errors(value)]
        if end is not None:
            if end < value:
                out.append(invalid(f"{path}.endPort", end, "must be greater than or equal to `port`"))
            out += [invalid(f"{path}.endPort", end, m) for m in port_num_errors(end)]
    else:
        if end is not None:
            out.append(invalid(f"{path}.endPort", end, "may not be specified when `port` is non-numeric"))
        out += [invalid(f"{path}.port", value, m) for m in port_name_errors(value)]
    return out


def _ip_block_errors(block: Obj, path: str) -> list[FieldError]:
    cidr = block.get("cidr") or ""
    if not cidr:
        return [required(f"{path}.cidr")]
    net = parse_cidr(cidr)
    if net is None:
        return [invalid(f"{path}.cidr", cidr, "not a valid CIDR")]
    out: list[FieldError] = []
    for i, text in enumerate(block.get("except") or []):
        inner = parse_cidr(text or "")
        if inner is None:
            out.append(invalid(f"{path}.except[{i}]", text or "", "not a valid CIDR"))
            return out  # as the real check: it stops at an unparsable except
        contained = inner.version == net.version and inner.network_address in net
        if not contained or net.prefixlen >= inner.prefixlen:
            out.append(invalid(f"{path}.except[{i}]", text, "must be a strict subset of `cidr`"))
    return out


def _peer_errors(peer: Obj, path: str, allow_invalid: bool) -> list[FieldError]:
    out: list[FieldError] = []
    present = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            present += 1
            out += label_selector_errors(peer[key], f"{path}.{key}", allow_invalid)
    if peer.get("ipBlock") is not None:
        present += 1
        out += _ip_block_errors(_dict(peer["ipBlock"]), f"{path}.ipBlock")
    if present == 0:
        out.append(required(path, "must specify a peer"))
    elif present > 1 and peer.get("ipBlock") is not None:
        out.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return out


def validate(obj: Obj, allow_invalid_selector_values: bool = False) -> list[FieldError]:
    """``ValidateNetworkPolicySpec`` (metadata is checked before, by the store)."""
    spec = _dict(obj.get("spec"))
    out = label_selector_errors(spec.get("podSelector"), "spec.podSelector", allow_invalid_selector_values)
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            base = f"spec.{direction}[{i}]"
            for j, port in enumerate(_dict(rule).get("ports") or []):
                out += _port_errors(_dict(port), f"{base}.ports[{j}]")
            for j, peer in enumerate(_dict(rule).get(peers) or []):
                out += _peer_errors(_dict(peer), f"{base}.{peers}[{j}]", allow_invalid_selector_values)
    types = spec.get("policyTypes") or []
    if len(types) > len(POLICY_TYPES):
        listed = ", ".join(f'"{t}"' for t in types)
        out.append(
            invalid(
                "spec.policyTypes",
                GoRepr(f"[]networking.PolicyType{{{listed}}}"),
                "may not specify more than two policyTypes",
            )
        )
        return out
    for i, t in enumerate(types):
        if t not in POLICY_TYPES:
            out.append(not_supported(f"spec.policyTypes[{i}]", t, POLICY_TYPES))
    return out


class NetworkPolicyBehaviour(KindBehaviour):
    def _check(self, obj: Obj, old: Obj | None) -> None:
        default(obj)
        # An old policy whose selector values the rules of its day allowed may keep them.
        lenient = old is not None and bool(label_selector_errors(_dict(old.get("spec")).get("podSelector"), ""))
        errors = validate(obj, lenient)
        if errors:
            raise InvalidError("NetworkPolicy", obj["metadata"]["name"], errors, group=GROUP)

    def on_create(self, obj: Obj) -> None:
        self._check(obj, None)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj, old)

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Pod-Selector", "string", "The pods the policy applies to, as a label selector.", 0),
            AGE_COLUMN,
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        return [obj["metadata"]["name"], format_label_selector(_dict(obj.get("spec")).get("podSelector")), age(obj)]
