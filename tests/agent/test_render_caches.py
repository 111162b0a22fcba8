"""The nftables renderer's per-set cache stays bounded under churn (issue 17, item 6): every
version of a set (pods come and go) replaces the last instead of piling up beside it, and what
the cache holds in all stays within its budget."""

from __future__ import annotations

from stockade.agent.backends import nft_canon, nft_render


def test_a_sets_versions_replace_each_other() -> None:
    kinds = nft_render._SetKinds(1000, 100)
    for n in range(1, 200):  # a pod group growing one pod at a time
        elems = frozenset(f"10.0.{i // 250}.{i % 250}/32" for i in range(n % 50))
        assert kinds.get("ag_pods", elems) == frozenset()  # host addresses only: the hosts sets
        assert kinds.get("ag_pods", elems) == frozenset()  # asked again: the same answer
    assert kinds.held()[0] == 1
    block = frozenset({"10.9.0.0/16", "10.8.0.1/32"})
    assert kinds.get("ag_block", block) == frozenset({4})  # a CIDR: an interval set of its own
    assert kinds.held()[0] == 2


def test_the_budget_holds_least_recently_asked_out_first() -> None:
    kinds = nft_render._SetKinds(3 * (4 + 10), 100)
    sets = {f"s{i}": frozenset(f"10.1.{i}.{j}/32" for j in range(10)) for i in range(5)}
    for sid, elems in sets.items():
        kinds.get(sid, elems)
        assert kinds.held()[1] <= 3 * (4 + 10)
    assert kinds.held()[0] == 3
    huge = frozenset(f"10.2.{j // 250}.{j % 250}/32" for j in range(1000))
    assert kinds.get("huge", huge) == frozenset()  # heavier than the whole budget: answered, not kept
    assert kinds.held()[0] == 3
    few = nft_render._SetKinds(1 << 20, 2)  # and at most so many sets, however small
    for sid, elems in sets.items():
        few.get(sid, elems)
    assert few.held()[0] == 2


def test_the_module_cache_answers_like_the_function() -> None:
    elems = frozenset({"fd00::/8", "10.0.0.1/32"})
    assert nft_render.interval_families("ag_x", elems) == frozenset({6})


def test_rendered_lines_are_weighed() -> None:
    nft_canon.rendered_rule.cache_clear()
    long = "ip saddr { " + ", ".join(f"10.0.{i // 250}.{i % 250}" for i in range(5000)) + " } accept"
    assert nft_canon.rendered_rule(long).startswith("ip saddr { 10.0.0.0, 10.0.0.1, 10.0.0.10")
    info = nft_canon.rendered_rule.cache_info()
    assert info.currsize == 1 and info.weight > len(long) // 32 and info.weight <= info.budget
