"""ClusterNetworkPolicy parsing and validation: a Kubernetes dict in, a `cnp.ClusterNetworkPolicy` out.

The checks are the CRD's (network-policy-api v0.2.0, experimental channel: its OpenAPI schema and
CEL rules), so a policy the API server would refuse is refused here too, alone, with the field
path the API server's 422 names (e.g. ``spec.egress[0].protocols[1].tcp.destinationPort.range``).
Beyond the schema: ``domainNames`` is refused as not supported (Stockade has no DNS-aware
egress), label selectors must be well formed and within the engine's limits, and unknown fields
are refused — except a peer or protocol entry that sets only unknown fields (a newer CRD's
kind), which the API reference asks to fail closed: it is recorded in `cnp.Rule.unknown`.
A JSON null is an absent field, as the API server prunes it. Raises `PolicyError` on the first problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from stockade.brain.engine.cnp import (
    API_VERSION,
    KIND,
    Action,
    ClusterNetworkPolicy,
    NamedPort,
    Namespaces,
    Networks,
    Nodes,
    Peer,
    Pods,
    PortMatch,
    PortRange,
    Rule,
    Subject,
    Tier,
)
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.selectors import Selector, parse_selector, sized_selector
from stockade.model import Protocol
from stockade.model.limits import over

MAX_RULES = 25  # per direction (spec.ingress / spec.egress maxItems)
MAX_PEERS = 25  # per rule (from / to maxItems)
MAX_PROTOCOLS = 25  # per rule (protocols maxItems)
MAX_NETWORKS = 25  # per networks peer (maxItems)
MAX_PRIORITY = 1000
MAX_RULE_NAME = 100
MAX_CIDR_TEXT = 43

_PEERS = {"ingress": ("from", ("namespaces", "pods")), "egress": ("to", ("namespaces", "pods", "nodes", "networks"))}
_EGRESS_ONLY = ("nodes", "networks", "domainNames")
_PROTOCOL_FIELDS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}
# What Go's netip.ParsePrefix (CEL's isCIDR) reads: an address, "/", a decimal length without a
# leading zero; no zone, no netmask. The address itself is left to `ipaddress`.
_CIDR = re.compile(r"^[0-9A-Fa-f:.]+/(0|[1-9][0-9]{0,2})\Z")


def parse_cnp(obj: Mapping[str, Any]) -> ClusterNetworkPolicy:
    """Parse and validate one ClusterNetworkPolicy object; raise PolicyError on the first problem."""
    if not isinstance(obj, Mapping):
        raise PolicyError("", "must be an object")
    api, kind = obj.get("apiVersion", API_VERSION), obj.get("kind", KIND)
    if api != API_VERSION:
        raise PolicyError("apiVersion", f"{api!r} is not served; use {API_VERSION}")
    if kind != KIND:
        raise PolicyError("kind", f"{kind!r} is not {KIND}")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name", "is required")
    spec = _object(obj.get("spec"), "spec", ("tier", "priority", "subject", "ingress", "egress"), required=True)
    tier = _enum(Tier, _required(spec, "tier", "spec"), "spec.tier")
    priority = _integer(_required(spec, "priority", "spec"), "spec.priority", 0, MAX_PRIORITY)
    subject = _subject(_required(spec, "subject", "spec"), "spec.subject")
    return ClusterNetworkPolicy(
        name,
        tier,
        priority,
        subject,
        _rules(spec.get("ingress"), "ingress"),
        _rules(spec.get("egress"), "egress"),
    )


# ------------------------------------------------------------------ shapes


def _kind_of(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _object(value: Any, field: str, known: tuple[str, ...], required: bool = False) -> dict[str, Any]:
    """An object's present (non-null) fields; refuses unknown ones."""
    if value is None:
        if required:
            raise PolicyError(field, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"must be an object, got {_kind_of(value)}")
    present = {k: v for k, v in value.items() if v is not None}
    unknown = sorted(str(k) for k in present if k not in known)
    if unknown:
        raise PolicyError(f"{field}.{unknown[0]}", f"unknown field (known here: {', '.join(known)})")
    return present


def _required(obj: Mapping[str, Any], key: str, field: str) -> Any:
    if obj.get(key) is None:
        raise PolicyError(f"{field}.{key}", "is required")
    return obj[key]


