"""The agent's bounded buffer (pure)."""

from __future__ import annotations

import time

from stockade.agent.reporter.buffer import ReportBuffer

from .data import random_events


def test_sheds_oldest_unsent_and_never_what_was_sent() -> None:
    evs = random_events(30, time.time(), 1, seed=1)
    b = ReportBuffer(10)
    assert b.add(evs[:8]) == 0
    seq, batch = b.next_batch(5) or (0, [])
    assert (seq, batch) == (1, evs[:5])
    assert b.add(evs[8:20]) == 10  # 5 in flight + 15 unsent > 10: the 10 oldest unsent go
    assert len(b) == 10 and b.unsent == 5
    assert b.shed == {"agent_buffer_full": 10}
    assert b.unacked() == [(1, evs[:5])]
    seq, batch = b.next_batch(100) or (0, [])
    assert (seq, batch) == (2, evs[15:20])
    assert b.add(evs[20:23]) == 3  # all in flight: the new ones are shed
    assert b.shed == {"agent_buffer_full": 13}
    assert b.acked(1) == 5 and b.acked(1) == 0
    assert b.acked(2) == 5 and len(b) == 0


def test_shed_counts_travel_even_without_events() -> None:
    b = ReportBuffer(5)
    assert b.next_batch(10) is None
    b.count_shed("agent_nflog_overrun", 4)
    assert b.next_batch(10) == (1, [])
    assert b.next_batch(10) is None
