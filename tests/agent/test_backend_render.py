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
    assert 'log group 7 prefix "in_' in text
    assert "tcp dport 90-99 accept" in text and "ip saddr @a_blk accept" in text
    # both families: a set's elements split into its IPv4 and IPv6 twins, pod IPs into the maps
    assert "set a_blk { type ipv4_addr; flags interval; elements = { 10.9.0.0/16 }; }" in text
    assert "set a6_blk { type ipv6_addr; flags interval; elements = { fd00::/8 }; }" in text
    assert "set a6_s1 { type ipv6_addr; }" in text  # a twin even when empty (a hash set: no CIDR)
    chain = next(iter(model().chains))
    assert f"map ingress_dispatch6 {{ type ipv6_addr : verdict; elements = {{ fd00::1 : jump {chain} }}; }}" in text
    assert f"map ingress_dispatch {{ type ipv4_addr : verdict; elements = {{ 10.0.1.1 : jump {chain} }}; }}" in text
    # a peer rule once per family, each naming its own family's set
    assert "ip6 saddr @a6_blk accept" in text and "ip6 saddr @a6_s1 jump p_" in text
    for rule in (
        "ip saddr vmap @egress_dispatch",
        "ip6 saddr vmap @egress_dispatch6",
        "ip6 daddr vmap @ingress_dispatch6",
    ):
        assert f"    {rule}\n" in text
    assert "seen_in6 { type ipv6_addr . ipv6_addr . inet_proto" in text


def test_rule_without_peer_is_rendered_once_for_both_families() -> None:
    any_peer = nft_render.rule_lines(Rule(None, (PortMatch(Protocol.TCP, 80),)), Direction.INGRESS)
    assert any_peer == ["tcp dport 80 accept"]
    peer = nft_render.rule_lines(Rule("s", (PortMatch(Protocol.TCP, 80),)), Direction.EGRESS)
    assert peer == ["ip daddr @a_s tcp dport 80 return", "ip6 daddr @a6_s tcp dport 80 return"]
    assert nft_render.rule_lines(Rule("s", None), Direction.INGRESS) == [
        "ip saddr @a_s accept",
        "ip6 saddr @a6_s accept",
    ]


def test_nested_cidrs_dropped_per_family() -> None:
    forms = elements.kernel_forms({"10.0.0.0/8", "10.1.0.0/16", "fd00::/16", "fd00:1::/32", "fd01::5/128", "10.2.0.1"})
    assert forms == {4: frozenset({"10.0.0.0/8"}), 6: frozenset({"fd00::/16", "fd01::5/128"})}
    # a /32 is a host in IPv4 but a network in IPv6
    assert elements.kernel_forms({"fd00::/32", "fd00:0:1::/48"})[6] == frozenset({"fd00::/32"})
    adds = elements.changes(
        frozenset({"fd00::/16"}), frozenset({"fd00::/16", "fd00::9/128"}), frozenset({"fd00::9/128"}), frozenset()
    )
    assert adds == {4: (frozenset(), frozenset()), 6: (frozenset(), frozenset())}


@pytest.mark.parametrize("bad", ["10.0.0.300/32", "example.com", "fd00::/129", "10.0.0.0/x", "fd00:::1/128", ""])
def test_an_element_of_neither_family_is_refused(bad: str) -> None:
    m = model()
    m.sets["s1"] = m.sets["s1"] | {bad}
    with pytest.raises(elements.ElementError, match="address set 's1'"):
        nft_render.render_snapshot(m, CFG)
    with pytest.raises(elements.ElementError, match="address set 's1'"):
        nft_readback.desired(m, CFG)
    d = NodeDelta("n", set_added={"s1": frozenset({bad})})
    with pytest.raises(elements.ElementError, match=r"neither an IPv4 nor an IPv6|prefix length"):
        nft_render.element_ops(d, m, set(), set())
    with pytest.raises(elements.ElementError):
        nft_render.render_delta(d, m, CFG, set(), set())


@pytest.mark.parametrize("bad", ["10.0.1.999", "fd00::1/128", "pod-a"])
def test_a_dispatch_key_that_is_no_address_is_refused(bad: str) -> None:
    m = model()
    m.egress[bad] = next(iter(m.chains))
    with pytest.raises(elements.ElementError, match="egress dispatch"):
        nft_render.render_snapshot(m, CFG)
    d = NodeDelta("n", egress_set={bad: next(iter(m.chains))})
    with pytest.raises(elements.ElementError, match="egress dispatch"):
        nft_render.element_ops(d, m, set(), set())


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
        interval=set(want.interval),
        chains=dict(want.chains),
        ports={name: len(lines) for name, lines in want.ports.items()},
        ingress=dict(want.ingress),
        egress=dict(want.egress),
        fixed=set(nft_readback.FIXED),
        forward_rules=nft_readback.FORWARD_RULE_COUNT,
        once_rules={n: len(nft_render.once_lines(d, CFG)) for d, n in nft_render.ONCE.items()},
        settings={name: want.comment for name in want.chains},
    )


