"""The limits contract in the engine: a policy over a per-policy limit is rejected alone with
the limit named; policies that together overflow a pod's chain leave out only the overflowing
one on that node (reported); ids never merge two contents, even with a forced short digest."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from stockade.brain.engine import Engine
from stockade.brain.engine import policy as policy_mod
from stockade.codec import model_from_proto, model_to_proto
from stockade.model import Direction
from stockade.model import rules as rules_mod
from stockade.model.limits import NODE_LIMITS, POLICY_LIMITS, NodeLimits


def ns(name: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": {"name": name}}}


def pod(name: str, ip: str, node: str, app: str, namespace: str = "a") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIP": ip},
    }


def policy(name: str, ingress: list[dict[str, Any]], app: str = "web", namespace: str = "a") -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def blocks(first: int, n: int) -> list[dict[str, Any]]:
    """``n`` distinct /32 ipBlock peers: each one rule of a chain."""
    return [
        {"ipBlock": {"cidr": f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"}} for i in range(first, first + n)
    ]


CANARY = policy("canary", [{"ports": [{"port": 7777}]}])


def engine(limits: NodeLimits = NODE_LIMITS) -> Engine:
    eng = Engine(limits=limits)
    eng.load(
        namespaces=[ns("a")],
        pods=[pod("web-1", "10.1.0.1", "n1", "web"), pod("web-2", "10.1.0.2", "n2", "web")],
        policies=[CANARY],
        nodes=[{"metadata": {"name": "n1"}}, {"metadata": {"name": "n2"}}],
    )
    return eng


def ports_of(eng: Engine, node: str) -> set[int]:
    m = eng.model(node)
    return {p.port for c in m.chains.values() for r in c.rules for p in r.ports or () if p.port}


def decodes(eng: Engine, node: str, limits: NodeLimits = NODE_LIMITS) -> None:
    """What the brain compiled is what every agent's codec accepts."""
    assert model_from_proto(model_to_proto(eng.model(node)), limits) == eng.model(node)


# ---------------------------------------------------------------- per-policy limits

OVER = [
    (
        "ports",
        [{"ports": [{"port": 1 + i} for i in range(POLICY_LIMITS.ports_per_rule + 1)]}],
        "spec.ingress[0].ports: 1001 ports, over the limit of 1000 per rule",
    ),
    (
        "rules",
        [{"ports": [{"port": 80}]}] * (POLICY_LIMITS.rules_per_direction + 1),
        "spec.ingress: 1001 rules, over the limit of 1000 per direction",
    ),
    (
        "peers",
        [{"from": blocks(0, POLICY_LIMITS.peers_per_rule + 1)}],
        "spec.ingress[0].from: 1001 peers, over the limit of 1000 per rule",
    ),
    (
        "chain-rules",
        [{"from": blocks(i * 1000, 1000)} for i in range(6)],
        "spec.ingress: 6000 peers over its rules, over the limit of 5000 per direction of a policy",
    ),
    (
        "excepts",
        [
            {
                "from": [
                    {
                        "ipBlock": {
                            "cidr": "10.0.0.0/8",
                            "except": [
                                f"10.{i >> 8}.{i & 255}.0/24" for i in range(POLICY_LIMITS.excepts_per_ipblock + 1)
                            ],
                        }
                    }
                ]
            }
        ],
        "spec.ingress[0].from[0].ipBlock.except: 1001 excepts, over the limit of 1000 per ipBlock",
    ),
    (
        "cidrs-per-ipblock",
        # 999 single addresses spread over the IPv6 space: each gap costs ~112 CIDRs
        [
            {
                "from": [
                    {
                        "ipBlock": {
                            "cidr": "::/0",
                            "except": [f"{i:x}::1/128" for i in range(1, 1000)],
                        }
                    }
                ]
            }
        ],
        "CIDRs after except, over the limit of 65536 per ipBlock",
    ),
    (
        "selector",
        [{"from": [{"podSelector": {"matchLabels": {f"k{i}": "v" for i in range(POLICY_LIMITS.selector_terms + 1)}}}]}],
        "spec.ingress[0].from[0].podSelector: 257 selector terms, over the limit of 256 per selector",
    ),
]


