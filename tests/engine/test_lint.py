"""Lint: selectors that match no pods are reported, with a "did you mean" for a close label value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockade.brain.admin.reachability import compile_manifests
from stockade.brain.engine import Engine

from .harness import model_allows, models_of
from .kube import namespace, pod, policy

Obj = dict[str, Any]

# A slice of the Sock Shop: its policies say `name: cart` where the pods are labelled `name: carts`.
NSS = [namespace("sock-shop", {"name": "sock-shop"})]
PODS = [
    pod("sock-shop", "front-end", {"name": "front-end"}, "10.4.0.1", "node-1"),
    pod("sock-shop", "orders", {"name": "orders"}, "10.4.0.2", "node-2"),
    pod("sock-shop", "carts", {"name": "carts"}, "10.4.0.3", "node-1"),
    pod("sock-shop", "carts-db", {"name": "carts-db"}, "10.4.0.4", "node-2"),
]
FRONT, ORDERS, CARTS, CARTS_DB = PODS


def by_name(value: str) -> Obj:
    return {"podSelector": {"matchLabels": {"name": value}}}


CART_ACCESS = policy(
    "sock-shop",
    "cart-access",
    {
        "podSelector": {"matchLabels": {"name": "cart"}},
        "ingress": [{"from": [by_name("front-end"), by_name("orders")], "ports": [{"protocol": "TCP", "port": 80}]}],
    },
)
CARTS_DB_ACCESS = policy(
    "sock-shop",
    "carts-db-access",
    {
        "podSelector": {"matchLabels": {"name": "carts-db"}},
        "ingress": [{"from": [by_name("cart")], "ports": [{"protocol": "TCP", "port": 27017}]}],
    },
)


def engine(policies: list[Obj], pods: list[Obj] = PODS) -> Engine:
    eng = Engine()
    eng.load(namespaces=NSS, pods=pods, policies=policies, nodes=[])
    return eng


def test_pod_selector_selecting_no_pods_with_did_you_mean() -> None:
    warnings = engine([CART_ACCESS]).lint()
    mine = [w for w in warnings if w.policy == "sock-shop/cart-access" and w.field == "spec.podSelector"]
    assert len(mine) == 1, warnings
    text = mine[0].message.lower()
    assert "did you mean" in text and "carts" in text, mine[0]


def test_peer_matching_no_pods_with_did_you_mean() -> None:
    eng = engine([CARTS_DB_ACCESS])
    warnings = eng.lint()
    mine = [w for w in warnings if w.policy == "sock-shop/carts-db-access"]
    assert [w.field for w in mine] == ["spec.ingress[0].from[0].podSelector"], warnings
    assert "did you mean" in mine[0].message.lower() and "carts" in mine[0].message
    # The typo has a real effect: carts cannot reach its database.
    models = models_of(eng)
    assert not model_allows(models, CARTS, CARTS_DB, "TCP", 27017)


def test_no_warning_for_policies_that_match() -> None:
    fixed = policy(
        "sock-shop", "carts-db-access", {**CARTS_DB_ACCESS["spec"], "ingress": [{"from": [by_name("carts")]}]}
    )
    ip_only = policy(
        "sock-shop", "ext", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]}
    )
    eng = engine([fixed, ip_only])
    assert eng.lint() == []
    assert model_allows(models_of(eng), CARTS, CARTS_DB, "TCP", 27017)


def test_no_did_you_mean_when_nothing_is_close() -> None:
    far = policy("sock-shop", "far", {"podSelector": {"matchLabels": {"name": "zzzzzzzz"}}})
    (w,) = engine([far]).lint()
    assert w.policy == "sock-shop/far" and w.field == "spec.podSelector"
    assert "did you mean" not in w.message.lower()


def test_namespace_selector_peer_matching_no_pods() -> None:
    pol = policy(
        "sock-shop",
        "from-monitoring",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}]},
    )
    warnings = engine([pol]).lint()
    fields = [w.field for w in warnings if w.policy == "sock-shop/from-monitoring"]
    assert fields in (["spec.ingress[0].from[0].namespaceSelector"], ["spec.ingress[0].from[0]"]), warnings


def test_warning_goes_away_when_a_matching_pod_appears() -> None:
    eng = engine([CART_ACCESS])
    assert any(w.policy == "sock-shop/cart-access" for w in eng.lint())
    eng.upsert(pod("sock-shop", "cart", {"name": "cart"}, "10.4.0.9", "node-1"))
    assert [w for w in eng.lint() if w.policy == "sock-shop/cart-access"] == []


# -- Services: a rule naming the Service's port instead of the container port ------------------

REPO = Path(__file__).resolve().parents[2]
SOCK_SHOP = REPO / "examples" / "sock-shop"
# The usual mistake: the front-end is reached through its Service on port 80, so its author
# allows 80; but policies apply after kube-proxy's DNAT, where the packet is bound for 8079.
FRONT_END_ON_80 = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front-end-web, namespace: sock-shop}
spec:
  podSelector: {matchLabels: {name: front-end}}
  ingress:
  - ports: [{protocol: TCP, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: orders-egress, namespace: sock-shop}
spec:
  podSelector: {matchLabels: {name: orders}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {name: front-end}}}]
    ports: [{protocol: TCP, port: 80}]
  - ports: [{protocol: TCP, port: 80}]
"""


def sock_shop(tmp_path: Path, extra: str = "") -> Engine:
    if extra:
        (tmp_path / "extra.yaml").write_text(extra)
    return compile_manifests([str(SOCK_SHOP), *([str(tmp_path / "extra.yaml")] if extra else [])])


def test_service_port_named_instead_of_the_container_port(tmp_path: Path) -> None:
    eng = sock_shop(tmp_path, FRONT_END_ON_80)
    assert "sock-shop/front-end" in {s.key for s in eng.services()}
    mine = [w for w in eng.lint() if w.policy in ("sock-shop/front-end-web", "sock-shop/orders-egress")]
    assert [(w.policy, w.field) for w in mine] == [
        ("sock-shop/front-end-web", "spec.ingress[0].ports[0].port"),
        ("sock-shop/orders-egress", "spec.egress[0].ports[0].port"),  # not egress[1]: no peer, no Service
    ]
    for w in mine:
        assert w.message.startswith("port 80 is the Service port of front-end; its pods listen on 8079"), w


def test_sock_shop_policies_name_container_ports(tmp_path: Path) -> None:
    """The demo's own policies name container ports (carts 80 → 80, front-end 8079): no such warning."""
    eng = sock_shop(tmp_path)
    assert len(eng.services()) >= 10
    assert [w for w in eng.lint() if "Service port" in w.message] == []


def test_warning_follows_the_service() -> None:
    pol = policy(
        "sock-shop", "fe", {"podSelector": by_name("front-end")["podSelector"], "ingress": [{"ports": [{"port": 80}]}]}
    )
    front = pod("sock-shop", "front-end", {"name": "front-end"}, "10.4.0.1", "node-1")
    front["spec"]["containers"] = [{"name": "c", "ports": [{"name": "web", "containerPort": 8079}]}]
    eng = engine([pol], [front])
    assert eng.lint() == []  # no Service yet: port 80 may be meant
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "front-end", "namespace": "sock-shop"},
        "spec": {"selector": {"name": "front-end"}, "ports": [{"port": 80, "targetPort": "web"}]},
    }
    assert eng.upsert(svc) == {}  # Services change no rule
    (w,) = eng.lint()
    assert w.message.startswith("port 80 is the Service port of front-end; its pods listen on 8079")
    eng.delete("Service", "sock-shop", "front-end")
    assert eng.lint() == []
