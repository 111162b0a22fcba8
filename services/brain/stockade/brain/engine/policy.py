"""NetworkPolicy parsing and validation: a Kubernetes dict in, a canonical `Policy` out.

networking.k8s.io/v1 and extensions/v1beta1 are read alike (the beta shape is a subset).
Every error names the field, so a malformed policy is rejected alone with a message a person
can act on.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.selectors import Selector, parse_selector, sized_selector
from stockade.model import Protocol
from stockade.model.limits import POLICY_LIMITS, over
from stockade.model.weighed import weighed_lru

POLICY_API_VERSIONS = ("networking.k8s.io/v1", "extensions/v1beta1", "networking.k8s.io/v1beta1")
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?\Z")


# Full width (128 bits): a shorter digest let one tenant's peer take over another's set; the
# engine also refuses two definitions under one id (see `Engine._set_id_clash`).
SET_ID_BYTES = 16


def set_id(kind: str, *parts: str) -> str:
    """An address set's id: a digest of the definition of what it holds."""
    # surrogatepass: label values from YAML/JSON may hold lone surrogates; every text has an id
    text = "\x1e".join((kind, *parts)).encode("utf-8", "surrogatepass")
    return "ag_" + hashlib.blake2b(text, digest_size=SET_ID_BYTES).hexdigest()


def _canon(sel: Selector | None) -> str:
    return "\x00" if sel is None else sel.canon


@dataclass(frozen=True)
class PodPeer:
    """Pods chosen by selectors. ``namespace`` is the policy's own, used when ``ns_selector`` is None."""

    namespace: str
    pod_selector: Selector | None
    ns_selector: Selector | None
    # The address set this peer compiles to: equal definitions share one set.
    sid: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        scope = self.namespace if self.ns_selector is None else "\x00"
        object.__setattr__(self, "sid", set_id("pods", scope, _canon(self.pod_selector), _canon(self.ns_selector)))

    def describe(self) -> str:
        parts = []
        if self.ns_selector is not None:
            parts.append(f"namespaces matching {self.ns_selector}")
        else:
            parts.append(f"namespace {self.namespace}")
        parts.append(f"pods matching {self.pod_selector}" if self.pod_selector is not None else "all pods")
        return " / ".join(parts)


@dataclass(frozen=True)
class NodePeer:
    """The addresses of the nodes a selector matches (ClusterNetworkPolicy ``nodes`` peers)."""

    node_selector: Selector
    sid: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sid", set_id("nodes", self.node_selector.canon))

    def describe(self) -> str:
        return f"nodes matching {self.node_selector}"


@dataclass(frozen=True)
class IPBlockPeer:
    cidr: str
    excepts: tuple[str, ...]
    sid: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sid", set_id("ipblock", self.cidr, *self.excepts))

    def describe(self) -> str:
        return self.cidr + (f" except {', '.join(self.excepts)}" if self.excepts else "")

    def networks(self) -> list[str]:
        """The block minus its exceptions, as a list of CIDRs."""
        return list(_block_networks(self.cidr, self.excepts))

    def contains(self, ip: str) -> bool:
        """Whether an address (canonical, either family) is in the block and in none of its excepts.
        An address of the other family never is."""
        version, lo, hi, starts, ends = _block_index(self.cidr, self.excepts)
        if (":" in ip) != (version == 6):
            return False
        n = int(ipaddress.ip_address(ip))
        if not lo <= n < hi:
            return False
        i = bisect.bisect_right(starts, n) - 1
        return i < 0 or n >= ends[i]


_Intervals = tuple[int, int, int, tuple[int, ...], tuple[int, ...]]


# Weighed caches (stockade.model.weighed): one block may hold 1,000 excepts or expand to 65,536
# CIDRs, and the blocks of deleted policies must not pile up in them.
@weighed_lru(1 << 16, lambda args, _: 3 * len(args[1]))
def _block_index(cidr: str, excepts: tuple[str, ...]) -> _Intervals:
    """The block as [lo, hi) and its excepts merged into sorted disjoint [start, end) intervals.
    The CIDRs are canonical (validated by `_ipblock`), so they are read with the C library."""
    version, lo, hi = _span(cidr)
    starts: list[int] = []
    ends: list[int] = []
    spans = [(s, e) for v, s, e in map(_span, excepts) if v == version]
    for start, end in sorted(spans):
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)  # nested or adjacent excepts merge
        else:
            starts.append(start)
            ends.append(end)
    return version, lo, hi, tuple(starts), tuple(ends)


