"""The renderers and read-back parsers as pure functions (no kernel): order, idempotence, scope."""

from __future__ import annotations

import pytest

from stockade.agent.backends import elements, ipt_render, names, nft_readback, nft_render
from stockade.agent.backends.nft_repair import render_reconcile
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, diff

CFG = nft_render.NftConfig(nflog_group=7)


def model() -> NodeModel:
    m = NodeModel("n")
    m.sets = {"s1": frozenset({"10.0.0.1/32", "10.0.0.2/32"}), "blk": frozenset({"10.9.0.0/16", "fd00::/8"})}
    chain = Chain.of(
        Direction.INGRESS,
        [Rule("s1", (PortMatch(Protocol.TCP, 80), PortMatch(Protocol.TCP, 90, 99))), Rule("blk", None)],
    )
    m.chains = {chain.id: chain}
    m.ingress = {"10.0.1.1": chain.id, "fd00::1": chain.id}
    return m


def test_snapshot_replaces_table_in_one_script() -> None:
    text = nft_render.render_snapshot(model(), CFG)
    lines = text.splitlines()
    assert lines[:2] == ["table inet stockade {}", "delete table inet stockade"]
    assert "fd00" not in text  # IPv6 skipped (documented in elements.py)
    assert 'log group 7 prefix "in_' in text
    assert "tcp dport 90-99 accept" in text and "ip saddr @a_blk accept" in text


def test_delta_order_sets_first_rules_before_sets_removed() -> None:
    old, new = model(), model()
    chain = Chain.of(Direction.INGRESS, [Rule("s2", (PortMatch(Protocol.UDP),))])
    new.sets["s2"] = frozenset({"10.0.0.3/32"})
    new.chains = {chain.id: chain}
    new.ingress = {"10.0.1.1": chain.id}
    del new.sets["blk"], new.sets["s1"]
    text = nft_render.render_delta(diff(old, new), new, CFG, {"10.0.1.1"}, set())
    i_new_set = text.index("add set inet stockade a_s2")
    i_new_chain = text.index(f"add chain inet stockade {chain.id}")
    i_dispatch = text.index("add element inet stockade ingress_dispatch")
    i_del_chain = text.index("delete chain inet stockade in_")
    i_del_set = text.index("delete set inet stockade a_s1")
    assert i_new_set < i_new_chain < i_dispatch < i_del_chain < i_del_set
    # the pod was dispatched before: its old entry is deleted before the new one is added
    assert text.index("delete element inet stockade ingress_dispatch") < i_dispatch


def test_element_changes_never_overlap() -> None:
    # a host inside a CIDR already in the set adds nothing; removing the CIDR brings the host back
    old = frozenset({"10.9.0.0/16"})
    new = frozenset({"10.9.0.0/16", "10.9.1.1/32"})
    assert elements.change(old, new, new - old, frozenset()) == (frozenset(), frozenset())
    assert elements.change(new, frozenset({"10.9.1.1/32"}), frozenset(), frozenset({"10.9.0.0/16"})) == (
        frozenset({"10.9.1.1/32"}),
        frozenset({"10.9.0.0/16"}),
    )


def _view_of(m: NodeModel) -> nft_readback.KernelView:
    want = nft_readback.desired(m, CFG)
    return nft_readback.KernelView(
        sets=dict(want.sets),
        chains=dict(want.chains),
        ingress=dict(want.ingress),
        egress=dict(want.egress),
        fixed=set(nft_readback.FIXED),
        forward_rules=nft_readback.FORWARD_RULE_COUNT,
        once_rules={n: 4 for n in nft_render.ONCE.values()},
        settings={name: want.comment for name in want.chains},
    )


def test_reconcile_in_sync_is_empty_and_drift_is_targeted() -> None:
    m = model()
    view = _view_of(m)
    assert nft_readback.differences(view, nft_readback.desired(m, CFG)) == []
    assert render_reconcile(view, m, CFG) == ""
    view.sets["a_s1"] = frozenset({"10.0.0.1/32"})
    view.ingress.clear()
    script = render_reconcile(view, m, CFG)
    assert "add element inet stockade a_s1 { 10.0.0.2/32 }" in script
    assert "ingress_dispatch" in script and "delete table" not in script
    other = nft_render.NftConfig(nflog_group=8)
    assert f"flush chain inet stockade {next(iter(m.chains))}" in render_reconcile(_view_of(m), m, other)
    view.fixed.discard("forward")
    assert render_reconcile(view, m, CFG).startswith("table inet stockade {}")  # rebuilt whole


def test_iptables_restore_names_only_our_chains() -> None:
    m = model()
    chains = {names.ipt_chain(c): ipt_render.chain_specs(c, ch, 7, None, 120) for c, ch in m.chains.items()}
    chains[ipt_render.FWD] = ipt_render.fwd_specs(m.chains)
    chains |= ipt_render.bucket_chains(m.chains)
    text = ipt_render.restore_script(chains, ["STK-out_gone"])
    declared = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]
    appended = [line.split()[1] for line in text.splitlines() if line.startswith(("-A", "-X"))]
    assert all(n.startswith("STK") or n == ipt_render.FWD for n in declared + appended)
    assert "FORWARD" not in declared and "FORWARD" not in appended
    assert all(len(n) <= 28 for n in declared)
    assert "--nflog-group 7" in text and "--hashlimit-mode srcip,srcport,dstip,dstport" in text


def test_ipset_names_fit() -> None:
    assert len(names.ipset_set("x" * 200)) <= 31
    assert len(ipt_render.pod_set("in_" + "f" * 12, Direction.INGRESS)) <= 31
    assert ipt_render.ipset_elements({"0.0.0.0/0", "fd00::/8"}) == frozenset({"0.0.0.0/1", "128.0.0.0/1"})


def test_element_only_delta_goes_to_netlink() -> None:
    m = model()
    d = NodeDelta("n", set_added={"s1": frozenset({"10.0.0.7/32"})}, ingress_set={"10.0.1.2": next(iter(m.chains))})
    assert nft_render.is_element_only(d)
    ops = nft_render.element_ops(d, m, set(), set())
    assert ops[0] == ("add", "a_s1", ["10.0.0.7/32"])
    assert ops[1][0:2] == ("add", "ingress_dispatch")


def test_auto_falls_back_to_iptables_without_nftables(monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.agent.backends import selection

    monkeypatch.setattr(selection, "nftables_available", lambda netns=None: False)
    assert selection.resolve("auto") == "iptables"
    monkeypatch.setattr(selection, "nftables_available", lambda netns=None: True)
    assert selection.resolve("auto") == "nftables"
    with pytest.raises(ValueError, match="unknown backend"):
        selection.resolve("ebpf")
