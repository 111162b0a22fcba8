"""`nft_ports.PortBook` counts which pod chains jump to each shared port chain, so a delta's
port chains come from the delta alone: it must agree with the scan of the whole resulting model
(`nft_render.port_changes`) on every delta, and its count must be the model's afterwards."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.agent.backends import nft_render
from stockade.agent.backends.nft_ports import PortBook
from stockade.model import Chain, Direction, NodeModel, PortMatch, Protocol, Rule, diff

# A few port lists, most of which take several lines (so they share a port chain), one of which
# does not; chains combine them, so several chains jump to one port chain and a chain to several.
PORTS = [
    (PortMatch(Protocol.TCP, 80), PortMatch(Protocol.UDP, 53)),
    (PortMatch(Protocol.TCP, 8080), PortMatch(Protocol.SCTP, 9)),
    (PortMatch(Protocol.TCP, 443),),
    (PortMatch(Protocol.UDP, 5300, 5310), PortMatch(Protocol.TCP, 22)),
]
rules = st.builds(Rule, st.sampled_from(["s1", "s2"]), st.sampled_from(PORTS))
chains = st.builds(
    lambda d, rs: Chain.of(d, rs), st.sampled_from([Direction.INGRESS, Direction.EGRESS]), st.lists(rules, max_size=3)
)
models = st.lists(chains, max_size=6).map(
    lambda cs: NodeModel("n", sets={"s1": frozenset({"10.0.0.1/32"}), "s2": frozenset()}, chains={c.id: c for c in cs})
)


@settings(max_examples=300, deadline=None)
@given(st.lists(models, min_size=2, max_size=5))
def test_the_book_agrees_with_a_scan_of_the_model(steps: list[NodeModel]) -> None:
    book = PortBook(steps[0].chains)
    for old, new in pairwise(steps):
        delta = diff(old, new)
        held = set(nft_render.port_chains(old.chains.values()))
        assert book.names == held
        create, delete = book.changes(delta)
        want_create, want_delete = nft_render.port_changes(delta, new, held)
        assert (create, delete) == (want_create, want_delete)
        book.apply(delta)
        assert book.names == set(nft_render.port_chains(new.chains.values()))


def test_a_port_chain_goes_with_its_last_user_only() -> None:
    a = Chain.of(Direction.INGRESS, [Rule("s1", PORTS[0])])
    b = Chain.of(Direction.INGRESS, [Rule("s2", PORTS[0]), Rule("s1", PORTS[1])])
    sets = {"s1": frozenset({"10.0.0.1/32"}), "s2": frozenset()}
    both = NodeModel("n", sets=sets, chains={a.id: a, b.id: b})
    only_b = NodeModel("n", sets=sets, chains={b.id: b})
    book = PortBook(both.chains)
    shared = next(iter(nft_render.port_chains([a])))
    assert book.changes(diff(both, only_b)) == ({}, [])  # b still jumps to it
    book.apply(diff(both, only_b))
    none = NodeModel("n", sets=sets)
    create, delete = book.changes(diff(only_b, none))
    assert create == {} and shared in delete and len(delete) == 2