def _span(cidr: str) -> tuple[int, int, int]:
    """A canonical CIDR as (version, first address, one past the last)."""
    addr, _, plen = cidr.partition("/")
    v6 = ":" in addr
    start = int.from_bytes(socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr), "big")
    return (6, start, start + (1 << (128 - int(plen)))) if v6 else (4, start, start + (1 << (32 - int(plen))))


# "/prefix" by the bit length of the block size, per address width: no formatting per CIDR.
_SUFFIX = {bits: [f"/{bits + 1 - n}" for n in range(bits + 2)] for bits in (32, 128)}


def _cover(start: int, end: int, bits: int, out: list[str], version: int) -> None:
    """Append the fewest CIDRs covering exactly [start, end), in order: first the largest block
    aligned at ``start`` while it fits (sizes grow), then one block per set bit of what is left
    (sizes shrink). Addresses are written as ``str(ipaddress.ip_address(n))`` would write them,
    only faster (this loop is the whole cost of a wide ipBlock: it is output-bound)."""
    v6 = version == 6
    family, width = (socket.AF_INET6, 16) if v6 else (socket.AF_INET, 4)
    ntop, append, suffix = socket.inet_ntop, out.append, _SUFFIX[bits]
    top = 1 << bits
    slow = v6 and start >> 48 == 0  # ::/80: the C library writes embedded IPv4, Python does not
    while start < end:
        low = start & -start or top
        if low > end - start:
            break
        if slow and start >> 48 == 0:
            text = str(ipaddress.IPv6Address(start))
        else:
            text = ntop(family, start.to_bytes(width, "big"))
        append(text + suffix[low.bit_length()])
        start += low
    rest = end - start
    while rest:
        n = rest.bit_length()
        if slow and start >> 48 == 0:
            text = str(ipaddress.IPv6Address(start))
        else:
            text = ntop(family, start.to_bytes(width, "big"))
        append(text + suffix[n])
        size = 1 << (n - 1)
        start += size
        rest -= size


def _cover_count(start: int, end: int) -> int:
    """How many CIDRs `_cover` appends for [start, end), in constant time: split at the most
    aligned address c inside; [start, c) takes one block per set bit of c - start, [c, end) one
    per set bit of end - c (and an exactly aligned range is one block)."""
    if start >= end:
        return 0
    d = (start ^ (end - 1)).bit_length()
    if d == 0:
        return 1
    if start & ((1 << d) - 1) == 0 and end - start == 1 << d:
        return 1
    c = (end - 1) >> (d - 1) << (d - 1)
    return (c - start).bit_count() + (end - c).bit_count()


@weighed_lru(1 << 16, lambda args, _: len(args[1]))
def _block_count(cidr: str, excepts: tuple[str, ...]) -> int:
    """How many CIDRs the block minus its excepts is (`_block_networks`' length), without writing
    them: linear in the excepts, so a limit on it costs nothing however wide the block is."""
    _, lo, hi, starts, ends = _block_index(cidr, excepts)
    total, cur = 0, lo
    for start, end in zip(starts, ends, strict=True):
        total += _cover_count(cur, start)
        cur = max(cur, end)
    return total + _cover_count(cur, hi)


@weighed_lru(1 << 17, lambda args, nets: len(args[1]) + len(nets))
def _block_networks(cidr: str, excepts: tuple[str, ...]) -> tuple[str, ...]:
    """The block minus its excepts: one sorted walk over the gaps between the merged excepts,
    so the cost is linear in the excepts and in the CIDRs produced (never quadratic)."""
    version, lo, hi, starts, ends = _block_index(cidr, excepts)
    bits = 32 if version == 4 else 128
    out: list[str] = []
    cur = lo
    for start, end in zip(starts, ends, strict=True):
        if start > cur:
            _cover(cur, start, bits, out, version)
        cur = max(cur, end)
    if cur < hi:
        _cover(cur, hi, bits, out, version)
    return tuple(out)  # in address order


Peer = PodPeer | IPBlockPeer


