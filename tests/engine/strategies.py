"""Hypothesis strategies for small random clusters that exercise every NetworkPolicy feature.

The vocabularies are tiny on purpose, so selectors often match, named ports often resolve,
CIDRs often hold pod addresses, and IPs get reused by new pods after old ones finish. Pods are
IPv4-only, dual-stack (either family first) or IPv6-only; address slot i is ``IP_POOL[i]`` and
``IP6_POOL[i]`` (the same host number in both families, as the lab does), and ipBlocks of both
families, with excepts, cover those addresses.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import strategies as st

from .kube import namespace, node, pod, policy

Obj = dict[str, Any]

NAMESPACES = ("n0", "n1", "n2")
NODES = ("node-1", "node-2", "node-3", "node-4")
LABEL_KEYS = ("app", "tier", "pod")
NS_LABEL_KEYS = ("team", "env")
VALUES = ("a", "b", "c")
IP_POOL = tuple(f"10.9.{net}.{host}" for net in (0, 1) for host in (1, 2, 3, 4, 5, 6))
IP6_POOL = tuple(f"fd09:0:0:{net}::{host}" for net in (0, 1) for host in (1, 2, 3, 4, 5, 6))
EXTERNALS = ("10.9.1.200", "192.168.0.5", "fd09:0:0:1::c8", "fd10::5")
FAMILIES = ("ipv4", "ipv4", "dual", "dual", "dual6", "ipv6")  # dual6: IPv6 first
PORT_NAMES = ("http", "dns", "metrics")
PORT_NUMBERS = (53, 80, 81)
CHECK_PORTS = (53, 80, 81, 82)
PROTOCOLS = ("TCP", "UDP", "SCTP")
CIDRS = (
    "10.9.0.0/16",
    "10.9.0.0/23",
    "10.9.0.0/24",
    "10.9.1.0/24",
    "10.9.0.0/30",
    "10.9.0.4/30",
    "10.9.1.0/29",
    "10.9.0.1/32",
    "10.9.0.2/32",
    "10.9.1.3/32",
    "10.9.1.200/32",
    "192.168.0.0/24",
    "0.0.0.0/0",
    "fd09::/48",
    "fd09::/63",
    "fd09::/64",
    "fd09:0:0:1::/64",
    "fd09::/126",
    "fd09::4/126",
    "fd09:0:0:1::/125",
    "fd09::1/128",
    "fd09::2/128",
    "fd09:0:0:1::3/128",
    "fd09:0:0:1::c8/128",
    "fd10::/64",
    "::/0",
)


def addresses(slot: int, family: str) -> list[str]:
    """The addresses of one slot in one family layout, in podIPs order."""
    v4, v6 = IP_POOL[slot], IP6_POOL[slot]
    return {"ipv4": [v4], "dual": [v4, v6], "dual6": [v6, v4], "ipv6": [v6]}[family]


def strict_subnets(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr)
    return [
        c
        for c in CIDRS
        if (n := ipaddress.ip_network(c)).version == net.version and n.prefixlen > net.prefixlen and n.subnet_of(net)  # type: ignore[arg-type]
    ]


labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(VALUES), max_size=3)
ns_labels_st = st.dictionaries(st.sampled_from(NS_LABEL_KEYS), st.sampled_from(VALUES), max_size=2)


@st.composite
def expression(draw: st.DrawFn, keys: tuple[str, ...], values: tuple[str, ...]) -> Obj:
    op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    e: Obj = {"key": draw(st.sampled_from(keys)), "operator": op}
    if op in ("In", "NotIn"):
        e["values"] = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))
    return e


def selector(keys: tuple[str, ...] = LABEL_KEYS, values: tuple[str, ...] = VALUES) -> st.SearchStrategy[Obj]:
    labels = st.dictionaries(st.sampled_from(keys), st.sampled_from(values), max_size=2)
    exprs = st.lists(expression(keys, values), max_size=2)
    return st.one_of(
        st.just({}),
        labels.map(lambda m: {"matchLabels": m}),
        exprs.map(lambda e: {"matchExpressions": e}),
        st.tuples(labels, exprs).map(lambda t: {"matchLabels": t[0], "matchExpressions": t[1]}),
    )


NS_SELECTOR_KEYS = (*NS_LABEL_KEYS, "kubernetes.io/metadata.name")
ns_selector_st = selector(NS_SELECTOR_KEYS, (*VALUES, *NAMESPACES))


@st.composite
def ip_block(draw: st.DrawFn) -> Obj:
    cidr = draw(st.sampled_from(CIDRS))
    block: Obj = {"cidr": cidr}
    subs = strict_subnets(cidr)
    with_except = draw(st.booleans())
    if subs and with_except:
        excepts: list[str] = draw(st.lists(st.sampled_from(subs), min_size=1, max_size=2, unique=True))
        block["except"] = excepts
    return block


@st.composite
def peer(draw: st.DrawFn) -> Obj:
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        return {"ipBlock": draw(ip_block())}
    out: Obj = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selector())
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(ns_selector_st)
    return out


@st.composite
def port(draw: st.DrawFn) -> Obj:
    out: Obj = {}
    proto = draw(st.sampled_from((None, *PROTOCOLS)))
    if proto is not None:
        out["protocol"] = proto
    kind = draw(st.sampled_from(("none", "number", "range", "name")))
    if kind == "number":
        out["port"] = draw(st.sampled_from(PORT_NUMBERS))
    elif kind == "range":
        lo = draw(st.sampled_from(PORT_NUMBERS))
        out["port"] = lo
        out["endPort"] = lo + draw(st.integers(0, 30))
    elif kind == "name":
        out["port"] = draw(st.sampled_from((*PORT_NAMES, "nope")))
    return out


def optional_list(item: st.SearchStrategy[Obj], max_size: int = 2) -> st.SearchStrategy[list[Obj] | None]:
    """Absent (None), empty, or a short list: absent and empty must mean the same."""
    return st.one_of(st.none(), st.just([]), st.lists(item, min_size=1, max_size=max_size))


@st.composite
def rule(draw: st.DrawFn, peers_key: str) -> Obj:
    out: Obj = {}
    peers = draw(optional_list(peer()))
    if peers is not None:
        out[peers_key] = peers
    ports = draw(optional_list(port()))
    if ports is not None:
        out["ports"] = ports
    return out


# One defect of each kind the engine must reject on its own (see issue 2), with the field it names.
DEFECTS = ("bad-cidr", "except-outside", "port-range", "end-port-below", "unknown-operator")


def break_policy(spec: Obj, defect: str) -> Obj:
    """A copy of ``spec`` with one defect added in a rule of its own (so the rest is unchanged)."""
    spec = json.loads(json.dumps(spec))
    direction = "egress" if defect == "except-outside" else "ingress"
    key = "to" if direction == "egress" else "from"
    if defect == "bad-cidr":
        bad: Obj = {key: [{"ipBlock": {"cidr": "10.9.0.0/33"}}]}
    elif defect == "except-outside":
        bad = {key: [{"ipBlock": {"cidr": "10.9.0.0/24", "except": ["10.9.1.0/28"]}}]}
    elif defect == "port-range":
        bad = {"ports": [{"port": 70000}]}
    elif defect == "end-port-below":
        bad = {"ports": [{"port": 81, "endPort": 80}]}
    else:
        bad = {key: [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}}]}
    spec.setdefault(direction, [])
    spec[direction] = [*spec[direction], bad]
    return spec


@st.composite
def policy_spec(draw: st.DrawFn) -> Obj:
    spec: Obj = {"podSelector": draw(selector())}
    types = draw(st.sampled_from((None, (), ("Ingress",), ("Egress",), ("Ingress", "Egress"))))
    if types is not None:
        spec["policyTypes"] = list(types)
    ingress = draw(optional_list(rule("from")))
    if ingress is not None:
        spec["ingress"] = ingress
    egress = draw(optional_list(rule("to")))
    if egress is not None:
        spec["egress"] = egress
    return spec


@st.composite
def network_policy(draw: st.DrawFn, name: str, allow_defects: bool = True) -> Obj:
    spec = draw(policy_spec())
    if allow_defects and draw(st.integers(0, 5)) == 0:
        spec = break_policy(spec, draw(st.sampled_from(DEFECTS)))
    version = draw(st.sampled_from(("networking.k8s.io/v1", "networking.k8s.io/v1", "extensions/v1beta1")))
    return policy(draw(st.sampled_from(NAMESPACES)), name, spec, api_version=version)


@st.composite
def container_ports(draw: st.DrawFn) -> list[tuple[str, str, int]]:
    names = draw(st.lists(st.sampled_from(PORT_NAMES), max_size=3, unique=True))
    return [(n, draw(st.sampled_from(PROTOCOLS)), draw(st.sampled_from(PORT_NUMBERS))) for n in names]


@st.composite
def a_pod(draw: st.DrawFn, name: str, ip: str | list[str] | None) -> Obj:
    kind = draw(st.sampled_from(("running",) * 6 + ("pending", "no-ip", "succeeded", "failed", "host")))
    return pod(
        draw(st.sampled_from(NAMESPACES)),
        name,
        draw(labels_st),
        None if kind in ("no-ip", "pending") else ip,
        None if kind == "pending" else draw(st.sampled_from(NODES)),
        draw(container_ports()),
        phase={"succeeded": "Succeeded", "failed": "Failed", "pending": "Pending"}.get(kind, "Running"),
        host_network=kind == "host",
    )


@st.composite
def a_namespace(draw: st.DrawFn, name: str) -> Obj:
    return namespace(name, draw(ns_labels_st), beta_deny=draw(st.integers(0, 4)) == 0)


@st.composite
def cluster(draw: st.DrawFn, max_pods: int = 8, max_policies: int = 4) -> dict[str, list[Obj]]:
    """Namespaces, pods (endpoint IPs unique; finished pods may share one), policies, nodes."""
    n_pods = draw(st.integers(1, max_pods))
    slots = draw(st.permutations(range(len(IP_POOL))))
    pods = [draw(a_pod(f"p{i}", addresses(slots[i], draw(st.sampled_from(FAMILIES))))) for i in range(n_pods)]
    # A finished pod may hold the IPs of a running one (the IPs were reused).
    for p in pods:
        if p["status"]["phase"] in ("Succeeded", "Failed") and draw(st.booleans()):
            reused = addresses(slots[draw(st.integers(0, n_pods - 1))], draw(st.sampled_from(FAMILIES)))
            p["status"]["podIP"] = reused[0]
            p["status"]["podIPs"] = [{"ip": a} for a in reused]
    n_pol = draw(st.integers(0, max_policies))
    return {
        "namespaces": [draw(a_namespace(n)) for n in NAMESPACES],
        "pods": pods,
        "policies": [draw(network_policy(f"pol{i}")) for i in range(n_pol)],
        "nodes": [node(n) for n in draw(st.lists(st.sampled_from(NODES), unique=True))],
    }