def test_reconcile_in_sync_is_empty_and_drift_is_targeted() -> None:
    m = model()
    view = _view_of(m)
    assert nft_readback.differences(view, nft_readback.desired(m, CFG)) == []
    assert render_reconcile(view, m, CFG) == ""
    view.sets["a_s1"] = frozenset({"10.0.0.1/32"})
    view.sets["a6_blk"] = frozenset()
    view.ingress.clear()
    script = render_reconcile(view, m, CFG)
    assert "add element inet stockade a_s1 { 10.0.0.2 }" in script  # a hash set: bare addresses
    assert "add element inet stockade a6_blk { fd00::/8 }" in script
    chain = next(iter(m.chains))
    assert f"add element inet stockade ingress_dispatch {{ 10.0.1.1 : jump {chain} }}" in script
    assert f"add element inet stockade ingress_dispatch6 {{ fd00::1 : jump {chain} }}" in script
    assert "delete table" not in script
    del view.sets["a6_s1"]
    assert "add set inet stockade a6_s1 { type ipv6_addr; }" in render_reconcile(view, m, CFG)
    # a set of the wrong kind is drift, repaired by re-creating the table (the rules pin a set)
    kinds = _view_of(m)
    kinds.interval.add("a_s1")
    kinds.interval.discard("a_blk")
    assert nft_readback.differences(kinds, nft_readback.desired(m, CFG)) == [
        "set a_blk is a hash set, expected an interval set",
        "set a_s1 is an interval set, expected a hash set",
    ]
    rebuilt = render_reconcile(kinds, m, CFG)
    assert rebuilt.startswith("table inet stockade {}") and "set a_s1 { type ipv4_addr; elements" in rebuilt
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


def test_element_ops_of_ipv6_go_to_the_ipv6_set_and_map() -> None:
    m = model()
    chain = next(iter(m.chains))
    d = NodeDelta(
        "n",
        set_added={"s1": frozenset({"fd00::7/128", "10.0.0.7/32"})},
        set_removed={"blk": frozenset({"fd00::/8"})},
        ingress_set={"fd00::2": chain, "fd00::1": chain},
        ingress_removed=frozenset({"fd00::3"}),
    )
    m.sets["blk"] = frozenset({"10.9.0.0/16"})
    ops = nft_render.element_ops(d, m, {"fd00::1", "fd00::3"}, set())
    assert ("add", "a6_s1", ["fd00::7/128"]) in ops and ("add", "a_s1", ["10.0.0.7/32"]) in ops
    assert ("delete", "a6_blk", ["fd00::/8"]) in ops
    # fd00::1 was dispatched: deleted before it is added again (a map refuses to overwrite)
    assert ops.index(("delete", "ingress_dispatch6", ["fd00::1", "fd00::3"])) < ops.index(
        ("add", "ingress_dispatch6", [f"fd00::1 : {chain}", f"fd00::2 : {chain}"])
    )
    assert not any(name == "ingress_dispatch" for _, name, _ in ops)
    text = nft_render.render_delta(d, m, CFG, {"fd00::1", "fd00::3"}, set())
    assert f"add element inet stockade ingress_dispatch6 {{ fd00::1 : jump {chain}, fd00::2 : jump {chain} }}" in text


def test_new_and_removed_sets_come_in_both_families() -> None:
    old, new = model(), model()
    new.sets["s2"] = frozenset({"fd00::9/128"})
    del new.sets["s1"]
    chain = Chain.of(Direction.INGRESS, [Rule("s2", None), Rule("blk", None)])
    new.chains = {chain.id: chain}
    new.ingress = {"10.0.1.1": chain.id, "fd00::1": chain.id}
    text = nft_render.render_delta(diff(old, new), new, CFG, {"10.0.1.1", "fd00::1"}, set())
    assert "add set inet stockade a_s2 { type ipv4_addr; }" in text  # host addresses only: hash sets
    assert "add set inet stockade a6_s2 { type ipv6_addr; }" in text
    assert "add element inet stockade a6_s2 { fd00::9 }" in text
    assert "delete set inet stockade a_s1" in text and "delete set inet stockade a6_s1" in text


def test_netlink_keys_have_the_family_length() -> None:
    from stockade.agent.backends import nft_netlink

    def keys(elems: list[bytes]) -> list[tuple[bytes, bool]]:
        # element = LIST_ELEM{ ELEM_KEY{ DATA_VALUE(key) } [ELEM_FLAGS] }: read the key back
        out = []
        for e in elems:
            klen = int.from_bytes(e[8:10], "little") - 4
            out.append((e[12 : 12 + klen], len(e) > 12 + klen + (-klen % 4)))
        return out

    v6 = keys(nft_netlink.interval_elements(["fd00:201:1::/64"]))
    assert v6 == [
        (bytes.fromhex("fd000201000100000000000000000000"), False),
        (bytes.fromhex("fd000201000100010000000000000000"), True),  # the end: flagged INTERVAL_END
    ]
    assert keys(nft_netlink.interval_elements(["10.1.2.3/32"])) == [
        (bytes([10, 1, 2, 3]), False),
        (bytes([10, 1, 2, 4]), True),
    ]
    assert len(keys(nft_netlink.interval_elements(["ff00::/8"]))) == 1  # ends at the last address: no end element
    assert keys(nft_netlink.host_elements(["fd00::1"]))[0][0] == bytes.fromhex("fd00" + "0" * 27 + "1")
    with pytest.raises(ValueError, match="neither"):
        nft_netlink.verdict_elements([("fd00::zz", "in_1")])