def _list(value: Any, field: str, what: str, limit: int, per: str, required: bool = False) -> list[Any]:
    """A list (absent: empty) within its maxItems; ``required``: minItems 1."""
    if value is None:
        value = []
    if not isinstance(value, list):
        raise PolicyError(field, f"must be a list, got {_kind_of(value)}")
    if required and not value:
        raise PolicyError(field, f"must list at least one of its {what}")
    if len(value) > limit:
        raise PolicyError(field, over(what, len(value), limit, per))
    return value


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON 80.0 is the integer 80 to the API server
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(field, f"must be an integer, got {_kind_of(value)}")
    if not low <= value <= high:
        raise PolicyError(field, f"must be between {low} and {high}, got {value}")
    return value


def _enum(cls: type[Tier] | type[Action], value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        *others, last = (m.value for m in cls)
        supported = f"{', '.join(others)} or {last}"
        raise PolicyError(field, f"unsupported value {value!r}: must be {supported}") from None


def _one_field(obj: dict[str, Any], field: str, choices: tuple[str, ...]) -> str:
    """The one field set in an object that must set exactly one (minProperties = maxProperties = 1)."""
    if len(obj) != 1:
        got = f", got {' and '.join(sorted(map(str, obj)))}" if obj else ""
        raise PolicyError(field, f"must set exactly one of {', '.join(choices)}{got}")
    return next(iter(obj))


def _selector(value: Any, field: str) -> Selector:
    return sized_selector(parse_selector(value if value is not None else {}, field), field)


# ------------------------------------------------------------------ parts


def _subject(value: Any, field: str) -> Subject:
    subject = _object(value, field, ("namespaces", "pods"))
    which = _one_field(subject, field, ("namespaces", "pods"))
    return _selection(which, subject[which], f"{field}.{which}")


def _selection(which: str, value: Any, field: str) -> Namespaces | Pods:
    if which == "namespaces":
        return Namespaces(_selector(value, field))
    pods = _object(value, field, ("namespaceSelector", "podSelector"), required=True)
    pod_selector = _selector(_required(pods, "podSelector", field), f"{field}.podSelector")
    return Pods(_selector(pods.get("namespaceSelector"), f"{field}.namespaceSelector"), pod_selector)


def _rules(value: Any, direction: str) -> tuple[Rule, ...]:
    field = f"spec.{direction}"
    raw = _list(value, field, "rules", MAX_RULES, "per direction")
    return tuple(_rule(r, i, f"{field}[{i}]", direction) for i, r in enumerate(raw))


def _rule(value: Any, index: int, field: str, direction: str) -> Rule:
    peers_key, kinds = _PEERS[direction]
    rule = _object(value, field, ("name", "action", peers_key, "protocols"), required=True)
    name = rule.get("name", "")
    if not isinstance(name, str):
        raise PolicyError(f"{field}.name", f"must be a string, got {_kind_of(name)}")
    if len(name) > MAX_RULE_NAME:
        raise PolicyError(f"{field}.name", f"must be at most {MAX_RULE_NAME} characters, got {len(name)}")
    action = _enum(Action, _required(rule, "action", field), f"{field}.action")
    unknown: list[str] = []
    peers_field = f"{field}.{peers_key}"
    peers_raw = _list(_required(rule, peers_key, field), peers_field, "peers", MAX_PEERS, "per rule", required=True)
    peers: list[Peer] = []
    for j, p in enumerate(peers_raw):
        peer = _peer(p, f"{peers_field}[{j}]", kinds, direction)
        if isinstance(peer, str):
            unknown.append(peer)
        else:
            peers.append(peer)
    protocols: tuple[PortMatch, ...] | None = None
    if "protocols" in rule:
        entries: list[PortMatch] = []
        raw = _list(rule["protocols"], f"{field}.protocols", "protocols", MAX_PROTOCOLS, "per rule", required=True)
        for k, p in enumerate(raw):
            entry = _protocol(p, f"{field}.protocols[{k}]")
            if isinstance(entry, str):
                unknown.append(entry)
            else:
                entries.append(entry)
        protocols = tuple(entries)
        # The CRD's CEL rule on egress rules: only pods have named ports.
        if any(isinstance(e, NamedPort) for e in entries) and any(isinstance(p, Nodes | Networks) for p in peers):
            raise PolicyError(
                field, "networks and nodes peers cannot be used with destinationNamedPort: only pods have named ports"
            )
    return Rule(index, name, action, tuple(peers), protocols, tuple(unknown))


def _peer(value: Any, field: str, kinds: tuple[str, ...], direction: str) -> Peer | str:
    """A peer, or the field path of one that sets only unknown fields (it fails closed)."""
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"must be an object, got {_kind_of(value)}")
    peer = {k: v for k, v in value.items() if v is not None}
    which = _one_field(peer, field, kinds)
    if which == "domainNames" and direction == "egress":
        raise PolicyError(f"{field}.domainNames", "not supported: Stockade has no DNS-aware egress; use networks")
    if which in _EGRESS_ONLY and direction == "ingress":
        raise PolicyError(f"{field}.{which}", "is an egress peer; ingress peers are namespaces and pods")
    if which not in kinds:
        return f"{field}.{which}"
    if which == "nodes":
        return Nodes(_selector(peer[which], f"{field}.nodes"))
    if which == "networks":
        return _networks(peer[which], f"{field}.networks")
    return _selection(which, peer[which], f"{field}.{which}")


