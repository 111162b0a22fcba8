"""The renderers and read-back parsers as pure functions (no kernel): order, idempotence, scope."""

from __future__ import annotations

import sys

import pytest

from stockade.agent.backends import elements, ipt_render, names, nft_readback, nft_render
from stockade.agent.backends.nft_repair import render_reconcile
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, diff

CFG = nft_render.NftConfig(nflog_group=7)


def key(sid: str) -> str:
    """The tag part of a peer match on a host-only set (`nft_render.tag_key`)."""
    return nft_render.tag_key(names.nft_tag(sid))


def elem(addr: str, sid: str) -> str:
    """A host-only set's element in a hosts set."""
    hi, lo = names.nft_tag(sid)
    return f"{addr} . {hi} . {lo}"


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
    # a host-only set has no kernel set of its own: its elements sit in the hosts set under its tag
    assert "set a_s1" not in text and "set a6_s1" not in text
    hosts4 = f"set hosts4 {{ typeof ip saddr . {nft_render.tag_key((0, 0))}; elements = {{ "
    assert f"{hosts4}{elem('10.0.0.1', 's1')}, {elem('10.0.0.2', 's1')} }}; }}" in text
    assert f"set hosts6 {{ typeof ip6 saddr . {nft_render.tag_key((0, 0))}; }}" in text  # declared even when empty
    chain = next(iter(model().chains))
    assert f"map ingress_dispatch6 {{ type ipv6_addr : verdict; elements = {{ fd00::1 : jump {chain} }}; }}" in text
    assert f"map ingress_dispatch {{ type ipv4_addr : verdict; elements = {{ 10.0.1.1 : jump {chain} }}; }}" in text
    # a peer rule once per family, each naming its own family's set
    assert "ip6 saddr @a6_blk accept" in text and f"ip6 saddr . {key('s1')} @hosts6 jump p_" in text
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
    assert peer == [
        f"ip daddr . {key('s')} @hosts4 tcp dport 80 return",
        f"ip6 daddr . {key('s')} @hosts6 tcp dport 80 return",
    ]
    # a CIDR in one family: that family's own interval set, the other's the hosts set
    sets = {"s": frozenset({"10.0.0.0/8", "fd00::1/128"})}
    assert nft_render.rule_lines(Rule("s", None), Direction.INGRESS, sets=sets) == [
        "ip saddr @a_s accept",
        f"ip6 saddr . {key('s')} @hosts6 accept",
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
    text = nft_render.render_delta(diff(old, new), new, CFG, {"10.0.1.1"}, set(), gone=old.sets)
    i_new_set = text.index(f"add element inet stockade hosts4 {{ {elem('10.0.0.3', 's2')} }}")
    i_new_chain = text.index(f"add chain inet stockade {chain.id}")
    i_dispatch = text.index("add element inet stockade ingress_dispatch")
    i_del_chain = text.index("delete chain inet stockade in_")
    i_del_set = text.index("delete set inet stockade a_blk")
    i_del_hosts = text.index(
        f"delete element inet stockade hosts4 {{ {elem('10.0.0.1', 's1')}, {elem('10.0.0.2', 's1')} }}"
    )
    assert i_new_set < i_new_chain < i_dispatch < i_del_chain < min(i_del_set, i_del_hosts)
    assert "add set" not in text  # a new host-only set is elements only
    with pytest.raises(ValueError, match="content of removed sets"):
        nft_render.render_delta(diff(old, new), new, CFG, {"10.0.1.1"}, set())
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
        tagged=dict(want.tagged),
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
    tag = names.nft_tag("s1")
    view.tagged[4, tag] = frozenset({"10.0.0.1/32", "10.0.0.5/32"})
    view.tagged[4, (1, 2)] = frozenset({"10.0.0.6/32"})  # a tag no set has
    view.sets["a6_blk"] = frozenset()
    view.ingress.clear()
    problems = nft_readback.differences(view, nft_readback.desired(m, CFG))
    assert (
        f"set hosts4 tag {tag[0]}.{tag[1]} (address set 's1') differs: "
        "missing elements ['10.0.0.2/32'], extra ['10.0.0.5/32']" in problems
    )
    assert "set hosts4 tag 1.2 (no address set) differs: missing elements [], extra ['10.0.0.6/32']" in problems
    script = render_reconcile(view, m, CFG)
    assert f"add element inet stockade hosts4 {{ {elem('10.0.0.2', 's1')} }}" in script
    assert f"delete element inet stockade hosts4 {{ {elem('10.0.0.5', 's1')} }}" in script
    assert "delete element inet stockade hosts4 { 10.0.0.6 . 1 . 2 }" in script
    assert "add element inet stockade a6_blk { fd00::/8 }" in script
    chain = next(iter(m.chains))
    assert f"add element inet stockade ingress_dispatch {{ 10.0.1.1 : jump {chain} }}" in script
    assert f"add element inet stockade ingress_dispatch6 {{ fd00::1 : jump {chain} }}" in script
    assert "delete table" not in script
    del view.sets["a6_blk"]
    assert "add set inet stockade a6_blk { type ipv6_addr; flags interval; }" in render_reconcile(view, m, CFG)
    # a set of the wrong kind is drift, repaired by re-creating the table (the rules pin a set)
    kinds = _view_of(m)
    kinds.interval.discard("a_blk")
    assert nft_readback.differences(kinds, nft_readback.desired(m, CFG)) == [
        "set a_blk is a hash set, expected an interval set",
    ]
    rebuilt = render_reconcile(kinds, m, CFG)
    assert (
        rebuilt.startswith("table inet stockade {}")
        and "set a_blk { type ipv4_addr; flags interval; elements" in rebuilt
    )
    # a host-only set found in a set of its own (its rules name that): the rules naming it are
    # rewritten to its tag and its own set deleted after them, in one script
    moved = _view_of(m)
    moved.sets["a_s1"] = frozenset({"10.0.0.1/32", "10.0.0.2/32"})
    moved.interval.add("a_s1")
    moved.tagged.clear()
    assert "extra set a_s1" in nft_readback.differences(moved, nft_readback.desired(m, CFG))
    script = render_reconcile(moved, m, CFG)
    assert (
        script.index(f"add element inet stockade hosts4 {{ {elem('10.0.0.1', 's1')}")
        < script.index(f"flush chain inet stockade {next(iter(m.chains))}")
        < script.index("delete set inet stockade a_s1")
    )
    assert "@hosts4 jump p_" in script and "delete table" not in script
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
    assert ops[0] == ("add", "hosts4", [elem("10.0.0.7", "s1")])
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
    assert ("add", "hosts6", [elem("fd00::7", "s1")]) in ops and ("add", "hosts4", [elem("10.0.0.7", "s1")]) in ops
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
    text = nft_render.render_delta(diff(old, new), new, CFG, {"10.0.1.1", "fd00::1"}, set(), gone=old.sets)
    assert "add set" not in text  # host addresses only: elements in the hosts set
    assert f"add element inet stockade hosts6 {{ {elem('fd00::9', 's2')} }}" in text
    assert f"delete element inet stockade hosts4 {{ {elem('10.0.0.1', 's1')}, {elem('10.0.0.2', 's1')} }}" in text
    assert "delete set" not in text and "hosts6 { fd00" not in text.split("delete element")[-1]


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
    # a hosts set's key: the address, then the tag words in host order (as numgen leaves them)
    tag4 = keys(nft_netlink.tagged_elements(["10.0.0.1 . 42 . 7"]))[0][0]
    assert tag4 == bytes([10, 0, 0, 1]) + (42).to_bytes(4, sys.byteorder) + (7).to_bytes(4, sys.byteorder)
    tag6 = keys(nft_netlink.tagged_elements(["fd00::1 . 4294967295 . 0"]))[0][0]
    assert len(tag6) == 24 and tag6[16:] == b"\xff" * 4 + b"\0" * 4
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
    assert "a6_" not in text and "ip6 saddr @" not in text and "@hosts6 " not in text
    assert f"set hosts6 {{ typeof ip6 saddr . {nft_render.tag_key((0, 0))}; }}" in text
    assert "set a_blk { type ipv4_addr; flags interval; elements = { 10.9.0.0/16 }; }" in text
    assert "map ingress_dispatch6 { type ipv6_addr : verdict; }" in text
    assert "    ip6 daddr vmap @ingress_dispatch6\n" in text and "seen_in6" in text
    want = nft_readback.desired(m, CFG)
    assert sorted(want.sets) == ["a_blk"] and set(want.tagged) == {(4, names.nft_tag("s1"))}
    # a kernel in the dual-stack layout is moved over in one script: chains first, twins last
    script = render_reconcile(_view_of(model()), m, CFG)
    assert script.index("flush chain inet stockade in_") < script.index("delete set inet stockade a6_blk")
    assert "delete table" not in script
    # with an IPv6 pod address, every peer rule has its IPv6 line
    dual_text = nft_render.render_snapshot(model(), CFG)
    assert dual_text.count("ip6 saddr @a6_") == dual_text.count("ip saddr @a_") == 1
    assert dual_text.count("@hosts6 ") == dual_text.count("@hosts4 ") == 1


def test_a_peer_with_several_port_lines_jumps_to_a_shared_port_chain() -> None:
    ports = (PortMatch(Protocol.TCP, 80), PortMatch(Protocol.TCP, 90, 99))
    lines = nft_render.rule_lines(Rule("s1", ports), Direction.INGRESS)
    name = names.nft_ports("tcp dport 80 accept\ntcp dport 90-99 accept")
    assert lines == [f"ip saddr . {key('s1')} @hosts4 jump {name}", f"ip6 saddr . {key('s1')} @hosts6 jump {name}"]
    text = nft_render.render_snapshot(model(), CFG)
    assert f"  chain {name} {{\n    tcp dport 80 accept\n    tcp dport 90-99 accept\n  }}" in text
    assert text.index(f"chain {name}") < text.index("chain in_")
    # egress: a return in a jumped chain would not reach the forward chain, so lines stay inline
    assert nft_render.rule_lines(Rule("s1", ports), Direction.EGRESS, (4,)) == [
        f"ip daddr . {key('s1')} @hosts4 tcp dport 80 return",
        f"ip daddr . {key('s1')} @hosts4 tcp dport 90-99 return",
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
    # the hosts sets (which most rules name) first, then the own sets by use
    assert text.index("set hosts4 ") < text.index("set hosts6 ") < text.index("set a_blk ") < text.index("set a6_blk ")


def test_two_sets_with_one_tag_are_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sets sharing a tag would allow each other's peers: refused loudly, never merged. A
    64-bit digest does not collide by chance, so the tag function is replaced for this test."""
    assert names.nft_tag("s1") == names.nft_tag("s1") != names.nft_tag("s2")
    assert all(0 <= word < 1 << 32 for word in names.nft_tag("s1"))
    with pytest.raises(elements.ElementError, match=r"'a' and 'b' have the same tag 1\.2"):
        nft_render.tag_owners(["a", "b", "c"], tag_of=lambda sid: (1, 2) if sid in "ab" else (3, 4))
    real = names.nft_tag
    monkeypatch.setattr(names, "nft_tag", lambda sid: (5, 6) if sid in ("s1", "s9") else real(sid))
    m = model()
    m.sets["s9"] = frozenset({"10.0.0.9/32"})
    for render in (lambda: nft_render.render_snapshot(m, CFG), lambda: nft_readback.desired(m, CFG)):
        with pytest.raises(elements.ElementError, match="'s1' and 's9'"):
            render()
    with pytest.raises(elements.ElementError, match="'s1' and 's9'"):
        nft_render.render_delta(diff(model(), m), m, CFG, set(), set(), gone={})
    # likewise two ids whose own-set names would meet ("a_x" + a digest for an id that is no
    # safe identifier, the id itself for one that is)
    crafted = "x" + names.nft_set("web/1")[len("a_x") :]
    assert names.nft_set(crafted) == names.nft_set("web/1")
    with pytest.raises(elements.ElementError, match=f"'web/1' and '{crafted}' would share the kernel set a_x"):
        nft_render.tag_owners(["web/1", crafted])
