"""The model <-> protobuf codec: lossless round trips, and clear errors for bad input."""

from __future__ import annotations

import random

import pytest
from sync_helpers import random_model

from stockade.codec import (
    Limits,
    ValidationError,
    delta_from_proto,
    delta_to_proto,
    model_from_proto,
    model_to_proto,
)
from stockade.model import Chain, Direction, NodeModel, PortMatch, Protocol, Rule, apply, diff
from stockade.v1 import model_pb2 as pb


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_models_and_deltas(seed: int) -> None:
    rng = random.Random(seed)
    a, b = random_model("n1", rng), random_model("n1", rng)
    wire_a = pb.NodeModel.FromString(model_to_proto(a).SerializeToString())
    assert model_from_proto(wire_a) == a
    d = diff(a, b)
    wire_d = pb.NodeDelta.FromString(delta_to_proto(d).SerializeToString())
    back = delta_from_proto(wire_d)
    assert back == d
    assert apply(a, back) == b


def test_ports_none_versus_empty_and_ranges_survive() -> None:
    m = NodeModel("n1", sets={"ag_01": frozenset({"10.0.0.0/8", "fd00::/64"})})
    chain = Chain.of(
        Direction.INGRESS,
        [
            Rule(None, None),
            Rule("ag_01", ()),
            Rule("ag_01", (PortMatch(Protocol.TCP, 80, 90), PortMatch(Protocol.SCTP), PortMatch(Protocol.UDP, 53))),
        ],
    )
    m.chains[chain.id] = chain
    m.ingress["10.1.0.5"] = chain.id
    m.ingress["fd00::5"] = chain.id
    assert model_from_proto(model_to_proto(m)) == m


def _model_msg() -> pb.NodeModel:
    m = NodeModel("n1", sets={"ag_01": frozenset({"10.0.0.5/32"})})
    chain = Chain.of(Direction.EGRESS, [Rule("ag_01", (PortMatch(Protocol.TCP, 443),))])
    m.chains[chain.id] = chain
    m.egress["10.1.0.5"] = chain.id
    return model_to_proto(m)


def _bad(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    msg = _model_msg()
    mutate(msg)
    with pytest.raises(ValidationError, match=match):
        model_from_proto(msg)


def test_bad_names_ids_and_addresses_are_refused() -> None:
    _bad(lambda m: setattr(m, "node", "Node_1"), "not a valid node name")
    _bad(lambda m: setattr(m, "node", "a" * 300), "not a valid node name")
    _bad(lambda m: setattr(m.sets[0], "id", "set1"), r"model.sets\[0\].id: 'set1' is not an address set id")
    _bad(lambda m: m.sets[0].cidrs.append("10.0.0.300/32"), "not a valid CIDR")
    _bad(lambda m: m.sets[0].cidrs.append("10.0.0.5"), "not a CIDR")
    _bad(lambda m: m.sets[0].cidrs.append("10.0.0.5/8"), "host bits set")
    _bad(lambda m: setattr(m.chains[0], "id", "fw_abc"), "not a chain id")
    _bad(lambda m: setattr(m.chains[0], "direction", pb.DIRECTION_INGRESS), "against its id")
    _bad(lambda m: setattr(m.chains[0].rules[0].ports[0], "port", 70000), "is not a port")
    _bad(lambda m: setattr(m.chains[0].rules[0].ports[0], "end_port", 10), "is not between port 443")
    _bad(lambda m: setattr(m.chains[0].rules[0].ports[0], "protocol", 9), "unknown protocol")
    _bad(lambda m: setattr(m.chains[0].rules[0], "all_ports", True), "all_ports together with")
    _bad(lambda m: setattr(m.chains[0].rules[0], "peer", "ag_zz"), "not an address set id")
    _bad(lambda m: m.egress.__setitem__("10.1.0.256", m.chains[0].id), "not an IP address")
    _bad(lambda m: m.egress.__setitem__("10.1.0.6", "out_ffff"), "missing chain out_ffff")
    _bad(lambda m: setattr(m.chains[0].rules[0], "peer", "ag_02"), "uses missing set ag_02")
    _bad(lambda m: m.sets.append(pb.AddressSet(id="ag_01")), "appears twice")


def test_counts_are_bounded() -> None:
    msg = _model_msg()
    msg.sets[0].cidrs.extend(f"10.2.0.{i}/32" for i in range(10))
    with pytest.raises(ValidationError, match="more than the limit of 5"):
        model_from_proto(msg, Limits(max_set_elements=5))
    with pytest.raises(ValidationError, match="rules: 1 entries, more than the limit of 0"):
        model_from_proto(msg, Limits(max_rules_per_chain=0))


def test_delta_validation() -> None:
    d = pb.NodeDelta(node="n1", ingress_removed=["not-an-ip"])
    with pytest.raises(ValidationError, match=r"delta\.ingress_removed"):
        delta_from_proto(d)
    with pytest.raises(ValidationError, match=r"delta\.removed_sets"):
        delta_from_proto(pb.NodeDelta(node="n1", removed_sets=["in_00"]))


def test_one_limits_contract() -> None:
    """The codec's limits are the contract's, and one accepted policy always fits a node."""
    from stockade.codec import DEFAULT_LIMITS
    from stockade.model.limits import NODE_LIMITS, POLICY_LIMITS, NodeLimits

    assert Limits is NodeLimits and DEFAULT_LIMITS is NODE_LIMITS
    assert POLICY_LIMITS.ports_per_rule == NODE_LIMITS.max_ports_per_rule
    assert POLICY_LIMITS.chain_rules_per_policy < NODE_LIMITS.max_rules_per_chain
    assert POLICY_LIMITS.cidrs_per_ipblock <= POLICY_LIMITS.cidrs_per_policy < NODE_LIMITS.max_set_elements
    assert NODE_LIMITS.max_chains >= 2 * NODE_LIMITS.max_dispatch  # a chain per dispatch entry at most


def test_full_width_ids_pass_the_codec() -> None:
    sid, cid = "ag_" + "ab" * 16, "in_" + "cd" * 16
    model = NodeModel(
        "n1",
        sets={sid: frozenset({"10.0.0.1/32"})},
        chains={cid: Chain(Direction.INGRESS, (Rule(sid, None),), id=cid)},
        ingress={"10.0.0.2": cid},
    )
    assert model_from_proto(model_to_proto(model)) == model
