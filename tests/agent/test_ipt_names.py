"""ipset and iptables names are digests of limited width: two model ids that would share a
kernel object are refused before anything reaches the kernel, never merged."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from stockade.agent.backends import names
from stockade.agent.backends.iptables import IptablesBackend
from stockade.model import Chain, Direction, NodeModel, Rule


@pytest.fixture
def one_byte_names(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Force 1-byte digests (the cached names are forgotten before and after)."""
    fns: list[Callable[..., str]] = [names.ipset_set, names.ipset_pods, names.ipt_chain]
    for fn in fns:
        fn.cache_clear()  # type: ignore[attr-defined]
    monkeypatch.setattr(names, "_IPT_DIGEST", 1)
    yield
    for fn in fns:
        fn.cache_clear()  # type: ignore[attr-defined]


def colliding(namer: Callable[[str], str], make: Callable[[int], str]) -> tuple[str, str]:
    seen: dict[str, str] = {}
    for i in itertools.count():
        ident = make(i)
        other = seen.setdefault(namer(ident), ident)
        if other != ident:
            return other, ident
    raise AssertionError("unreachable")


def test_names_fit_the_kernel_and_are_wide() -> None:
    sid, cid = "ag_" + "0" * 32, "out_" + "f" * 32
    assert len(names.ipset_set(sid)) <= 31 - 1  # "STK-A6-..." for IPv6 adds one
    assert len(names.ipset_pods(cid)) <= 31 - 2  # "STK-PI6-..." adds two
    assert len(names.ipt_chain(cid)) <= 28
    assert len(names.ipset_set(sid)) - len("STK-A-") == 22  # 88 bits
    names.check_ipt_names([sid, "ag_" + "1" * 32], [cid, "in_" + "e" * 32])  # no collision: no error


def test_forced_set_name_collision_is_refused(one_byte_names: None) -> None:
    a, b = colliding(names.ipset_set, lambda i: f"ag_{i:032x}")
    with pytest.raises(names.NameCollision, match=f"address set {b} and {a} both map to the kernel name"):
        names.check_ipt_names([a, b], [])


def test_forced_chain_name_collision_is_refused_before_the_kernel(one_byte_names: None) -> None:
    a, b = colliding(names.ipt_chain, lambda i: f"in_{i:032x}")
    model = NodeModel(
        "n1",
        chains={a: Chain(Direction.INGRESS, (Rule(None, None),), id=a), b: Chain(Direction.INGRESS, (), id=b)},
        ingress={"10.0.0.1": a, "10.0.0.2": b},
    )
    # No such namespace: reaching the kernel would fail differently (the check comes first).
    backend = IptablesBackend(netns="st-no-such-ns", ipv6=False)
    with pytest.raises(names.NameCollision, match="refusing to apply"):
        backend.apply_snapshot(model)
    assert backend.transactions == 0
