"""The engine's parse caches are bounded by what they hold, not by how many entries (issue 17,
item 6): the ipBlocks of deleted policies, however wide, cannot pile up in them."""

from __future__ import annotations

import pytest

from stockade.brain.engine import policy as pol
from stockade.brain.engine import selectors
from stockade.model.weighed import ENTRY, weighed_lru


def test_kept_within_the_budget_least_recently_used_out_first() -> None:
    calls: list[int] = []

    @weighed_lru(3 * (ENTRY + 2), lambda args, out: len(out))
    def make(n: int) -> tuple[int, ...]:
        calls.append(n)
        return (n,) * 2

    for n in (1, 2, 3):
        make(n)
    make(1)  # a hit: 1 is now the most recently used
    make(4)  # over the budget: 2 (the least recently used) goes
    assert calls == [1, 2, 3, 4]
    info = make.cache_info()
    assert (info.currsize, info.weight) == (3, 3 * (ENTRY + 2))
    make(1), make(3), make(4)
    assert calls == [1, 2, 3, 4]  # all three still held
    make(2)
    assert calls == [1, 2, 3, 4, 2]
    make.cache_clear()
    assert make.cache_info().currsize == 0


def test_a_result_heavier_than_the_budget_is_returned_not_kept() -> None:
    @weighed_lru(100, lambda args, out: len(out))
    def make(n: int) -> tuple[int, ...]:
        return tuple(range(n))

    make(5)
    assert len(make(1000)) == 1000
    assert make.cache_info().currsize == 1  # the small one stayed


def test_exceptions_are_not_cached() -> None:
    calls = 0

    @weighed_lru(100, lambda args, out: 1)
    def fails(n: int) -> int:
        nonlocal calls
        calls += 1
        raise ValueError(n)

    for _ in range(2):
        with pytest.raises(ValueError):
            fails(1)
    assert calls == 2 and fails.cache_info().currsize == 0


def test_wide_ipblocks_of_many_policies_stay_within_the_networks_budget() -> None:
    pol._block_networks.cache_clear()
    budget = pol._block_networks.cache_info().budget
    # 40 distinct /8s minus one /24 each, made again and again: each expansion is kept once
    for i in range(40):
        block = pol._ipblock(f"{i + 1}.0.0.0/8", (f"{i + 1}.0.{i}.0/24",), "spec.ingress[0].from[0].ipBlock")
        nets = block.networks()
        assert len(nets) == 16 and f"{i + 1}.128.0.0/9" in nets
    info = pol._block_networks.cache_info()
    assert info.currsize == 40 and info.weight <= budget
    # Wide blocks (1,000 scattered /32 excepts: ~28,000 CIDRs each) one after another, as
    # policies made and deleted would bring them: older ones make room, the budget holds.
    for i in range(12):
        holes = (k * 16384 + 1 + i for k in range(1000))  # far apart: each costs ~28 CIDRs
        excepts = tuple(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}/32" for n in holes)
        assert len(pol._block_networks("10.0.0.0/8", excepts)) > 10_000
        assert pol._block_networks.cache_info().weight <= budget
    assert pol._block_networks.cache_info().currsize < 40 + 12


def test_only_small_label_selectors_are_cached() -> None:
    selectors._match_labels.cache_clear()
    small = selectors.parse_selector({"matchLabels": {"app": "web"}}, "spec.podSelector")
    big_labels = {f"k{i}": "v" for i in range(selectors.CACHED_TERMS + 1)}
    big = selectors.parse_selector({"matchLabels": big_labels}, "spec.podSelector")
    assert selectors._match_labels.cache_info().currsize == 1
    assert small.matches({"app": "web"}) and big.matches(big_labels) and not big.matches({"k0": "v"})
    assert big == selectors.parse_selector(
        {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in big_labels.items()]},
        "spec.podSelector",
    )
