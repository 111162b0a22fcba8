"""The realization clock (`fanout.realization`): one observation per (change, node), the delay
from the brain seeing the change to the node acking it (or a later generation)."""

from __future__ import annotations

from stockade.brain.fanout.realization import BUCKETS, RealizationTimes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_change_is_timed_once_until_its_node_acks_it() -> None:
    clock = Clock()
    rt = RealizationTimes(clock)
    rt.changed("n1", 2, seen=99.0)  # seen a second before it compiled
    clock.now = 100.5
    rt.changed("n1", 3)
    rt.changed("n2", 2)
    clock.now = 101.0
    rt.applied("n1", 2)  # only generation 2 so far
    assert rt.histogram.count == 1 and rt.last == {"n1": 2.0} and rt.pending("n1") == 1
    clock.now = 103.0
    rt.applied("n1", 5)  # a later generation (a snapshot) covers generation 3 too
    assert rt.histogram.count == 2 and rt.last["n1"] == 2.5 and rt.pending("n1") == 0
    rt.applied("n1", 5)  # a repeated ack observes nothing
    assert rt.histogram.count == 2 and rt.histogram.total == 4.5
    assert rt.pending("n2") == 1 and "n2" not in rt.last
    cumulative = dict(rt.histogram.cumulative())
    assert cumulative["2.5"] == 2 and cumulative["1.0"] == 0 and cumulative["+Inf"] == 2
    assert len(cumulative) == len(BUCKETS) + 1


def test_pending_changes_per_node_are_bounded() -> None:
    clock = Clock()
    rt = RealizationTimes(clock, max_pending=4)
    for gen in range(1, 11):  # the agent is away: changes pile up
        clock.now += 1
        rt.changed("n1", gen)
    assert rt.pending("n1") == 4 and rt.untracked == 6
    clock.now = 200.0
    rt.applied("n1", 10)
    # the oldest kept: the longest delays are the ones measured
    assert rt.histogram.count == 4 and max(rt.last.values()) == 200.0 - 104.0
