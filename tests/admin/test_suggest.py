"""`suggest`'s worked cases: the Sock Shop's four mistakes, each kind of change (mend, a rule in
the isolating policy, a new policy), peers across namespaces and outside the cluster, both
sides blocked, what no NetworkPolicy can open, and a mend refused because it would close
connections. The property tests (tests/engine/test_suggest_property.py) judge random ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stockade.brain.admin.dryrun import compile_objects
from stockade.brain.admin.suggest import Suggestion, admitted_by, suggest
from stockade.brain.admin.suggest_judge import Flow, flow
from stockade.brain.admin.suggest_mend import distance
from stockade.cli.flows_file import FlowsFileError, parse_flows
from stockade.cli.offline import cluster_objects
from stockade.lab.demo import SHOP_FLOWS

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "sock-shop"
CNP_API = "policy.networking.k8s.io/v1alpha2"
SHOP_MISTAKES = [
    Flow("sock-shop/front-end", "sock-shop/carts", 80),
    Flow("sock-shop/orders", "sock-shop/carts", 80),
    Flow("sock-shop/carts", "sock-shop/carts-db", 27017),
    Flow("sock-shop/front-end", "sock-shop/session-db", 6379),
]


def _pod(ns: str, name: str, ip: str, labels: dict[str, str] | None = None, port: int = 80) -> Obj:
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels if labels is not None else {"app": name}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": ip},
    }


def _np(ns: str, name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def _ns(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def _deny_ingress(ns: str, name: str = "deny", selector: Obj | None = None) -> Obj:
    return _np(ns, name, {"podSelector": selector or {}, "policyTypes": ["Ingress"]})


def _sole(got: Suggestion) -> Obj:
    assert len(got.changes) == 1, [c.as_json() for c in got.changes]
    return got.changes[0].as_json()


def _shop() -> list[Obj]:
    return cluster_objects([str(SHOP / "complete-demo.yaml"), str(SHOP / "policies")])


def test_the_sock_shop_gets_two_mends_and_a_policy_for_session_db_admitting_exactly_its_four_blocked_flows() -> None:
    flows = [Flow("sock-shop/" + s, "sock-shop/" + d, p) for s, d, p in SHOP_FLOWS if s != "external"]
    got = suggest(_shop(), flows)
    assert sorted(got.admitted) == sorted(SHOP_MISTAKES)
    assert len(got.already_allowed) == len(flows) - 4
    assert got.also_opens == [] and got.closes == [] and got.not_fixable == [] and got.not_admitted == []
    changes = {c.key: c for c in got.changes}
    assert sorted(changes) == ["sock-shop/cart-access", "sock-shop/carts-db-access", "sock-shop/session-db-access"]
    cart = changes["sock-shop/cart-access"]
    assert cart.action == "mend" and cart.manifest["spec"]["podSelector"] == {"matchLabels": {"name": "carts"}}
    assert "no pod has 'cart'" in cart.why[0]
    db = changes["sock-shop/carts-db-access"]
    assert db.action == "mend"
    assert db.manifest["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"name": "carts"}}}]
    new = changes["sock-shop/session-db-access"].as_json()
    assert new["action"] == "create"
    assert new["manifest"]["spec"] == {
        "podSelector": {"matchLabels": {"name": "session-db"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"name": "front-end"}}}],
                "ports": [{"protocol": "TCP", "port": 6379}],
            }
        ],
    }
    # Ready for kubectl apply: nothing the server sets.
    assert set(new["manifest"]["metadata"]) == {"name", "namespace"}


def test_a_rule_goes_into_the_isolating_policy_when_it_selects_only_the_destination() -> None:
    objs = [
        _ns("x"),
        _pod("x", "web", "10.1.0.2"),
        _pod("x", "db", "10.1.0.3", port=5432),
        _np(
            "x",
            "db-in",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "admin"}}}]}],
            },
        ),
    ]
    got = suggest(objs, [Flow("x/web", "x/db", 5432)])
    c = _sole(got)
    assert c["action"] == "add-rules" and c["policy"] == "x/db-in"
    assert c["manifest"]["spec"]["ingress"][1] == {
        "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert got.admitted == [Flow("x/web", "x/db", 5432)] and got.also_opens == []


def test_a_peer_in_another_namespace_is_named_by_the_namespace_name_label() -> None:
    objs = [_ns("x"), _ns("y"), _pod("x", "db", "10.1.0.3"), _pod("y", "web", "10.1.0.4"), _deny_ingress("x")]
    got = suggest(objs, [Flow("y/web", "x/db", 80)])
    rule = _sole(got)["manifest"]["spec"]["ingress"][0]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
            "podSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    assert got.admitted == [Flow("y/web", "x/db", 80)]


@pytest.mark.parametrize(("src", "cidr"), [("203.0.113.9", "203.0.113.9/32"), ("2001:db8::9", "2001:db8::9/128")])
def test_a_source_outside_the_cluster_is_an_ipblock_of_just_it(src: str, cidr: str) -> None:
    db = _pod("x", "db", "10.1.0.3")
    db["status"]["podIPs"] = [{"ip": "10.1.0.3"}, {"ip": "fd00:1::3"}]
    got = suggest([_ns("x"), db, _deny_ingress("x")], [Flow(src, "x/db", 80)])
    assert _sole(got)["manifest"]["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": cidr}}]
    assert got.admitted == [Flow(src, "x/db", 80)]


def test_both_sides_blocked_get_a_rule_each_egress_and_ingress() -> None:
    egress = _np("x", "web-out", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]})
    objs = [
        _ns("x"),
        _pod("x", "web", "10.1.0.2"),
        _pod("x", "db", "10.1.0.3"),
        egress,
        _deny_ingress("x", "db-in", {"matchLabels": {"app": "db"}}),
    ]
    got = suggest(objs, [Flow("x/web", "x/db", 80)])
    by = {c.key: c.manifest["spec"] for c in got.changes}
    assert by["x/web-out"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"protocol": "TCP", "port": 80}]}
    ]
    assert by["x/db-in"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"protocol": "TCP", "port": 80}]}
    ]
    assert got.admitted == [Flow("x/web", "x/db", 80)]


def test_flows_to_one_pod_on_two_ports_from_the_same_peers_share_one_rule() -> None:
    objs = [
        _ns("x"),
        _pod("x", "web", "10.1.0.2"),
        _pod("x", "db", "10.1.0.3"),
        _deny_ingress("x", "db-in", {"matchLabels": {"app": "db"}}),
    ]
    got = suggest(objs, [Flow("x/web", "x/db", 80), Flow("x/web", "x/db", 443)])
    assert _sole(got)["manifest"]["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
            "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}],
        }
    ]


def test_a_broad_isolating_policy_gets_no_rule_a_new_policy_for_the_destination_does() -> None:
    """A rule in a policy selecting every pod would open the port to all of them: the destination,
    isolated already, gets a policy of its own instead (it adds no isolation)."""
    objs = [
        _ns("x"),
        _pod("x", "web", "10.1.0.2"),
        _pod("x", "db", "10.1.0.3"),
        _pod("x", "cache", "10.1.0.4"),
        _deny_ingress("x"),
    ]
    got = suggest(objs, [Flow("x/web", "x/db", 80)])
    c = _sole(got)
    assert c["action"] == "create" and c["policy"] == "x/db-access"
    assert c["manifest"]["spec"]["podSelector"] == {"matchLabels": {"app": "db"}}
    assert got.also_opens == []  # not x/web -> x/cache


def test_replicas_that_cannot_be_told_apart_are_all_opened_and_the_note_says_why() -> None:
    objs = [
        _ns("x"),
        _pod("x", "web-1", "10.1.0.2", {"app": "web"}),
        _pod("x", "web-2", "10.1.0.5", {"app": "web"}),
        _pod("x", "db", "10.1.0.3"),
        _deny_ingress("x", "db-in", {"matchLabels": {"app": "db"}}),
    ]
    got = suggest(objs, [Flow("x/web-1", "x/db", 80)])
    c = got.changes[0]
    assert any("also selects x/web-2" in n for n in c.notes), c.notes
    assert got.also_opens == [("x/web-2", "x/db", 80, "TCP", "ipv4")]


def test_a_mend_that_would_close_connections_is_not_taken() -> None:
    """``app: dbx`` -> ``db`` would isolate db-2 too (not isolated today, reached by web): the rule
    goes into the policy that isolates db-1 instead."""
    objs = [
        _ns("x"),
        _pod("x", "web", "10.1.0.2"),
        _pod("x", "db-1", "10.1.0.3", {"app": "db", "role": "primary"}),
        _pod("x", "db-2", "10.1.0.4", {"app": "db", "role": "replica"}),
        _np(
            "x",
            "typo",
            {
                "podSelector": {"matchLabels": {"app": "dbx"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        ),
        _deny_ingress("x", "primary", {"matchLabels": {"role": "primary"}}),
    ]
    got = suggest(objs, [Flow("x/web", "x/db-1", 80)])
    c = _sole(got)
    assert c["action"] == "add-rules" and c["policy"] == "x/primary"
    assert got.closes == [] and got.admitted == [Flow("x/web", "x/db-1", 80)]


def test_an_admin_tier_deny_and_an_unknown_pod_are_not_fixable_and_say_why() -> None:
    cnp = {
        "apiVersion": CNP_API,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "lock"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
            "ingress": [{"name": "no", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }
    objs = [_ns("x"), _pod("x", "web", "10.1.0.2"), _pod("x", "db", "10.1.0.3"), cnp]
    got = suggest(objs, [Flow("x/web", "x/db", 80), Flow("x/nobody", "x/db", 80)])
    reasons = dict(got.not_fixable)
    assert "Admin-tier ClusterNetworkPolicy" in reasons[Flow("x/web", "x/db", 80)]
    assert reasons[Flow("x/nobody", "x/db", 80)] == "pod x/nobody not found"
    assert got.changes == []


def test_a_flow_already_allowed_changes_nothing() -> None:
    objs = [_ns("x"), _pod("x", "web", "10.1.0.2"), _pod("x", "db", "10.1.0.3")]
    got = suggest(objs, [Flow("x/web", "x/db", 80)])
    assert got.already_allowed == [Flow("x/web", "x/db", 80)] and got.changes == []
    assert admitted_by(compile_objects(objs), [Flow("x/web", "x/db", 80)]) == [Flow("x/web", "x/db", 80)]


def test_mends_look_for_close_values_only() -> None:
    assert distance("cart", "carts") == 1 and distance("front-end", "frontend") == 1
    assert distance("", "abc") == 3 and distance("kitten", "sitting") == 3


def test_flows_are_checked_and_written_two_ways() -> None:
    got = parse_flows(
        [
            "front-end -> carts:80",
            "203.0.113.9 → shop/web:8079/udp",
            "a -> [fd00::9]:443",
            {"from": "x/a", "to": "y/b", "port": 53, "protocol": "UDP"},
        ],
        "f.yaml",
        namespace="shop",
    )
    assert got == [
        Flow("shop/front-end", "shop/carts", 80),
        Flow("203.0.113.9", "shop/web", 8079, "UDP"),
        Flow("shop/a", "fd00::9", 443),
        Flow("x/a", "y/b", 53, "UDP"),
    ]
    for bad, said in (
        (["a -> b"], "flows[0]: 'a -> b': write FROM -> TO:PORT"),
        (["a -> b:70000"], "port 70000"),
        ([{"from": "a", "to": "b", "port": 80, "proto": "TCP"}], "unknown field 'proto'"),
        (["a -> b:80", {"from": "a", "to": "b", "port": "80"}], "flows[1]: 'port' must be a number"),
        ([], "expected a list of flows"),
        (["a -> b:80/ICMP"], "protocol 'ICMP'"),
    ):
        with pytest.raises(FlowsFileError) as e:
            parse_flows(bad, "f.yaml")
        assert str(e.value).startswith("f.yaml") and said in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="port 0"):
        flow("a/b", "c/d", 0)