@dataclass(frozen=True)
class PortDef:
    protocol: Protocol
    port: int | str | None  # a number, a named port, or None for every port
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    peers: tuple[Peer, ...] | None  # None: every peer
    ports: tuple[PortDef, ...] | None  # None: every port and protocol

    @property
    def has_named_ports(self) -> bool:
        return self.ports is not None and any(isinstance(p.port, str) for p in self.ports)


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    ingress: tuple[PolicyRule, ...] | None  # None: the policy does not isolate for ingress
    egress: tuple[PolicyRule, ...] | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """Parse and validate one NetworkPolicy object; raise PolicyError on the first problem."""
    api = obj.get("apiVersion", "networking.k8s.io/v1")
    if api not in POLICY_API_VERSIONS:
        raise PolicyError("apiVersion", f"{api!r} is not a NetworkPolicy API; use networking.k8s.io/v1")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise PolicyError("metadata.name", "is required")
    namespace = meta.get("namespace") or "default"
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise PolicyError("spec", "must be an object")
    pod_selector = sized_selector(parse_selector(spec.get("podSelector") or {}, "spec.podSelector"), "spec.podSelector")

    types = spec.get("policyTypes")
    egress_raw = spec.get("egress")
    if not types:
        # Defaulting, as the API server does for an absent or empty list: Ingress always;
        # Egress when the policy has egress rules.
        types = ["Ingress"] + (["Egress"] if egress_raw else [])
    if not isinstance(types, list) or any(t not in ("Ingress", "Egress") for t in types):
        raise PolicyError("spec.policyTypes", f"must list Ingress and/or Egress, got {types!r}")
    # Both sections are validated whatever policyTypes says, as the API server does.
    ingress = _parse_rules(spec.get("ingress"), "spec.ingress", "from", namespace)
    egress = _parse_rules(egress_raw, "spec.egress", "to", namespace)
    _check_cidr_budget(ingress + egress)
    return Policy(
        namespace,
        str(meta["name"]),
        pod_selector,
        ingress if "Ingress" in types else None,
        egress if "Egress" in types else None,
    )