def _networks(value: Any, field: str) -> Networks:
    raw = _list(value, field, "CIDRs", MAX_NETWORKS, "per peer", required=True)
    seen: set[str] = set()
    cidrs: list[str] = []
    for k, text in enumerate(raw):
        f = f"{field}[{k}]"
        if not isinstance(text, str):
            raise PolicyError(f, f"must be a CIDR string, got {_kind_of(text)}")
        if len(text) > MAX_CIDR_TEXT:
            raise PolicyError(f, f"must be at most {MAX_CIDR_TEXT} characters, got {len(text)}")
        if text in seen:  # listType=set: the API server refuses a duplicate
            raise PolicyError(f, f"duplicate value {text!r}")
        seen.add(text)
        cidr = _cidr(text, f)
        if cidr not in cidrs:
            cidrs.append(cidr)
    return Networks(tuple(cidrs))


def _cidr(text: str, field: str) -> str:
    """A CIDR as CEL's isCIDR reads it, canonical (host bits cleared)."""
    try:
        if not _CIDR.match(text):
            raise ValueError
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PolicyError(field, f"{text!r} is not a valid CIDR (e.g. 10.0.0.0/8 or fd00::/8)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        raise PolicyError(field, f"{text!r}: IPv4-mapped IPv6 addresses are not allowed")
    return str(net)


def _protocol(value: Any, field: str) -> PortMatch | str:
    """A protocol entry, or the field path of one that sets only unknown fields (it fails closed)."""
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"must be an object, got {_kind_of(value)}")
    entry = {k: v for k, v in value.items() if v is not None}
    known = (*_PROTOCOL_FIELDS, "destinationNamedPort")
    which = _one_field(entry, field, known)
    if which not in known:
        return f"{field}.{which}"
    if which == "destinationNamedPort":
        name = entry[which]
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{field}.{which}", f"must be a non-empty port name, got {_kind_of(name)}")
        return NamedPort(name)
    proto = _object(entry[which], f"{field}.{which}", ("destinationPort",))
    port_field = f"{field}.{which}.destinationPort"
    port = _object(_required(proto, "destinationPort", f"{field}.{which}"), port_field, ("number", "range"))
    form = _one_field(port, port_field, ("number", "range"))
    if form == "number":
        number = _integer(port["number"], f"{port_field}.number", 1, 65535)
        return PortRange(_PROTOCOL_FIELDS[which], number, number)
    range_field = f"{port_field}.range"
    bounds = _object(port["range"], range_field, ("start", "end"))
    start = _integer(_required(bounds, "start", range_field), f"{range_field}.start", 1, 65535)
    end = _integer(_required(bounds, "end", range_field), f"{range_field}.end", 1, 65535)
    if not start < end:  # the CRD's CEL rule: a range of one port is written as a number
        raise PolicyError(range_field, f"start port must be less than end port, got {start}-{end}")
    return PortRange(_PROTOCOL_FIELDS[which], start, end)