@pytest.mark.parametrize(("what", "ingress", "message"), OVER, ids=[o[0] for o in OVER])
def test_policy_over_a_limit_is_rejected_alone_with_the_limit_named(
    what: str, ingress: list[dict[str, Any]], message: str
) -> None:
    eng = engine()
    eng.upsert_policy(policy("big", ingress))
    [rej] = eng.rejections()
    assert rej.object == "NetworkPolicy a/big"
    assert message in str(rej), str(rej)
    assert eng.policy("a", "big") is None
    for node in ("n1", "n2"):  # the canary is still enforced everywhere, and the models decode
        assert ports_of(eng, node) == {7777}
        decodes(eng, node)


def test_cidrs_per_policy_budget() -> None:
    # 20 ipBlocks, each a /16 minus one address in every 64: ~6 CIDRs per gap, ~6,000 per
    # block (under the per-ipBlock limit), ~120,000 together (over the per-policy one)
    peers = [
        {
            "ipBlock": {
                "cidr": f"10.{k}.0.0/16",
                "except": [f"10.{k}.{(i * 64) >> 8}.{((i * 64) & 255) + 1}/32" for i in range(1000)],
            }
        }
        for k in range(20)
    ]
    eng = engine()
    eng.upsert_policy(policy("wide", [{"from": peers}]))
    [rej] = eng.rejections()
    assert "CIDRs from its ipBlocks" in rej.message and f"limit of {POLICY_LIMITS.cidrs_per_policy} per policy" in (
        rej.message
    )


def test_policy_at_every_limit_is_accepted_and_fits_a_node() -> None:
    eng = engine()
    eng.upsert_policy(
        policy(
            "at-limit",
            [{"from": blocks(0, 1), "ports": [{"port": 1 + p} for p in range(1000)]}]
            + [{"from": blocks(1 + i * 1000, 1000), "ports": [{"port": 80}]} for i in range(4)]
            + [{"from": blocks(4001, 999)}],
        )
    )
    assert eng.rejections() == []
    assert eng.not_realized() == []
    chain = next(c for c in eng.model("n1").chains.values() if len(c.rules) > 1)
    assert len(chain.rules) == 5001  # 5,000 peers + the canary
    decodes(eng, "n1")


# ---------------------------------------------------------------- the node bound


def test_policies_overflowing_a_chain_leave_out_only_the_last_one_on_that_node() -> None:
    limits = NodeLimits(max_rules_per_chain=10)
    eng = engine(limits)
    # All select app=web (a pod on each node): canary 1 + 4 + 4 = 9 rules fit, p3 would make 13.
    for i, name in enumerate(("p1", "p2", "p3")):
        eng.upsert_policy(policy(name, [{"from": blocks(i * 10, 4)}]))
    assert eng.rejections() == []
    left = eng.not_realized()
    assert [(nr.policy, nr.node, nr.limit) for nr in left] == [
        ("a/p3", "n1", "rules_per_chain"),
        ("a/p3", "n2", "rules_per_chain"),
    ]
    assert "over the limit of 10 rules per chain" in str(left[0])
    assert str(left[0]).startswith("NetworkPolicy a/p3: not realized on node n1: ")
    for node in ("n1", "n2"):
        m = eng.model(node)
        [chain] = m.chains.values()
        assert len(chain.rules) == 9  # canary, p1, p2: enforced; p3 left out
        assert ports_of(eng, node) == {7777}
        assert m.ingress  # the pod stays isolated: the gap fails closed
        decodes(eng, node, limits)
    # Making room brings it back, and the report goes away.
    eng.delete_policy("a", "p1")
    assert eng.not_realized() == []
    assert all(len(c.rules) == 9 for c in eng.model("n1").chains.values())


def test_node_bound_is_per_node() -> None:
    limits = NodeLimits(max_rules_per_chain=10)
    eng = engine(limits)
    eng.upsert_pod(pod("db-1", "10.1.0.9", "n2", "db"))
    eng.upsert_policy(policy("db-big", [{"from": blocks(0, 8)}], app="db"))
    eng.upsert_policy(policy("db-more", [{"from": blocks(100, 8)}], app="db"))
    eng.upsert_policy(policy("web-more", [{"from": blocks(200, 8)}]))
    assert [(nr.policy, nr.node) for nr in eng.not_realized()] == [("a/db-more", "n2")]
    assert len(eng.model("n1").chains) == 1  # node 1: canary + web-more, untouched
    for node in ("n1", "n2"):
        decodes(eng, node, limits)
    eng.delete_pod("a", "db-1")
    assert eng.not_realized() == []


