"""Bounded work (issue 11, item 3): the except arithmetic is exact and its size is known without
writing it out; the policy shapes whose compiled size is a product are bounded by the limits."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.brain.engine import Engine
from stockade.brain.engine import policy as pol
from stockade.model.limits import POLICY_LIMITS


@st.composite
def blocks(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    net = ipaddress.IPv6Network if v6 else ipaddress.IPv4Network
    plen = draw(st.integers(0, bits - 1))
    base = net((draw(st.integers(0, 2**bits - 1)) >> (bits - plen) << (bits - plen), plen))
    excepts = set()
    for _ in range(draw(st.integers(0, 12))):
        sub = draw(st.integers(plen + 1, bits))
        off = draw(st.integers(0, 2 ** (bits - plen) - 1))
        excepts.add(str(net(((int(base.network_address) + off) >> (bits - sub) << (bits - sub), sub))))
    return str(base), tuple(sorted(excepts))


@settings(max_examples=400, deadline=None)
@given(blocks())
def test_the_cover_is_exact_minimal_and_counted_without_writing_it(block: tuple[str, tuple[str, ...]]) -> None:
    cidr, excepts = block
    nets = pol._block_networks(cidr, excepts)
    assert pol._block_count(cidr, excepts) == len(nets)
    # exactly the block minus the excepts, as the fewest CIDRs (what ipaddress computes)
    want = [ipaddress.ip_network(cidr)]
    for e in map(ipaddress.ip_network, excepts):
        want = [r for n in want for r in (n.address_exclude(e) if e.subnet_of(n) else ([] if n.subnet_of(e) else [n]))]
    assert sorted(map(ipaddress.ip_network, nets)) == sorted(ipaddress.collapse_addresses(want))
    assert len(nets) == len(list(ipaddress.collapse_addresses(want)))


def _engine() -> Engine:
    eng = Engine()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": "10.244.1.2"},
    }
    eng.load([{"kind": "Namespace", "metadata": {"name": "x"}}], [pod], [])
    return eng


def _policy(peers: list[dict[str, Any]], ports: int) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": peers, "ports": [{"port": 1 + p} for p in range(ports)]}]},
    }


def test_peers_times_ports_is_bounded() -> None:
    peers = [{"podSelector": {"matchLabels": {"k": f"v{i}"}}} for i in range(1000)]
    eng = _engine()
    eng.upsert(_policy(peers, 1000))  # 1,000,000 (peer, port) pairs: quadratic to compile
    [rej] = eng.rejections()
    assert rej.field == "spec.ingress"
    assert f"1000000 peer and port pairs over its rules, over the limit of {POLICY_LIMITS.port_matches_per_policy}" in (
        rej.message
    )
    eng.upsert(_policy(peers[:100], 1000))  # 100,000: at the limit, accepted
    assert eng.rejections() == []


def test_refusing_a_wide_block_does_not_expand_it() -> None:
    rnd = random.Random(7)
    excepts = [str(ipaddress.IPv6Network((rnd.getrandbits(128), 128))) for _ in range(1000)]
    pol._block_networks.cache_clear()
    eng = _engine()
    eng.upsert(_policy([{"ipBlock": {"cidr": "::/0", "except": excepts}}], 1))
    [rej] = eng.rejections()
    assert "CIDRs after except, over the limit" in rej.message
    assert pol._block_networks.cache_info().currsize == 0  # counted, never written out