def _parse_rules(raw: Any, field: str, peer_key: str, namespace: str) -> tuple[PolicyRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError(field, "must be a list of rules")
    lim = POLICY_LIMITS
    if len(raw) > lim.rules_per_direction:
        raise PolicyError(field, over("rules", len(raw), lim.rules_per_direction, "per direction"))
    rules = []
    compiled = 0  # chain rules this direction compiles to: one per peer of each rule
    matches = 0  # (peer, port) pairs those chain rules carry
    for i, r in enumerate(raw):
        f = f"{field}[{i}]"
        if r is None:
            r = {}
        if not isinstance(r, dict):
            raise PolicyError(f, "must be an object")
        peers_raw = r.get(peer_key)
        peers: tuple[Peer, ...] | None = None
        if peers_raw:  # absent and empty both mean every peer
            if not isinstance(peers_raw, list):
                raise PolicyError(f"{f}.{peer_key}", "must be a list of peers")
            if len(peers_raw) > lim.peers_per_rule:
                raise PolicyError(f"{f}.{peer_key}", over("peers", len(peers_raw), lim.peers_per_rule, "per rule"))
            peers = tuple(_parse_peer(p, f"{f}.{peer_key}[{j}]", namespace) for j, p in enumerate(peers_raw))
        ports_raw = r.get("ports")
        ports: tuple[PortDef, ...] | None = None
        if ports_raw:
            if not isinstance(ports_raw, list):
                raise PolicyError(f"{f}.ports", "must be a list")
            if len(ports_raw) > lim.ports_per_rule:
                raise PolicyError(f"{f}.ports", over("ports", len(ports_raw), lim.ports_per_rule, "per rule"))
            ports = tuple(_parse_port(p, f"{f}.ports[{j}]") for j, p in enumerate(ports_raw))
        compiled += len(peers) if peers else 1
        matches += (len(peers) if peers else 1) * (len(ports) if ports else 1)
        if matches > lim.port_matches_per_policy:  # else compiling is peers x ports: quadratic
            raise PolicyError(
                field,
                over("peer and port pairs over its rules", matches, lim.port_matches_per_policy, "per direction")
                + " (each peer of a rule is one chain rule carrying all the rule's ports)",
            )
        if compiled > lim.chain_rules_per_policy:
            raise PolicyError(
                field,
                over("peers over its rules", compiled, lim.chain_rules_per_policy, "per direction of a policy")
                + " (each peer of each rule is one rule of a pod's chain)",
            )
        rules.append(PolicyRule(peers, ports))
    return tuple(rules)


def _check_cidr_budget(rules: tuple[PolicyRule, ...]) -> None:
    """All the CIDRs a policy's ipBlocks expand to (each distinct block counted once)."""
    blocks = {p for r in rules for p in r.peers or () if isinstance(p, IPBlockPeer)}
    total = sum(_block_count(b.cidr, b.excepts) for b in blocks)  # without writing them
    limit = POLICY_LIMITS.cidrs_per_policy
    if total > limit:
        raise PolicyError("spec", over("CIDRs from its ipBlocks", total, limit, "per policy") + " (after except)")


def _parse_peer(p: Any, field: str, namespace: str) -> Peer:
    if not isinstance(p, dict) or not p:
        raise PolicyError(field, "must set podSelector, namespaceSelector or ipBlock")
    unknown = set(p) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        raise PolicyError(field, f"unknown field(s) {', '.join(sorted(unknown))}")
    if "ipBlock" in p:
        if "podSelector" in p or "namespaceSelector" in p:
            raise PolicyError(field, "ipBlock cannot be combined with podSelector or namespaceSelector")
        return _parse_ipblock(p["ipBlock"], f"{field}.ipBlock")
    pod_sel = (
        sized_selector(parse_selector(p["podSelector"], f"{field}.podSelector"), f"{field}.podSelector")
        if "podSelector" in p
        else None
    )
    ns_sel = (
        sized_selector(
            parse_selector(p["namespaceSelector"], f"{field}.namespaceSelector"), f"{field}.namespaceSelector"
        )
        if "namespaceSelector" in p
        else None
    )
    if pod_sel is None and ns_sel is None:
        raise PolicyError(field, "must set podSelector, namespaceSelector or ipBlock")
    return PodPeer(namespace, pod_sel, ns_sel)


def _parse_ipblock(b: Any, field: str) -> IPBlockPeer:
    if not isinstance(b, dict):
        raise PolicyError(field, "must be an object with cidr")
    excepts = b.get("except") or []
    limit = POLICY_LIMITS.excepts_per_ipblock
    if isinstance(excepts, list) and len(excepts) > limit:
        raise PolicyError(f"{field}.except", over("excepts", len(excepts), limit, "per ipBlock"))
    if isinstance(excepts, list) and all(isinstance(e, str) for e in excepts):
        return _ipblock(str(b.get("cidr")), tuple(excepts), field)
    raise PolicyError(f"{field}.except", "must be a list of CIDRs")


@weighed_lru(1 << 16, lambda args, _: 2 * len(args[1]))
def _ipblock(cidr: str, raw_excepts: tuple[str, ...], field: str) -> IPBlockPeer:
    """Validate one ipBlock (cached: clusters repeat the same blocks in many policies)."""
    try:
        net = ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        raise PolicyError(f"{field}.cidr", f"{cidr!r} is not a valid CIDR (e.g. 10.0.0.0/16)") from None
    excepts = []
    for i, e in enumerate(raw_excepts):
        try:
            en = ipaddress.ip_network(str(e), strict=False)
        except ValueError:
            raise PolicyError(f"{field}.except[{i}]", f"{e!r} is not a valid CIDR") from None
        if en.version != net.version or not en.subnet_of(net):  # type: ignore[arg-type]
            raise PolicyError(f"{field}.except[{i}]", f"{en} is not inside cidr {net}")
        if en == net:
            raise PolicyError(f"{field}.except[{i}]", f"{en} must be strictly smaller than cidr {net}")
        excepts.append(str(en))
    block = IPBlockPeer(str(net), tuple(sorted(set(excepts))))
    n = _block_count(block.cidr, block.excepts)  # O(excepts): refusing costs nothing
    if n > POLICY_LIMITS.cidrs_per_ipblock:
        raise PolicyError(field, over("CIDRs after except", n, POLICY_LIMITS.cidrs_per_ipblock, "per ipBlock"))
    return block


def _parse_port(p: Any, field: str) -> PortDef:
    if not isinstance(p, dict):
        raise PolicyError(field, "must be an object with protocol and/or port")
    proto_raw = p.get("protocol") or "TCP"
    try:
        protocol = Protocol(str(proto_raw))
    except ValueError:
        raise PolicyError(f"{field}.protocol", f"{proto_raw!r} is not TCP, UDP or SCTP") from None
    port = p.get("port")
    end_port = p.get("endPort")
    if port is None:
        if end_port is not None:
            raise PolicyError(f"{field}.endPort", "needs a numeric port")
        return PortDef(protocol, None)
    if isinstance(port, bool):
        raise PolicyError(f"{field}.port", f"{port!r} is not a port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise PolicyError(f"{field}.port", f"{port} is out of range 1-65535")
        if end_port is not None:
            if isinstance(end_port, bool) or not isinstance(end_port, int):
                raise PolicyError(f"{field}.endPort", f"{end_port!r} is not a port number")
            if not 1 <= end_port <= 65535:
                raise PolicyError(f"{field}.endPort", f"{end_port} is out of range 1-65535")
            if end_port < port:
                raise PolicyError(f"{field}.endPort", f"{end_port} is below port {port}")
        return PortDef(protocol, port, end_port)
    if isinstance(port, str):
        if not _SVC_NAME.match(port) or not re.search("[a-z]", port):
            raise PolicyError(f"{field}.port", f"{port!r} is neither a port number nor a valid port name")
        if end_port is not None:
            raise PolicyError(f"{field}.endPort", "cannot be used with a named port")
        return PortDef(protocol, port)
    raise PolicyError(f"{field}.port", f"{port!r} is not a port")