# ---------------------------------------------------------------- ids that cannot collide


def test_ids_are_full_width() -> None:
    eng = engine()
    eng.upsert_policy(policy("p", [{"from": blocks(0, 1)}]))
    m = eng.model("n1")
    assert all(len(sid) == len("ag_") + 32 for sid in m.sets)
    assert all(len(cid.split("_", 1)[1]) == 32 for cid in m.chains)


def _colliding_selectors() -> tuple[str, str]:
    """Two label values whose pod peers share a set id under a 1-byte digest."""
    seen: dict[str, str] = {}
    for i in itertools.count():
        value = f"v{i}"
        sid = policy_mod.PodPeer("a", policy_mod.parse_selector({"matchLabels": {"app": value}}, "x"), None).sid
        if sid in seen:
            return seen[sid], value
        seen[sid] = value
    raise AssertionError("unreachable")


def test_forced_set_id_collision_is_refused_not_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_mod, "SET_ID_BYTES", 1)
    victim, attacker = _colliding_selectors()
    eng = engine()
    eng.upsert_pod(pod("friend", "10.1.0.50", "n1", victim))
    eng.upsert_pod(pod("intruder", "10.1.0.66", "n2", attacker))
    eng.upsert_policy(policy("victim", [{"from": [{"podSelector": {"matchLabels": {"app": victim}}}]}]))
    before = eng.model("n1")
    eng.upsert_policy(policy("attacker", [{"from": [{"podSelector": {"matchLabels": {"app": attacker}}}]}]))
    [rej] = eng.rejections()
    assert rej.object == "NetworkPolicy a/attacker"
    assert "already names a different peer's set; refused, not merged" in rej.message
    assert rej.field == "spec.ingress[0] peer 0"
    after = eng.model("n1")
    assert after == before  # the victim's set still holds only its own pods
    assert all("10.1.0.66/32" not in elems for elems in after.sets.values())


def test_forced_chain_id_collision_fails_closed_and_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_mod, "CHAIN_ID_BYTES", 1)
    eng = Engine()
    eng.load(namespaces=[ns("a")], nodes=[{"metadata": {"name": "n1"}}])
    # Pods on one node, each isolated by its own policy allowing its own port: chains differ;
    # with 256 possible ids two of them collide after a few dozen.
    collided = None
    for i in range(200):
        eng.upsert_pod(pod(f"p{i}", f"10.2.{i >> 8}.{i & 255}", "n1", f"app{i}"))
        eng.upsert_policy(policy(f"pol{i}", [{"ports": [{"port": 1000 + i}]}], app=f"app{i}"))
        if eng.not_realized():
            collided = i
            break
    assert collided is not None, "no collision within 200 chains of a 1-byte id"
    [nr] = eng.not_realized()
    assert (nr.policy, nr.node, nr.limit) == (f"a/pol{collided}", "n1", "id_collision")
    m = eng.model("n1")
    ip = f"10.2.{collided >> 8}.{collided & 255}"
    chain = m.chains[m.ingress[ip]]
    assert chain.rules == () and chain.direction is Direction.INGRESS  # denied, not merged
    other_port = {p.port for c in m.chains.values() for r in c.rules for p in r.ports or ()}
    assert 1000 + collided not in other_port  # its rule is nowhere: it took no one's chain
    assert not m.check()


def test_explain_names_a_policy_left_out_on_the_node() -> None:
    """The node denies what an unrealized policy would allow; explain says why, not "no rule"."""
    from stockade.brain.admin.explain import explain

    eng = engine(NodeLimits(max_rules_per_chain=10))
    for i, name in enumerate(("p1", "p2", "p3")):
        eng.upsert_policy(policy(name, [{"from": blocks(i * 10, 4)}]))
    peer_of_p3 = blocks(20, 1)[0]["ipBlock"]["cidr"].split("/")[0]
    out = explain(eng, peer_of_p3, "a/web-1", 80)
    assert not out.allowed
    [side] = out.sides
    assert side.not_realized and "a/p3" in side.not_realized[0]
    assert any("not realized on node n1" in r and "so it is blocked" in r for r in out.reasons), out.reasons
    peer_of_p1 = blocks(0, 1)[0]["ipBlock"]["cidr"].split("/")[0]
    assert explain(eng, peer_of_p1, "a/web-1", 80).allowed  # p1 is realized: no change there