def test_nft_names_fit_and_never_collide() -> None:
    long_ids = ["ag_" + "f" * 64, "x" * 40, "é" * 3, "6_x"]
    for sid in long_ids:
        for version in (4, 6):
            assert len(names.nft_set_of(sid, version)) <= names.NFT_NAME_MAX
    assert len(names.nft_chain("in_" + "f" * 64)) <= names.NFT_NAME_MAX
    made = [names.nft_set_of(s, v) for s in [*long_ids, "x6_x"] for v in (4, 6)]
    assert len(set(made)) == len(made)
    assert names.nft_set6("ag_1") == "a6_ag_1" and names.nft_set("ag_1") == "a_ag_1"


def test_auto_falls_back_to_iptables_without_nftables(monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.agent.backends import selection

    monkeypatch.setattr(selection, "nftables_available", lambda netns=None: False)
    assert selection.resolve("auto") == "iptables"
    monkeypatch.setattr(selection, "nftables_available", lambda netns=None: True)
    assert selection.resolve("auto") == "nftables"
    with pytest.raises(ValueError, match="unknown backend"):
        selection.resolve("ebpf")


def test_ipv4_only_model_renders_no_ipv6_side() -> None:
    """No IPv6 pod address dispatched: no a6_ twins, no ip6 peer rules (nothing IPv6 could reach
    them); the fixed IPv6 objects stay, so the table's structure is the same in both layouts."""
    m = model()
    del m.ingress["fd00::1"]
    assert nft_render.layout(m) == (4,) and nft_render.layout(model()) == (4, 6)
    text = nft_render.render_snapshot(m, CFG)
    assert "a6_" not in text and "ip6 saddr @" not in text
    assert "set a_blk { type ipv4_addr; flags interval; elements = { 10.9.0.0/16 }; }" in text
    assert "map ingress_dispatch6 { type ipv6_addr : verdict; }" in text
    assert "    ip6 daddr vmap @ingress_dispatch6\n" in text and "seen_in6" in text
    want = nft_readback.desired(m, CFG)
    assert sorted(want.sets) == ["a_blk", "a_s1"]
    # a kernel in the dual-stack layout is moved over in one script: chains first, twins last
    script = render_reconcile(_view_of(model()), m, CFG)
    assert script.index("flush chain inet stockade in_") < script.index("delete set inet stockade a6_s1")
    assert "delete set inet stockade a6_blk" in script and "delete table" not in script
    # with an IPv6 pod address, every peer rule has its IPv6 line
    dual_text = nft_render.render_snapshot(model(), CFG)
    assert dual_text.count("ip6 saddr @a6_") == dual_text.count("ip saddr @a_")


def test_a_peer_with_several_port_lines_jumps_to_a_shared_port_chain() -> None:
    ports = (PortMatch(Protocol.TCP, 80), PortMatch(Protocol.TCP, 90, 99))
    lines = nft_render.rule_lines(Rule("s1", ports), Direction.INGRESS)
    name = names.nft_ports("tcp dport 80 accept\ntcp dport 90-99 accept")
    assert lines == [f"ip saddr @a_s1 jump {name}", f"ip6 saddr @a6_s1 jump {name}"]
    text = nft_render.render_snapshot(model(), CFG)
    assert f"  chain {name} {{\n    tcp dport 80 accept\n    tcp dport 90-99 accept\n  }}" in text
    assert text.index(f"chain {name}") < text.index("chain in_")
    # egress: a return in a jumped chain would not reach the forward chain, so lines stay inline
    assert nft_render.rule_lines(Rule("s1", ports), Direction.EGRESS, (4,)) == [
        "ip daddr @a_s1 tcp dport 80 return",
        "ip daddr @a_s1 tcp dport 90-99 return",
    ]
    # deltas: created with the first chain that needs it, deleted with the last
    old = model()
    new = model()
    new.chains = {}
    new.ingress = {}
    gone = nft_render.render_delta(diff(old, new), new, CFG, set(old.ingress), set(), None, {name})
    assert gone.index("delete chain inet stockade in_") < gone.index(f"delete chain inet stockade {name}")
    back = nft_render.render_delta(diff(new, old), old, CFG, set(), set(), None, set())
    assert back.index(f"add chain inet stockade {name}") < back.index("add chain inet stockade in_")
    assert nft_render.port_changes(diff(new, old), old, {name}) == ({}, [])


def test_sets_most_named_are_declared_first() -> None:
    m = model()
    hot = Chain.of(Direction.INGRESS, [Rule("blk", (PortMatch(Protocol.UDP, 53),))])
    m.chains[hot.id] = hot
    assert nft_render.set_order(m) == ["blk", "s1"]
    text = nft_render.render_snapshot(m, CFG)
    assert text.index("set a_blk ") < text.index("set a6_blk ") < text.index("set a_s1 ")
