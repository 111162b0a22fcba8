"""How the lab merges its brains' answers to "is this change enforced everywhere?" (realize.py),
and the names and numbers of its brains (brains.py). Pure functions: no lab needed."""

from __future__ import annotations

import pytest

from stockade.lab import brains
from stockade.lab.realize import merge
from stockade.lab.state import LabState


def test_one_brain_that_knows_every_node_decides() -> None:
    got = merge({"brain": {"realized": False, "pending": ["node-1"]}, "brain2": {"realized": True, "pending": []}})
    assert got["realized"] is True and got["brain"] == "brain2"


def test_each_node_realized_on_the_brain_serving_it() -> None:
    # brain waits for node-2 (served by brain2) and brain2 for node-1 (served by brain).
    got = merge(
        {"brain": {"realized": False, "pending": ["node-2"]}, "brain2": {"realized": False, "pending": ["node-1"]}}
    )
    assert got["realized"] is True and got["merged"] == ["brain", "brain2"]


def test_a_node_pending_everywhere_is_pending() -> None:
    got = merge(
        {
            "brain": {"realized": False, "pending": ["node-2", "node-3"]},
            "brain2": {"realized": False, "pending": ["node-1", "node-3"], "reason": "node node-3 is not ready: x"},
        }
    )
    assert got["realized"] is False and got["pending"] == ["node-3"] and "node-3" in got["reason"]


def test_a_brain_that_has_not_seen_the_writes_realizes_nothing() -> None:
    not_seen = {"realized": False, "reason": "the brain has not seen that version yet"}
    assert merge({"brain": not_seen, "brain2": {"realized": False, "pending": ["node-1"]}})["pending"] == ["node-1"]
    alone = merge({"brain": not_seen})
    assert alone["realized"] is False and "not seen" in alone["reason"]
    assert merge({})["realized"] is False


def test_brain_names_ports_and_count() -> None:
    st = LabState(token="t", prefix="p")
    every = brains.planned(3)
    for i, b in enumerate(every):
        for p in brains.PORTS:
            st.ports[b.key(p)] = 1000 + 10 * i + brains.PORTS.index(p)
    st.brains = [b.describe(st) for b in every]
    assert [b.name for b in brains.of(st)] == ["brain", "brain2", "brain3"]
    assert brains.of(st)[0].key("grpc") == "brain_grpc"  # what a one-brain lab always called it
    assert len({b.identity for b in every}) == 3  # one Lease identity each, or all would lead
    assert brains.agent_brain_flag(st) == "127.0.0.1:1000,127.0.0.1:1010,127.0.0.1:1020"
    with pytest.raises(LookupError):
        brains.find(st, 4)
    for bad in (0, brains.MAX + 1):
        with pytest.raises(ValueError, match="1 to 5"):
            brains.check_count(bad)


def test_served_and_leader_from_metrics() -> None:
    text = (
        "# TYPE stockade_brain_node_agent_connected gauge\n"
        'stockade_brain_node_agent_connected{node="node-2"} 1.0\n'
        'stockade_brain_node_agent_connected{node="node-1"} 0.0\n'
        "# TYPE stockade_brain_leader gauge\n"
        "stockade_brain_leader 1.0\n"
    )
    assert brains.served(text) == (["node-2"], True)
    assert brains.served("") == ([], None)
