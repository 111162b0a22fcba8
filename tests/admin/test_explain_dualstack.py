"""explain and dry-run for dual-stack and IPv6-only pods: by name or by an address of either family."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.brain.admin.dryrun import dry_run
from stockade.brain.admin.explain import ExplainError, explain
from stockade.brain.engine import Engine

Obj = dict[str, Any]


def _pod(name: str, ips: list[str], node: str = "node-1") -> Obj:
    return {
        "kind": "Pod",
        "metadata": {"namespace": "x", "name": name, "labels": {"pod": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]},
    }


WEB = _pod("web", ["10.244.1.2", "fd00:10:244:1::2"])
CLI = _pod("cli", ["10.244.2.3", "fd00:10:244:2::3"], "node-2")
SIX = _pod("six", ["fd00:10:244:2::4"], "node-2")
V4_ONLY = {
    "kind": "NetworkPolicy",
    "metadata": {"namespace": "x", "name": "v4-only"},
    "spec": {
        "podSelector": {"matchLabels": {"pod": "web"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}],
    },
}
NS = {"kind": "Namespace", "metadata": {"name": "x"}}


def _engine(*policies: Obj) -> Engine:
    eng = Engine()
    eng.load([NS], [WEB, CLI, SIX], list(policies))
    return eng


def test_dual_stack_pods_by_name_explain_both_families() -> None:
    ex = explain(_engine(V4_ONLY), "x/cli", "x/web", 80)
    assert not ex.allowed  # allowed only when allowed over every family the pair shares
    assert [(e.family, e.allowed) for e in ex.per_family] == [("ipv4", True), ("ipv6", False)]
    assert ex.text().startswith("ALLOWED over IPv4, BLOCKED over IPv6: x/cli -> x/web TCP/80")
    doc = ex.as_json()
    assert doc["families"] == [
        {"family": "ipv4", "fromIP": "10.244.2.3", "toIP": "10.244.1.2", "allowed": True},
        {"family": "ipv6", "fromIP": "fd00:10:244:2::3", "toIP": "fd00:10:244:1::2", "allowed": False},
    ]
    assert any(r.startswith("IPv6 (fd00:10:244:2::3 -> fd00:10:244:1::2)") and "blocked" in r for r in ex.reasons)
    four = explain(_engine(V4_ONLY), "x/cli", "x/web", 80, family=4)
    assert four.allowed and not four.per_family and four.src_ip == "10.244.2.3"


def test_explain_by_ipv6_address_of_either_end() -> None:
    eng = _engine(V4_ONLY)
    by_src = explain(eng, "FD00:10:244:2:0::3", "x/web", 80)  # any spelling
    assert by_src.src == "x/cli" and by_src.family == "ipv6" and not by_src.allowed
    by_dst = explain(eng, "x/cli", "fd00:10:244:1::2", 80)
    assert by_dst.dst == "x/web" and by_dst.dst_ip == "fd00:10:244:1::2" and not by_dst.allowed
    outside = explain(eng, "2001:db8::1", "x/web", 80)
    assert outside.src == "2001:db8::1" and not outside.allowed
    assert explain(eng, "10.9.9.9", "x/web", 80).allowed is False
    assert explain(eng, "10.244.7.7", "x/web", 80).allowed is True


def test_explain_refuses_what_cannot_be_a_connection() -> None:
    eng = _engine()
    eng.upsert(_pod("four", ["10.244.1.8"]))
    with pytest.raises(ExplainError, match="share no IP family"):
        explain(eng, "x/six", "x/four", 80)
    with pytest.raises(ExplainError, match="has no IPv4 address"):
        explain(eng, "x/six", "x/cli", 80, family=4)
    with pytest.raises(ExplainError, match="different IP families"):
        explain(eng, "10.244.2.3", "fd00:10:244:1::2", 80)
    with pytest.raises(ExplainError, match="not the address of a pod"):
        explain(eng, "x/cli", "fd00:10:244:9::9", 80)
    assert explain(eng, "x/six", "x/web", 80).family == "ipv6"  # the one family they share
    bad = _pod("bad", ["10.244.1.9"])
    bad["status"]["podIP"] = "010.244.001.009"
    eng.upsert(bad)
    with pytest.raises(ExplainError, match=r"addresses were refused: status\.podIP"):
        explain(eng, "x/bad", "x/web", 80)


def test_dry_run_names_the_family_whose_verdict_changes() -> None:
    result = dry_run([NS, WEB, CLI, SIX], [V4_ONLY])
    assert ("x/cli", "x/web", 80, "TCP", "ipv6") in result.closed
    assert ("x/six", "x/web", 80, "TCP", "ipv6") in result.closed
    assert not any(c[:2] == ("x/cli", "x/web") and c[4] == "ipv4" for c in result.closed)
