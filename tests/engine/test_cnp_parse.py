"""ClusterNetworkPolicy parsing: each rule of the CRD's schema and CEL (network-policy-api v0.2.0,
experimental channel), accepted and refused, with the field the API server's 422 would name."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.brain.engine.cnp import (
    Action,
    ClusterNetworkPolicy,
    NamedPort,
    Namespaces,
    Networks,
    Nodes,
    Pods,
    PortRange,
    Rule,
    Tier,
)
from stockade.brain.engine.cnp_parse import parse_cnp
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.selectors import parse_selector
from stockade.model import Protocol

Obj = dict[str, Any]
HOUSE = {"matchLabels": {"house": "a"}}


def cnp(spec: Obj | None = None, **changes: Any) -> Obj:
    """A valid policy: Admin, priority 5, subject namespaces house=a, no rules; ``changes`` set spec fields."""
    base: Obj = {"tier": "Admin", "priority": 5, "subject": {"namespaces": HOUSE}}
    base.update(spec or {})
    base.update(changes)
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "p"},
        "spec": base,
    }


def ingress(*rules: Obj) -> Obj:
    return cnp(ingress=list(rules))


def egress(*rules: Obj) -> Obj:
    return cnp(egress=list(rules))


def rule(peers: list[Any] | None = None, key: str = "from", action: str = "Accept", **extra: Any) -> Obj:
    out: Obj = {"name": "r", "action": action, key: peers if peers is not None else [{"namespaces": {}}]}
    out.update(extra)
    return out


def out_rule(peers: list[Any], **extra: Any) -> Obj:
    return rule(peers, key="to", **extra)


def tcp(number: int) -> Obj:
    return {"tcp": {"destinationPort": {"number": number}}}


def refused(obj: Obj) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        parse_cnp(obj)
    return e.value


# ------------------------------------------------------------------ what a valid policy becomes


def test_a_policy_becomes_typed_values() -> None:
    obj = cnp(
        tier="Baseline",
        priority=1000,
        subject={"pods": {"namespaceSelector": HOUSE, "podSelector": {"matchLabels": {"app": "db"}}}},
        ingress=[rule([{"pods": {"podSelector": {}}}], action="Deny", protocols=[tcp(80)])],
        egress=[
            out_rule(
                [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}, {"networks": ["10.1.2.3/8", "fd00::/8"]}],
                action="Pass",
                protocols=[{"udp": {"destinationPort": {"range": {"start": 53, "end": 60}}}}],
            ),
            {"action": "Accept", "to": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "web"}]},
        ],
    )
    everything = parse_selector({}, "")
    assert parse_cnp(obj) == ClusterNetworkPolicy(
        name="p",
        tier=Tier.BASELINE,
        priority=1000,
        subject=Pods(parse_selector(HOUSE, ""), parse_selector({"matchLabels": {"app": "db"}}, "")),
        ingress=(Rule(0, "r", Action.DENY, (Pods(everything, everything),), (PortRange(Protocol.TCP, 80, 80),)),),
        egress=(
            Rule(
                0,
                "r",
                Action.PASS,
                (
                    Nodes(parse_selector({"matchLabels": {"kubernetes.io/os": "linux"}}, "")),
                    Networks(("10.0.0.0/8", "fd00::/8")),
                ),
                (PortRange(Protocol.UDP, 53, 60),),
            ),
            Rule(1, "", Action.ACCEPT, (Namespaces(everything),), (NamedPort("web"),)),
        ),
    )


def test_subject_namespaces_and_rules_left_out() -> None:
    p = parse_cnp(cnp(ingress=None, egress=[]))
    assert p.subject == Namespaces(parse_selector(HOUSE, ""))
    assert p.ingress == () and p.egress == ()
    assert p.order == (5, "p") and p.key == "p"


def test_pods_without_namespace_selector_select_every_namespace() -> None:
    p = parse_cnp(cnp(subject={"pods": {"podSelector": {"matchLabels": {"app": "db"}}}}))
    assert isinstance(p.subject, Pods) and p.subject.namespace_selector.empty


def test_a_rule_without_protocols_matches_all_traffic() -> None:
    assert parse_cnp(ingress(rule())).ingress[0].protocols is None


def test_nulls_are_absent_fields() -> None:
    """The API server prunes a JSON null of a non-nullable field."""
    p = parse_cnp(egress(out_rule([{"namespaces": {}, "pods": None}], name=None, protocols=None)))
    assert p.egress[0].name == "" and p.egress[0].peers == (Namespaces(parse_selector({}, "")),)


def test_integral_floats_are_integers() -> None:
    assert parse_cnp(cnp(priority=7.0)).priority == 7


def test_networks_are_canonical_and_deduplicated() -> None:
    p = parse_cnp(egress(out_rule([{"networks": ["10.0.0.1/8", "10.0.0.0/8", "FD00::1/8", "0.0.0.0/0", "::/0"]}])))
    assert p.egress[0].peers == (Networks(("10.0.0.0/8", "fd00::/8", "0.0.0.0/0", "::/0")),)


def test_limits_are_inclusive() -> None:
    many = [out_rule([{"networks": [f"10.0.{i}.0/24" for i in range(25)]}] * 25, protocols=[tcp(80)] * 25)] * 25
    p = parse_cnp(cnp(priority=0, egress=many, ingress=[rule(name="n" * 100)] * 25))
    assert len(p.egress) == 25 and len(p.egress[0].peers) == 25 and len(p.egress[0].protocols or ()) == 25
    assert len(p.ingress) == 25 and p.ingress[24].index == 24


def test_a_port_range_needs_start_below_end() -> None:
    ok = parse_cnp(ingress(rule(protocols=[{"sctp": {"destinationPort": {"range": {"start": 1, "end": 65535}}}}])))
    assert ok.ingress[0].protocols == (PortRange(Protocol.SCTP, 1, 65535),)


def test_named_ports_go_with_pod_peers() -> None:
    """The CEL rule refuses only networks and nodes peers beside a named port, in the same rule."""
    p = parse_cnp(
        egress(
            out_rule([{"pods": {"podSelector": {}}}, {"namespaces": {}}], protocols=[{"destinationNamedPort": "dns"}]),
            out_rule([{"networks": ["10.0.0.0/8"]}], protocols=[tcp(53)]),
        )
    )
    assert p.egress[0].protocols == (NamedPort("dns"),)
    parse_cnp(ingress(rule(protocols=[{"destinationNamedPort": "web"}])))


def test_peers_and_protocols_of_no_known_field_fail_closed() -> None:
    """A newer CRD's peer or protocol kind is kept as the rule's unknown fields (it fails closed)."""
    p = parse_cnp(
        egress(
            out_rule([{"namespaces": {}}, {"everything": {}}], action="Deny"),
            out_rule([{"namespaces": {}}], protocols=[tcp(80), {"icmp": {"type": 8}}]),
        )
    )
    assert p.egress[0].unknown == ("spec.egress[0].to[1].everything",)
    assert p.egress[0].peers == (Namespaces(parse_selector({}, "")),)
    assert p.egress[1].unknown == ("spec.egress[1].protocols[1].icmp",)
    assert p.egress[1].protocols == (PortRange(Protocol.TCP, 80, 80),)


# ------------------------------------------------------------------ refused, with the field named


def _set(obj: Obj, path: str, value: Any) -> Obj:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = obj
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return obj


_DELETE = object()
LONG_CIDR = "1111:2222:3333:4444:5555:6666:123.123.123.123/128"  # a valid CIDR, over 43 characters

REFUSED: list[tuple[str, Obj, str]] = [
    # the object
    ("apiVersion", {**cnp(), "apiVersion": "policy.networking.k8s.io/v1alpha1"}, "apiVersion"),
    ("kind", {**cnp(), "kind": "AdminNetworkPolicy"}, "kind"),
    ("no name", _set(cnp(), "metadata", {}), "metadata.name"),
    ("no spec", _set(cnp(), "spec", _DELETE), "spec"),
    ("spec not an object", _set(cnp(), "spec", []), "spec"),
    ("unknown spec field", cnp(priorty=3), "spec.priorty"),
    # tier
    ("no tier", _set(cnp(), "spec.tier", _DELETE), "spec.tier"),
    ("tier case", cnp(tier="admin"), "spec.tier"),
    ("tier NetworkPolicy", cnp(tier="NetworkPolicy"), "spec.tier"),
    # priority: 0-1000, an integer
    ("no priority", _set(cnp(), "spec.priority", _DELETE), "spec.priority"),
    ("priority below 0", cnp(priority=-1), "spec.priority"),
    ("priority over 1000", cnp(priority=1001), "spec.priority"),
    ("priority text", cnp(priority="5"), "spec.priority"),
    ("priority bool", cnp(priority=True), "spec.priority"),
    ("priority fraction", cnp(priority=5.5), "spec.priority"),
    # subject: exactly one of namespaces, pods; pods needs podSelector
    ("no subject", _set(cnp(), "spec.subject", _DELETE), "spec.subject"),
    ("empty subject", cnp(subject={}), "spec.subject"),
    ("two subjects", cnp(subject={"namespaces": {}, "pods": {"podSelector": {}}}), "spec.subject"),
    (
        "subject pods without podSelector",
        cnp(subject={"pods": {"namespaceSelector": {}}}),
        "spec.subject.pods.podSelector",
    ),
    ("subject unknown field", cnp(subject={"nodes": {}}), "spec.subject.nodes"),
    (
        "subject selector operator",
        cnp(subject={"namespaces": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}),
        "spec.subject.namespaces.matchExpressions[0].operator",
    ),
    ("subject selector field", cnp(subject={"namespaces": {"matchLabel": {}}}), "spec.subject.namespaces"),
    # rules: at most 25 per direction
    ("ingress not a list", cnp(ingress={}), "spec.ingress"),
    ("26 ingress rules", ingress(*[rule()] * 26), "spec.ingress"),
    ("26 egress rules", egress(*[out_rule([{"namespaces": {}}])] * 26), "spec.egress"),
    ("rule not an object", ingress("x"), "spec.ingress[0]"),  # type: ignore[arg-type]
    ("unknown rule field", ingress(rule(ports=[])), "spec.ingress[0].ports"),
    ("egress rule with from", egress(rule()), "spec.egress[0].from"),
    # action
    ("no action", ingress(_set(rule(), "action", _DELETE)), "spec.ingress[0].action"),
    ("action Allow", ingress(rule(action="Allow")), "spec.ingress[0].action"),
    ("action case", ingress(rule(action="deny")), "spec.ingress[0].action"),
    # name: at most 100 characters
    ("name 101", ingress(rule(name="n" * 101)), "spec.ingress[0].name"),
    ("name not text", ingress(rule(name=5)), "spec.ingress[0].name"),
    # peers: 1-25, exactly one field each
    ("no from", ingress(_set(rule(), "from", _DELETE)), "spec.ingress[0].from"),
    ("empty from", ingress(rule([])), "spec.ingress[0].from"),
    ("26 peers", ingress(rule([{"namespaces": {}}] * 26)), "spec.ingress[0].from"),
    ("empty to", egress(out_rule([])), "spec.egress[0].to"),
    ("empty peer", ingress(rule([{}])), "spec.ingress[0].from[0]"),
    (
        "two fields in a peer",
        ingress(rule([{"namespaces": {}, "pods": {"podSelector": {}}}])),
        "spec.ingress[0].from[0]",
    ),
    ("known and unknown in a peer", egress(out_rule([{"namespaces": {}, "all": {}}])), "spec.egress[0].to[0]"),
    ("peer not an object", ingress(rule(["x"])), "spec.ingress[0].from[0]"),
    ("pods peer without podSelector", ingress(rule([{"pods": {}}])), "spec.ingress[0].from[0].pods.podSelector"),
    (
        "pods peer unknown field",
        ingress(rule([{"pods": {"podSelector": {}, "x": 1}}])),
        "spec.ingress[0].from[0].pods.x",
    ),
    ("networks ingress peer", ingress(rule([{"networks": ["10.0.0.0/8"]}])), "spec.ingress[0].from[0].networks"),
    ("nodes ingress peer", ingress(rule([{"nodes": {}}])), "spec.ingress[0].from[0].nodes"),
    ("domainNames", egress(out_rule([{"domainNames": ["kubernetes.io"]}])), "spec.egress[0].to[0].domainNames"),
    (
        "nodes selector",
        egress(out_rule([{"nodes": {"matchExpressions": [{"key": "a", "operator": "In"}]}}])),
        "spec.egress[0].to[0].nodes.matchExpressions[0].values",
    ),
    # networks: 1-25 CIDRs, each isCIDR and at most 43 characters, no duplicates
    ("empty networks", egress(out_rule([{"networks": []}])), "spec.egress[0].to[0].networks"),
    (
        "26 networks",
        egress(out_rule([{"networks": [f"10.{i}.0.0/16" for i in range(26)]}])),
        "spec.egress[0].to[0].networks",
    ),
    ("networks not a list", egress(out_rule([{"networks": "10.0.0.0/8"}])), "spec.egress[0].to[0].networks"),
    ("address without length", egress(out_rule([{"networks": ["10.0.0.1"]}])), "spec.egress[0].to[0].networks[0]"),
    ("length 33", egress(out_rule([{"networks": ["10.0.0.0/33"]}])), "spec.egress[0].to[0].networks[0]"),
    ("length 129", egress(out_rule([{"networks": ["fd00::/129"]}])), "spec.egress[0].to[0].networks[0]"),
    ("length with a zero", egress(out_rule([{"networks": ["10.0.0.0/08"]}])), "spec.egress[0].to[0].networks[0]"),
    ("netmask", egress(out_rule([{"networks": ["10.0.0.0/255.0.0.0"]}])), "spec.egress[0].to[0].networks[0]"),
    ("octet with a zero", egress(out_rule([{"networks": ["010.0.0.0/8"]}])), "spec.egress[0].to[0].networks[0]"),
    ("zone", egress(out_rule([{"networks": ["fe80::1%eth0/64"]}])), "spec.egress[0].to[0].networks[0]"),
    ("IPv4-mapped", egress(out_rule([{"networks": ["::ffff:10.0.0.0/104"]}])), "spec.egress[0].to[0].networks[0]"),
    ("over 43 characters", egress(out_rule([{"networks": [LONG_CIDR]}])), "spec.egress[0].to[0].networks[0]"),
    ("duplicate", egress(out_rule([{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}])), "spec.egress[0].to[0].networks[1]"),
    ("CIDR not text", egress(out_rule([{"networks": [10]}])), "spec.egress[0].to[0].networks[0]"),
    # protocols: 1-25 entries, exactly one field each
    ("empty protocols", ingress(rule(protocols=[])), "spec.ingress[0].protocols"),
    ("26 protocols", ingress(rule(protocols=[tcp(80)] * 26)), "spec.ingress[0].protocols"),
    ("empty protocol", ingress(rule(protocols=[{}])), "spec.ingress[0].protocols[0]"),
    ("two protocols in one", ingress(rule(protocols=[{**tcp(80), **{"udp": {}}}])), "spec.ingress[0].protocols[0]"),
    ("protocol not an object", ingress(rule(protocols=["TCP"])), "spec.ingress[0].protocols[0]"),
    ("tcp without a port", ingress(rule(protocols=[{"tcp": {}}])), "spec.ingress[0].protocols[0].tcp.destinationPort"),
    (
        "tcp unknown field",
        ingress(rule(protocols=[{"tcp": {"destinationPort": {"number": 80}, "sourcePort": {}}}])),
        "spec.ingress[0].protocols[0].tcp.sourcePort",
    ),
    (
        "empty destinationPort",
        ingress(rule(protocols=[{"udp": {"destinationPort": {}}}])),
        "spec.ingress[0].protocols[0].udp.destinationPort",
    ),
    (
        "number and range",
        ingress(rule(protocols=[{"tcp": {"destinationPort": {"number": 80, "range": {"start": 1, "end": 2}}}}])),
        "spec.ingress[0].protocols[0].tcp.destinationPort",
    ),
    ("port 0", ingress(rule(protocols=[tcp(0)])), "spec.ingress[0].protocols[0].tcp.destinationPort.number"),
    ("port 65536", ingress(rule(protocols=[tcp(65536)])), "spec.ingress[0].protocols[0].tcp.destinationPort.number"),
    ("port text", ingress(rule(protocols=[tcp("80")])), "spec.ingress[0].protocols[0].tcp.destinationPort.number"),  # type: ignore[arg-type]
    (
        "range without start",
        ingress(rule(protocols=[{"tcp": {"destinationPort": {"range": {"end": 90}}}}])),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range.start",
    ),
    (
        "range end 65536",
        ingress(rule(protocols=[{"tcp": {"destinationPort": {"range": {"start": 1, "end": 65536}}}}])),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range.end",
    ),
    (
        "range of one port",
        ingress(rule(protocols=[{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}])),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range",
    ),
    (
        "range reversed",
        egress(
            out_rule([{"namespaces": {}}], protocols=[{"sctp": {"destinationPort": {"range": {"start": 9, "end": 8}}}}])
        ),
        "spec.egress[0].protocols[0].sctp.destinationPort.range",
    ),
    (
        "empty named port",
        ingress(rule(protocols=[{"destinationNamedPort": ""}])),
        "spec.ingress[0].protocols[0].destinationNamedPort",
    ),
    # the CEL rule of egress rules: no named port beside networks or nodes peers
    (
        "named port with networks",
        egress(
            out_rule(
                [{"namespaces": {}}, {"networks": ["10.0.0.0/8"]}], protocols=[tcp(80), {"destinationNamedPort": "web"}]
            )
        ),
        "spec.egress[0]",
    ),
    (
        "named port with nodes",
        egress(out_rule([{"nodes": {}}], protocols=[{"destinationNamedPort": "web"}])),
        "spec.egress[0]",
    ),
]


@pytest.mark.parametrize(("obj", "field"), [(o, f) for _, o, f in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_refused_with_the_field_named(obj: Obj, field: str) -> None:
    error = refused(obj)
    assert error.field == field, str(error)
    assert error.message and str(error).startswith(f"{field}: ")


def test_domain_names_say_not_supported() -> None:
    assert "not supported" in refused(egress(out_rule([{"domainNames": ["*.kubernetes.io"]}]))).message


def test_the_first_problem_is_named() -> None:
    """Problems are found in document order: the first rule's, before a later one's."""
    error = refused(ingress(rule(action="Allow"), rule([])))
    assert error.field == "spec.ingress[0].action"


@pytest.mark.parametrize(
    "value",
    [None, "", [], 5, {"spec": "x"}],
)
def test_never_crashes_on_shapes(value: Any) -> None:
    """Whatever the JSON, a PolicyError (never another exception)."""
    with pytest.raises(PolicyError):
        parse_cnp(value)


# ------------------------------------------------------------------ any tree: a PolicyError or a policy

RICH = cnp(
    subject={
        "pods": {
            "namespaceSelector": HOUSE,
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]},
        }
    },
    ingress=[
        rule(
            [{"namespaces": {}}, {"pods": {"podSelector": {}}}],
            action="Pass",
            protocols=[tcp(80), {"destinationNamedPort": "web"}],
        )
    ],
    egress=[
        out_rule(
            [{"nodes": {}}, {"networks": ["10.0.0.0/8", "::/0"]}],
            action="Deny",
            protocols=[{"udp": {"destinationPort": {"range": {"start": 1, "end": 9}}}}],
        )
    ],
)
FIELD_NAMES = (
    "tier",
    "priority",
    "subject",
    "namespaces",
    "pods",
    "nodes",
    "networks",
    "destinationPort",
    "range",
    "x",
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_paths(RICH)[1:]), json_values)
def test_any_change_is_read_or_refused_with_a_policy_error(path: tuple[Any, ...], value: Any) -> None:
    obj = copy.deepcopy(RICH)
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    try:
        parse_cnp(obj)
    except PolicyError as e:
        assert e.field and isinstance(e.message, str)
